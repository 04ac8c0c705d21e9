// recovery_bench: how long Engine::Open takes on a data directory holding
// many stored messages and in-flight leases, and how much memory the engine
// holds resident once open (bodies must stay on disk, not in memory).
//
//   recovery_bench [--messages N] [--leases N] [--size BYTES] [--smoke]
//
// Defaults: 10,000,000 messages of 256 bytes, 100,000 of them leased (a
// 12-hour visibility timeout, so they are still in flight when the data
// directory is opened again). The fill runs with async durability and is
// not timed. The open runs in a fresh process (this binary again, with
// --open DIR), so its resident size is the engine's after recovery and not
// what the fill left in the heap. The page cache is warm from the fill.
// Long: opt-in, never part of ./weir test beyond --smoke.

#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "bench/bench_util.h"
#include "engine/engine.h"

namespace weir {
namespace bench {
namespace {

using SteadyClock = std::chrono::steady_clock;

constexpr char kQueue[] = "recovery";
constexpr int kBatch = 1000;
constexpr absl::Duration kLease = absl::Hours(12);

struct Config {
  int64_t messages = 10'000'000;
  int64_t leases = 100'000;
  int size = 256;
};

double SecondsSince(SteadyClock::time_point start) {
  return std::chrono::duration<double>(SteadyClock::now() - start).count();
}

void Fill(const Config& config, const std::string& dir) {
  EngineOptions options;
  options.durability = Durability::kAsync;
  std::unique_ptr<Engine> engine = OpenEngine(options, dir);
  QueueConfig queue;
  queue.visibility_timeout = kLease;
  CheckOk(engine->CreateQueue(kQueue, queue).status(), "CreateQueue");
  const auto start = SteadyClock::now();
  std::vector<SendEntry> entries = Entries(kBatch, config.size);
  for (int64_t sent = 0; sent < config.messages; sent += kBatch) {
    entries.resize(std::min<int64_t>(kBatch, config.messages - sent));
    // Bodies differ, so that compression does not shrink them away.
    for (size_t i = 0; i < entries.size(); ++i) {
      const std::string stamp = absl::StrCat(sent + i, ":");
      entries[i].body.replace(0, stamp.size(), stamp);
    }
    CheckOk(engine->Send(kQueue, entries).status(), "Send");
  }
  const double send_s = SecondsSince(start);
  ReceiveOptions receive;
  receive.max_messages = kBatch;
  for (int64_t leased = 0; leased < config.leases;) {
    receive.max_messages =
        static_cast<int>(std::min<int64_t>(kBatch, config.leases - leased));
    std::vector<ReceivedMessage> got =
        ValueOrDie(engine->Receive(kQueue, receive), "Receive");
    if (got.empty()) CheckOk(absl::InternalError("queue ran dry"), "Receive");
    leased += got.size();
  }
  std::cout << absl::StrFormat(
      "fill: %d messages of %d B in %.1f s (%.0f/s), %d leased; fill "
      "process RSS %s (peak %s)\n",
      config.messages, config.size, send_s, config.messages / send_s,
      config.leases, HumanBytes(ResidentBytes()),
      HumanBytes(PeakResidentBytes()));
}

// In the fresh process: open, check, report.
int OpenAndReport(const Config& config, const std::string& dir) {
  const uint64_t rss_before = ResidentBytes();
  EngineOptions options;
  options.durability = Durability::kSync;
  options.create_if_missing = false;
  const auto start = SteadyClock::now();
  std::unique_ptr<Engine> engine = OpenEngine(options, dir);
  const double open_s = SecondsSince(start);
  const uint64_t rss_open = ResidentBytes();
  QueueStats stats = ValueOrDie(engine->GetQueueStats(kQueue, ""), "Stats");
  const auto first = SteadyClock::now();
  ReceiveOptions receive;
  std::vector<ReceivedMessage> got =
      ValueOrDie(engine->Receive(kQueue, receive), "Receive");
  const double first_receive_ms = SecondsSince(first) * 1e3;
  const bool counts_ok =
      stats.in_flight == static_cast<uint64_t>(config.leases) &&
      stats.ready + stats.in_flight == static_cast<uint64_t>(config.messages) &&
      got.size() == (config.messages > config.leases ? 1u : 0u);
  std::cout << absl::StrFormat(
      "open: %.2f s for %d messages with %d in flight; first Receive %.2f "
      "ms\n"
      "memory: RSS %s before Open, %s after Open (%s for the engine), peak "
      "%s; data directory %s; bodies %s\n"
      "state after recovery: ready %d, in flight %d (%s)\n",
      open_s, config.messages, config.leases, first_receive_ms,
      HumanBytes(rss_before), HumanBytes(rss_open),
      HumanBytes(rss_open - rss_before), HumanBytes(PeakResidentBytes()),
      HumanBytes(DirectoryBytes(dir)),
      HumanBytes(uint64_t(config.messages) * config.size), stats.ready,
      stats.in_flight, counts_ok ? "as expected" : "WRONG");
  return counts_ok ? 0 : 1;
}

int Main(int argc, char** argv) {
  const bool smoke = TakeSmokeFlag(&argc, argv);
  Config config;
  if (smoke) {
    config.messages = 5'000;
    config.leases = 500;
  }
  std::string open_dir;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool has_value = i + 1 < argc;
    bool valid = true;
    if (arg == "--messages" && has_value) {
      valid = absl::SimpleAtoi(argv[++i], &config.messages);
    } else if (arg == "--leases" && has_value) {
      valid = absl::SimpleAtoi(argv[++i], &config.leases);
    } else if (arg == "--size" && has_value) {
      valid = absl::SimpleAtoi(argv[++i], &config.size);
    } else if (arg == "--open" && has_value) {
      open_dir = argv[++i];
    } else {
      valid = false;
    }
    if (!valid) {
      std::cerr << "usage: recovery_bench [--messages N] [--leases N] "
                   "[--size BYTES] [--open DIR] [--smoke]"
                << std::endl;
      return 64;
    }
  }
  if (config.messages < 0 || config.leases < 0 ||
      config.leases > config.messages || config.size < 32) {
    std::cerr << "recovery_bench: --messages and --leases must not be "
                 "negative, --leases must not exceed --messages, and "
                 "--size must be at least 32"
              << std::endl;
    return 64;
  }
  if (!open_dir.empty()) return OpenAndReport(config, open_dir);

  ScratchDir dir("weir-recovery-bench");
  Fill(config, dir.path());
  std::cout.flush();
  const pid_t child = fork();
  if (child == 0) {
    const std::string messages = absl::StrCat(config.messages);
    const std::string leases = absl::StrCat(config.leases);
    const std::string size = absl::StrCat(config.size);
    execl("/proc/self/exe", "recovery_bench", "--messages", messages.c_str(),
          "--leases", leases.c_str(), "--size", size.c_str(), "--open",
          dir.path().c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  waitpid(child, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

}  // namespace
}  // namespace bench
}  // namespace weir

int main(int argc, char** argv) { return weir::bench::Main(argc, argv); }
