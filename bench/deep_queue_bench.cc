// deep_queue_bench: does the head of a queue stay fast after millions of
// messages have gone through it and been deleted?
//
//   deep_queue_bench [--messages N] [--samples N] [--ready N] [--smoke]
//
//   bazel run -c opt //bench:deep_queue_bench -- --messages 10000000
//
// Phase A measures the latency of Receive (one message, with a few ready
// messages in the queue; each one received is deleted and replaced) on a
// fresh queue. Phase B pushes N small messages through Send (batches of
// 1000), Receive (batches of 1000) and Delete. Phase C measures Receive
// latency again on the same, now drained, queue, and phase D once more after
// a full compaction. The engine runs with async durability throughout, so
// the latencies are of the engine and RocksDB, not of fsync. The target is
// a p50 after N within 2x of the fresh p50.
//
// --messages defaults to $WEIR_BENCH_MESSAGES, else 10,000,000; --smoke (or
// WEIR_BENCH_SMOKE=1) makes every size tiny.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "bench/bench_util.h"
#include "engine/engine.h"

namespace weir {
namespace bench {
namespace {

using SteadyClock = std::chrono::steady_clock;

constexpr char kQueue[] = "deep";
constexpr size_t kBodyBytes = 64;
constexpr int kBatch = 1000;
// Samples discarded before measuring (warms caches and the allocator).
constexpr int kWarmupSamples = 200;
constexpr absl::Duration kLease = absl::Minutes(10);

struct Config {
  int64_t messages = 10'000'000;
  int samples = 20'000;
  int ready = 10;
};

double SecondsSince(SteadyClock::time_point start) {
  return std::chrono::duration<double>(SteadyClock::now() - start).count();
}
double MicrosSince(SteadyClock::time_point start) {
  return std::chrono::duration<double, std::micro>(SteadyClock::now() - start)
      .count();
}

struct HeadLatency {
  std::string phase;
  int samples = 0;
  double receive_p50 = 0, receive_p99 = 0, receive_max = 0;
  double delete_p50 = 0, delete_p99 = 0;
  double seconds = 0;
};

// Receives and deletes the queue's ready messages until none is left.
void Drain(Engine& engine) {
  ReceiveOptions options;
  options.max_messages = kBatch;
  options.visibility_timeout = kLease;
  while (true) {
    std::vector<ReceivedMessage> got =
        ValueOrDie(engine.Receive(kQueue, options), "Receive");
    if (got.empty()) return;
    CheckAllOk(engine.Delete(kQueue, Receipts(got)), "Delete");
  }
}

// Keeps `config.ready` messages ready and times Receive of one message and
// its Delete, `config.samples` times; sending the replacement is not timed.
// Leaves the queue empty.
HeadLatency MeasureHead(Engine& engine, const Config& config,
                        std::string phase) {
  const SteadyClock::time_point start = SteadyClock::now();
  CheckOk(engine.Send(kQueue, Entries(config.ready, kBodyBytes)).status(),
          "Send");
  const std::vector<SendEntry> one = Entries(1, kBodyBytes);
  ReceiveOptions options;
  options.max_messages = 1;
  options.visibility_timeout = kLease;

  std::vector<double> receive_us;
  std::vector<double> delete_us;
  receive_us.reserve(config.samples);
  delete_us.reserve(config.samples);
  for (int i = 0; i < kWarmupSamples + config.samples; ++i) {
    SteadyClock::time_point t = SteadyClock::now();
    absl::StatusOr<std::vector<ReceivedMessage>> got =
        engine.Receive(kQueue, options);
    const double receive = MicrosSince(t);
    CheckOk(got.status(), "Receive");
    if (got->size() != 1) {
      CheckOk(absl::InternalError(absl::StrCat("got ", got->size(),
                                               " messages, wanted 1")),
              "Receive");
    }
    t = SteadyClock::now();
    CheckAllOk(engine.Delete(kQueue, {(*got)[0].receipt_handle}), "Delete");
    const double del = MicrosSince(t);
    CheckOk(engine.Send(kQueue, one).status(), "Send");
    if (i >= kWarmupSamples) {
      receive_us.push_back(receive);
      delete_us.push_back(del);
    }
  }
  Drain(engine);

  HeadLatency h;
  h.phase = std::move(phase);
  h.samples = config.samples;
  h.receive_p50 = Percentile(receive_us, 50);
  h.receive_p99 = Percentile(receive_us, 99);
  h.receive_max = receive_us.back();  // Sorted by Percentile.
  h.delete_p50 = Percentile(delete_us, 50);
  h.delete_p99 = Percentile(delete_us, 99);
  h.seconds = SecondsSince(start);
  return h;
}

// Sends, receives and deletes `messages` in batches of kBatch; returns the
// rate in messages per second.
double PushThrough(Engine& engine, int64_t messages) {
  const std::vector<SendEntry> chunk = Entries(kBatch, kBodyBytes);
  ReceiveOptions options;
  options.max_messages = kBatch;
  options.visibility_timeout = kLease;
  const SteadyClock::time_point start = SteadyClock::now();
  const int64_t report_every = std::max<int64_t>(messages / 10, kBatch);
  int64_t next_report = report_every;
  int64_t done = 0;
  while (done < messages) {
    const int n = static_cast<int>(std::min<int64_t>(kBatch, messages - done));
    CheckOk(engine.Send(kQueue, absl::MakeConstSpan(chunk.data(), n)).status(),
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
    if (done >= next_report) {
      const double s = SecondsSince(start);
      std::cerr << absl::StrFormat("  %d messages, %.1f s, %.0f msg/s\n", done,
                                   s, done / s);
      next_report += report_every;
    }
  }
  return messages / SecondsSince(start);
}

void PrintStorage(Engine& engine, const std::string& dir,
                  const std::string& when) {
  const StorageStats s = engine.GetStorageStats();
  std::cout << absl::StrFormat("| %-26s | %12s | %12s | %12s |\n", when,
                               HumanBytes(s.sst_bytes),
                               HumanBytes(s.memtable_bytes),
                               HumanBytes(DirectoryBytes(dir)));
}

int Run(const Config& config) {
  std::cout << absl::StrFormat(
      "deep_queue_bench: %d messages of %d B, head samples %d (after %d "
      "warm-up), %d ready, async durability\n\n",
      config.messages, kBodyBytes, config.samples, kWarmupSamples,
      config.ready);
  const SteadyClock::time_point start = SteadyClock::now();
  ScratchDir dir("weir-deep-queue-bench");
  EngineOptions options;
  options.durability = Durability::kAsync;
  std::unique_ptr<Engine> engine = OpenEngine(options, dir.path());
  CheckOk(engine->CreateQueue(kQueue, QueueConfig()).status(), "CreateQueue");

  std::vector<HeadLatency> heads;
  std::cerr << "phase A: head latency on a fresh queue\n";
  heads.push_back(MeasureHead(*engine, config, "A fresh"));

  std::cerr << "phase B: pushing " << config.messages << " messages through\n";
  const SteadyClock::time_point push_start = SteadyClock::now();
  const double push_rate = PushThrough(*engine, config.messages);
  const double push_seconds = SecondsSince(push_start);

  std::cerr << "phase C: head latency after the push\n";
  heads.push_back(MeasureHead(*engine, config,
                              absl::StrCat("C after ", config.messages)));
  const StorageStats before = engine->GetStorageStats();
  const uint64_t dir_before = DirectoryBytes(dir.path());

  std::cerr << "compacting\n";
  const SteadyClock::time_point compact_start = SteadyClock::now();
  CheckOk(engine->CompactStorage(), "CompactStorage");
  const double compact_seconds = SecondsSince(compact_start);

  std::cerr << "phase D: head latency after compaction\n";
  heads.push_back(MeasureHead(*engine, config, "D after compaction"));

  std::cout << "| phase                      | receive p50 us | receive p99 us "
               "| receive max us | delete p50 us | delete p99 us | seconds |\n"
               "|----------------------------|---------------:|---------------"
               ":|---------------:|--------------:|--------------:|--------:|\n";
  for (const HeadLatency& h : heads) {
    std::cout << absl::StrFormat(
        "| %-26s | %14.1f | %14.1f | %14.1f | %13.1f | %13.1f | %7.1f |\n",
        h.phase, h.receive_p50, h.receive_p99, h.receive_max, h.delete_p50,
        h.delete_p99, h.seconds);
  }
  const double ratio = heads[1].receive_p50 / heads[0].receive_p50;
  std::cout << absl::StrFormat(
      "\nreceive p50 after/fresh: %.2fx (p99 %.2fx, after compaction "
      "%.2fx); target <= 2x: %s\n",
      ratio, heads[1].receive_p99 / heads[0].receive_p99,
      heads[2].receive_p50 / heads[0].receive_p50,
      ratio <= 2.0 ? "met" : "NOT met");
  std::cout << absl::StrFormat(
      "push-through: %d messages in %.1f s, %.0f msg/s (send+receive+delete, "
      "batches of %d)\n\n",
      config.messages, push_seconds, push_rate, kBatch);

  std::cout << "| storage                    |     SST      |   memtables  "
               "|  directory   |\n"
               "|----------------------------|-------------:|-------------:"
               "|-------------:|\n";
  std::cout << absl::StrFormat("| %-26s | %12s | %12s | %12s |\n",
                               "before compaction", HumanBytes(before.sst_bytes),
                               HumanBytes(before.memtable_bytes),
                               HumanBytes(dir_before));
  PrintStorage(*engine, dir.path(), "after compaction");
  std::cout << absl::StrFormat("\ncompaction: %.1f s; total elapsed: %.1f s\n",
                               compact_seconds, SecondsSince(start));
  engine.reset();
  return 0;
}

}  // namespace
}  // namespace bench
}  // namespace weir

int main(int argc, char** argv) {
  using weir::bench::Config;
  Config config;
  if (weir::bench::TakeSmokeFlag(&argc, argv)) {
    config.messages = 20'000;
    config.samples = 500;
  } else if (const char* env = std::getenv("WEIR_BENCH_MESSAGES")) {
    if (!absl::SimpleAtoi(env, &config.messages) || config.messages < 1) {
      std::cerr << "WEIR_BENCH_MESSAGES=" << env << " is not a count\n";
      return 2;
    }
  }
  CLI::App app{"Receive latency at the head of a queue, fresh and after "
               "millions of messages went through it."};
  app.add_option("--messages", config.messages,
                 "Messages pushed through between the measurements "
                 "(default $WEIR_BENCH_MESSAGES or 10000000)")
      ->check(CLI::Range(int64_t{1}, int64_t{1'000'000'000}))
      ->capture_default_str();
  app.add_option("--samples", config.samples, "Receives timed per phase")
      ->check(CLI::Range(1, 10'000'000))
      ->capture_default_str();
  app.add_option("--ready", config.ready,
                 "Messages kept ready while measuring the head")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  app.add_flag("--smoke",
               "Tiny sizes, to check that it works (also WEIR_BENCH_SMOKE=1)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  return weir::bench::Run(config);
}
