// deep_queue_bench: does the head of a queue stay fast, and its storage
// small, after millions of messages have gone through it and been deleted?
//
//   bazel run -c opt //bench:deep_queue_bench -- --messages=10000000
//   bazel run -c opt //bench:deep_queue_bench -- --smoke
//
// Google Benchmark runs these in order, on one engine and one queue:
//
//   BM_HeadReceive/phase:0_fresh       Receive latency on a fresh queue
//   BM_PushThrough                     N messages through Send (batches of
//                                      1000), Receive (1000) and Delete
//   BM_HeadReceive/phase:1_after_push  Receive latency on the drained and
//                                      refilled queue
//   BM_Compact                         a retention pass and a full
//                                      compaction; storage after it, and
//                                      of the fresh queue
//   BM_HeadReceive/phase:2_compacted   Receive latency once more
//
// A head latency sample is one Receive of one message while a few are ready
// (each received message is deleted and replaced, untimed), after an
// untimed warm-up. The benchmark time is the mean Receive latency (manual
// timing); the counters p50_us and p99_us are percentiles. Every sample is
// paired with one of a control: the same on a fresh engine, interleaved;
// p50_vs_fresh is p50 over the control's p50, the target is <= 2. The
// engines run with async durability, so the figures are of the engine and
// RocksDB, not of fsync.
//
// --messages=N defaults to $WEIR_BENCH_MESSAGES, else 10,000,000; --smoke (or
// WEIR_BENCH_SMOKE=1) makes every size tiny.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "bench/bench_util.h"
#include "benchmark/benchmark.h"
#include "engine/engine.h"

