// send_bench: how fast the engine appends messages, by batch size, message
// size and durability, and how group commit carries many concurrent
// unbatched senders past the disk's fsync rate.
//
//   bazel run -c opt //bench:send_bench
//   bazel run -c opt //bench:send_bench -- --benchmark_filter=Concurrent
//   bazel run -c opt //bench:send_bench -- --smoke
//
// Items are messages, bytes are message bodies. Every benchmark opens an
// engine on a fresh directory and removes it afterwards.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "bench/benchmark_main.h"
#include "benchmark/benchmark.h"
#include "engine/engine.h"

namespace weir {
namespace bench {
namespace {

constexpr char kQueue[] = "bench";

// The durability argument of every benchmark: 0 async, 1 sync.
Durability DurabilityArg(int64_t arg) {
  return arg == 0 ? Durability::kAsync : Durability::kSync;
}
const char* DurabilityName(int64_t arg) { return arg == 0 ? "async" : "sync"; }

// An engine with one empty queue on a scratch directory. Members are
// destroyed in reverse order: the engine closes before its directory goes.
struct BenchEngine {
  explicit BenchEngine(Durability durability) {
    EngineOptions options;
    options.durability = durability;
    engine = OpenEngine(options, dir.path());
    CheckOk(engine->CreateQueue(kQueue, QueueConfig()).status(),
            "CreateQueue");
  }

  ScratchDir dir{"weir-send-bench"};
  std::unique_ptr<Engine> engine;
};

// One Send call of `batch` messages of `bytes` each per iteration.
// Args: batch, bytes, durability (0 async, 1 sync).
void BM_Send(benchmark::State& state) {
  const int batch = static_cast<int>(state.range(0));
  const size_t bytes = static_cast<size_t>(state.range(1));
  BenchEngine bench(DurabilityArg(state.range(2)));
  const std::vector<SendEntry> entries = Entries(batch, bytes);

  for (auto _ : state) {
    absl::StatusOr<std::vector<uint64_t>> offsets =
        bench.engine->Send(kQueue, entries);
    if (!offsets.ok()) CheckOk(offsets.status(), "Send");
  }
  state.SetItemsProcessed(state.iterations() * batch);
  state.SetBytesProcessed(state.iterations() * batch * bytes);
  state.SetLabel(DurabilityName(state.range(2)));
}
BENCHMARK(BM_Send)
    ->ArgNames({"batch", "bytes", "sync"})
    ->ArgsProduct({{1, 16, 128}, {64, 1 << 10, 16 << 10}, {0, 1}})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

// The engine shared by the threads of BM_SendConcurrent; thread 0 creates it
// before the timed loop and destroys it after (Google Benchmark starts and
// ends the loop of all threads together).
BenchEngine* shared_engine = nullptr;

// Every thread sends one message per call: throughput beyond one fsync per
// message in sync mode comes from concurrent writes sharing one WAL sync.
// Args: bytes, durability (0 async, 1 sync).
void BM_SendConcurrent(benchmark::State& state) {
  const size_t bytes = static_cast<size_t>(state.range(0));
  if (state.thread_index() == 0) {
    shared_engine = new BenchEngine(DurabilityArg(state.range(1)));
  }
  const std::vector<SendEntry> entries = Entries(1, bytes);

  for (auto _ : state) {
    absl::StatusOr<std::vector<uint64_t>> offsets =
        shared_engine->engine->Send(kQueue, entries);
    if (!offsets.ok()) CheckOk(offsets.status(), "Send");
  }
  // Summed over threads and divided by wall time: messages/s of the whole.
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * bytes);
  state.SetLabel(DurabilityName(state.range(1)));

  if (state.thread_index() == 0) {
    delete shared_engine;
    shared_engine = nullptr;
  }
}
BENCHMARK(BM_SendConcurrent)
    ->ArgNames({"bytes", "sync"})
    ->ArgsProduct({{64}, {1, 0}})
    ->Threads(1)
    ->Threads(8)
    ->Threads(64)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace bench
}  // namespace weir

int main(int argc, char** argv) {
  return weir::bench::RunBenchmarks(argc, argv, /*smoke_filter=*/nullptr);
}
