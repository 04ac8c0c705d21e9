// consume_bench: how fast the engine hands out and retires messages.
//
//   BM_ReceiveDelete  one Receive of `batch` messages and one Delete of their
//                     receipts per iteration, by batch size and durability.
//   BM_Redeliver      receives of messages whose lease lapsed: everything is
//                     leased, a FakeClock moves past the visibility timeout,
//                     and the same messages are received again.
//
//   bazel run -c opt //bench:consume_bench
//   bazel run -c opt //bench:consume_bench -- --smoke
//
// Items are messages consumed (or redelivered). Every benchmark opens an
// engine on a fresh directory and removes it afterwards.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "bench/bench_util.h"
#include "bench/benchmark_main.h"
#include "benchmark/benchmark.h"
#include "engine/clock.h"
#include "engine/engine.h"

namespace weir {
namespace bench {
namespace {

constexpr char kQueue[] = "bench";
constexpr size_t kBodyBytes = 256;
// Messages are sent in batches of this many, outside the timed region.
constexpr int kSendBatch = 1000;
// BM_ReceiveDelete refills the queue with this many messages when it runs
// short.
constexpr int kRefillMessages = 16 * kSendBatch;
// BM_Redeliver cycles this many messages (a multiple of every batch size).
constexpr int kRedeliverMessages = 16 * kSendBatch;
// Long enough that nothing lapses by itself during a run.
constexpr absl::Duration kLongLease = absl::Minutes(10);
constexpr absl::Duration kShortLease = absl::Seconds(30);

using SteadyClock = std::chrono::steady_clock;

Durability DurabilityArg(int64_t arg) {
  return arg == 0 ? Durability::kAsync : Durability::kSync;
}
const char* DurabilityName(int64_t arg) { return arg == 0 ? "async" : "sync"; }

// An engine with one empty queue on a scratch directory; the engine closes
// before its directory is removed.
struct BenchEngine {
  BenchEngine(Durability durability, Clock* clock) {
    EngineOptions options;
    options.durability = durability;
    options.clock = clock;
    engine = OpenEngine(options, dir.path());
    CheckOk(engine->CreateQueue(kQueue, QueueConfig()).status(),
            "CreateQueue");
  }

  void SendMessages(int count) {
    const std::vector<SendEntry> chunk = Entries(kSendBatch, kBodyBytes);
    for (int sent = 0; sent < count; sent += kSendBatch) {
      CheckOk(engine->Send(kQueue, chunk).status(), "Send");
    }
  }

  ScratchDir dir{"weir-consume-bench"};
  std::unique_ptr<Engine> engine;
};

double MicrosSince(SteadyClock::time_point start) {
  return std::chrono::duration<double, std::micro>(SteadyClock::now() - start)
      .count();
}

// Args: batch, durability (0 async, 1 sync). Counters receive_us and
// delete_us are the mean time of one call.
void BM_ReceiveDelete(benchmark::State& state) {
  const int batch = static_cast<int>(state.range(0));
  BenchEngine bench(DurabilityArg(state.range(1)), /*clock=*/nullptr);
  bench.SendMessages(kRefillMessages);
  int64_t ready = kRefillMessages;

  ReceiveOptions options;
  options.max_messages = batch;
  options.visibility_timeout = kLongLease;
  double receive_us = 0;
  double delete_us = 0;
  for (auto _ : state) {
    if (ready < batch) {
      state.PauseTiming();
      bench.SendMessages(kRefillMessages);
      ready += kRefillMessages;
      state.ResumeTiming();
    }
    SteadyClock::time_point start = SteadyClock::now();
    absl::StatusOr<std::vector<ReceivedMessage>> messages =
        bench.engine->Receive(kQueue, options);
    receive_us += MicrosSince(start);
    CheckOk(messages.status(), "Receive");
    if (messages->size() != static_cast<size_t>(batch)) {
      CheckOk(absl::InternalError(absl::StrCat("got ", messages->size(),
                                               " messages, wanted ", batch)),
              "Receive");
    }
    start = SteadyClock::now();
    CheckAllOk(bench.engine->Delete(kQueue, Receipts(*messages)), "Delete");
    delete_us += MicrosSince(start);
    ready -= batch;
  }
  state.SetItemsProcessed(state.iterations() * batch);
  state.SetBytesProcessed(state.iterations() * batch * kBodyBytes);
  state.counters["receive_us"] =
      benchmark::Counter(receive_us, benchmark::Counter::kAvgIterations);
  state.counters["delete_us"] =
      benchmark::Counter(delete_us, benchmark::Counter::kAvgIterations);
  state.SetLabel(DurabilityName(state.range(1)));
}
BENCHMARK(BM_ReceiveDelete)
    ->ArgNames({"batch", "sync"})
    ->ArgsProduct({{1, 16, 128}, {0, 1}})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

// One Receive of `batch` messages whose lease has lapsed per iteration; each
// is checked to be a redelivery. Moving the clock is not timed, expiring the
// lapsed leases is. Args: batch, durability (0 async, 1 sync).
void BM_Redeliver(benchmark::State& state) {
  const int batch = static_cast<int>(state.range(0));
  FakeClock clock;
  BenchEngine bench(DurabilityArg(state.range(1)), &clock);
  bench.SendMessages(kRedeliverMessages);

  ReceiveOptions options;
  options.visibility_timeout = kShortLease;
  // Lease everything once.
  options.max_messages = kSendBatch;
  for (int leased = 0; leased < kRedeliverMessages; leased += kSendBatch) {
    ValueOrDie(bench.engine->Receive(kQueue, options), "Receive");
  }

  options.max_messages = batch;
  int remaining = 0;  // Lapsed leases not yet received again.
  for (auto _ : state) {
    if (remaining == 0) {
      state.PauseTiming();
      clock.Advance(kShortLease + absl::Seconds(1));
      remaining = kRedeliverMessages;
      state.ResumeTiming();
    }
    absl::StatusOr<std::vector<ReceivedMessage>> messages =
        bench.engine->Receive(kQueue, options);
    CheckOk(messages.status(), "Receive");
    if (messages->size() != static_cast<size_t>(batch)) {
      CheckOk(absl::InternalError(absl::StrCat("got ", messages->size(),
                                               " messages, wanted ", batch)),
              "Receive");
    }
    for (const ReceivedMessage& m : *messages) {
      if (m.receive_count < 2) {
        CheckOk(absl::InternalError(absl::StrCat(
                    "offset ", m.offset, " has receive_count ",
                    m.receive_count, ", wanted a redelivery")),
                "Receive");
      }
    }
    remaining -= batch;
  }
  state.SetItemsProcessed(state.iterations() * batch);
  state.SetLabel(DurabilityName(state.range(1)));
}
BENCHMARK(BM_Redeliver)
    ->ArgNames({"batch", "sync"})
    ->ArgsProduct({{1, 16, 128}, {0, 1}})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace bench
}  // namespace weir

int main(int argc, char** argv) {
  return weir::bench::RunBenchmarks(argc, argv, /*smoke_filter=*/nullptr);
}