namespace weir {
namespace bench {
namespace {

using SteadyClock = std::chrono::steady_clock;

constexpr char kQueue[] = "deep";
constexpr size_t kBodyBytes = 64;
constexpr int kBatch = 1000;
// Messages kept ready while the head is measured.
constexpr int kReady = 10;
constexpr absl::Duration kLease = absl::Minutes(10);

struct Config {
  int64_t messages = 10'000'000;
  int samples = 20'000;
  int warmup = 200;
};

// What the benchmarks share, in the order they run.
struct Run {
  Config config;
  std::unique_ptr<ScratchDir> dir;
  std::unique_ptr<Engine> engine;
  // A second engine with a queue of its own that only the head samples use.
  std::unique_ptr<ScratchDir> control_dir;
  std::unique_ptr<Engine> control;
  uint64_t fresh_sst = 0;  // After compacting the fresh queue.
};

Run* run = nullptr;

double Seconds(SteadyClock::duration d) {
  return std::chrono::duration<double>(d).count();
}

// Receives and deletes the ready messages until none is left.
void Drain(Engine& engine) {
  ReceiveOptions options;
  options.max_messages = kBatch;
  options.visibility_timeout = kLease;
  for (;;) {
    std::vector<ReceivedMessage> got =
        ValueOrDie(engine.Receive(kQueue, options), "Receive");
    if (got.empty()) return;
    CheckAllOk(engine.Delete(kQueue, Receipts(got)), "Delete");
  }
}

void SetStorageCounters(benchmark::State& state, const std::string& prefix) {
  const StorageStats s = run->engine->GetStorageStats();
  state.counters[prefix + "sst_KiB"] = s.sst_bytes / 1024.0;
  state.counters[prefix + "memtable_KiB"] = s.memtable_bytes / 1024.0;
  state.counters[prefix + "dir_KiB"] =
      DirectoryBytes(run->dir->path()) / 1024.0;
}

// Times one Receive of one message on `engine`'s queue, then deletes it and
// sends a replacement (untimed). Returns microseconds.
double HeadSample(Engine& engine, const std::vector<SendEntry>& one) {
  ReceiveOptions options;
  options.max_messages = 1;
  options.visibility_timeout = kLease;
  const SteadyClock::time_point start = SteadyClock::now();
  absl::StatusOr<std::vector<ReceivedMessage>> got =
      engine.Receive(kQueue, options);
  const double us = Seconds(SteadyClock::now() - start) * 1e6;
  CheckOk(got.status(), "Receive");
  if (got->size() != 1) {
    CheckOk(absl::InternalError(
                absl::StrCat("got ", got->size(), " messages, wanted 1")),
            "Receive");
  }
  CheckAllOk(engine.Delete(kQueue, {(*got)[0].receipt_handle}), "Delete");
  CheckOk(engine.Send(kQueue, one).status(), "Send");
  return us;
}

// Args: phase (0 fresh, 1 after the push, 2 after compaction). Each
// iteration takes one sample of the deep queue (the benchmark's time) and
// one of the control queue: a fresh engine's, that nothing else touches, so
// that the ratio of the two is not the machine's drift (a shared VM's speed
// changes by tens of percent over minutes).
void BM_HeadReceive(benchmark::State& state) {
  Engine& engine = *run->engine;
  Engine& control = *run->control;
  const int phase = static_cast<int>(state.range(0));
  if (phase == 0) {
    for (Engine* e : {&engine, &control}) {
      CheckOk(e->CreateQueue(kQueue, QueueConfig()).status(), "CreateQueue");
    }
    CheckOk(engine.CompactStorage(), "CompactStorage");
    run->fresh_sst = engine.GetStorageStats().sst_bytes;
  }
  const std::vector<SendEntry> one = Entries(1, kBodyBytes);
  for (Engine* e : {&engine, &control}) {
    CheckOk(e->Send(kQueue, Entries(kReady, kBodyBytes)).status(), "Send");
    // Warm-up, untimed: caches, the allocator, the first memtable lookups.
    for (int i = 0; i < run->config.warmup; ++i) HeadSample(*e, one);
  }
  std::vector<double> samples_us, control_us;
  samples_us.reserve(state.max_iterations);
  control_us.reserve(state.max_iterations);
  for (auto _ : state) {
    const double us = HeadSample(engine, one);
    state.SetIterationTime(us / 1e6);
    samples_us.push_back(us);
    control_us.push_back(HeadSample(control, one));
  }
  Drain(engine);
  Drain(control);

  const double p50 = Percentile(samples_us, 50);
  const double control_p50 = Percentile(control_us, 50);
  state.counters["p50_us"] = p50;
  state.counters["p99_us"] = Percentile(samples_us, 99);
  state.counters["max_us"] = samples_us.empty() ? 0 : samples_us.back();
  state.counters["control_p50_us"] = control_p50;
  if (control_p50 > 0) state.counters["p50_vs_fresh"] = p50 / control_p50;
}

void BM_PushThrough(benchmark::State& state) {
  Engine& engine = *run->engine;
  const int64_t messages = run->config.messages;
  const std::vector<SendEntry> chunk = Entries(kBatch, kBodyBytes);
  ReceiveOptions options;
  options.max_messages = kBatch;
  options.visibility_timeout = kLease;
  for (auto _ : state) {
    int64_t done = 0;
    while (done < messages) {
      const int n =
          static_cast<int>(std::min<int64_t>(kBatch, messages - done));
      CheckOk(
          engine.Send(kQueue, absl::MakeConstSpan(chunk.data(), n)).status(),
          "Send");
      int received = 0;
      while (received < n) {
        std::vector<ReceivedMessage> got =
            ValueOrDie(engine.Receive(kQueue, options), "Receive");
        if (got.empty()) {
          CheckOk(absl::InternalError("queue empty before the batch was in"),
                  "Receive");
        }
        received += static_cast<int>(got.size());
        CheckAllOk(engine.Delete(kQueue, Receipts(got)), "Delete");
      }
      done += n;
    }
  }
  state.SetItemsProcessed(state.iterations() * messages);
  SetStorageCounters(state, "");
}

void BM_Compact(benchmark::State& state) {
  // Delete floors and range removals are written at most once a second (or
  // every 1024 messages): let that second pass so that the last ones are
  // written too, as the engine's own retention pass would.
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  CheckOk(run->engine->RunRetention(), "RunRetention");
  for (auto _ : state) CheckOk(run->engine->CompactStorage(), "CompactStorage");
  SetStorageCounters(state, "");
  state.counters["fresh_sst_KiB"] = run->fresh_sst / 1024.0;
}

void Register(const Config& config) {
  const int64_t head_iterations = config.samples;
  benchmark::RegisterBenchmark("BM_HeadReceive/phase:0_fresh", BM_HeadReceive)
      ->Arg(0)
      ->Iterations(head_iterations)
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("BM_PushThrough", BM_PushThrough)
      ->Iterations(1)
      ->Unit(benchmark::kSecond);
  benchmark::RegisterBenchmark("BM_HeadReceive/phase:1_after_push",
                               BM_HeadReceive)
      ->Arg(1)
      ->Iterations(head_iterations)
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("BM_Compact", BM_Compact)
      ->Iterations(1)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("BM_HeadReceive/phase:2_compacted",
                               BM_HeadReceive)
      ->Arg(2)
      ->Iterations(head_iterations)
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond);
}

// Takes --messages=N out of argv.
bool TakeMessagesFlag(int* argc, char** argv, int64_t* messages) {
  int out = 1;
  bool ok = true;
  for (int i = 1; i < *argc; ++i) {
    absl::string_view arg = argv[i];
    if (absl::ConsumePrefix(&arg, "--messages=")) {
      ok &= absl::SimpleAtoi(arg, messages) && *messages > 0;
    } else {
      argv[out++] = argv[i];
    }
  }
  *argc = out;
  argv[out] = nullptr;
  return ok;
}

}  // namespace

int Main(int argc, char** argv) {
  Config config;
  if (const char* env = std::getenv("WEIR_BENCH_MESSAGES")) {
    if (!absl::SimpleAtoi(env, &config.messages) || config.messages < 1) {
      std::cerr << "WEIR_BENCH_MESSAGES=" << env << " is not a count\n";
      return 2;
    }
  }
  if (!TakeMessagesFlag(&argc, argv, &config.messages)) {
    std::cerr << "--messages wants a positive count\n";
    return 2;
  }
  if (TakeSmokeFlag(&argc, argv)) {
    config.messages = 20'000;
    config.samples = 500;
    config.warmup = 50;
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;

  Run shared;
  shared.config = config;
  shared.dir = std::make_unique<ScratchDir>("weir-deep-queue-bench");
  EngineOptions options;
  options.durability = Durability::kAsync;
  shared.engine = OpenEngine(options, shared.dir->path());
  shared.control_dir = std::make_unique<ScratchDir>("weir-deep-queue-control");
  shared.control = OpenEngine(options, shared.control_dir->path());
  run = &shared;
  benchmark::AddCustomContext("messages", absl::StrCat(config.messages));
  benchmark::AddCustomContext("body_bytes", absl::StrCat(kBodyBytes));
  benchmark::AddCustomContext("durability", "async");
  Register(config);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  shared.engine.reset();
  shared.control.reset();
  run = nullptr;
  return 0;
}

}  // namespace bench
}  // namespace weir

int main(int argc, char** argv) { return weir::bench::Main(argc, argv); }
