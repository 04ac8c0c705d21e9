// grpc_bench: end-to-end message throughput of a running Weir server, driven
// through direct gRPC calls from many concurrent clients.
//
//   grpc_bench [--server ADDR] [--queue NAME] [--clients N] [--messages N]
//              [--size BYTES] [--batch N] [--phase send|consume|both]
//              [--keep-queue]
//
// Each client is a thread with a connection of its own. The send phase has
// the clients Send until --messages are in the queue; the consume phase has
// them Receive and Delete until as many are gone. Each phase prints a
// markdown table row: messages/s, MB/s of bodies, and per-call latency.

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/random_text.h"
#include "client/channel.h"
#include "grpcpp/grpcpp.h"
#include "weir/v1/weir.grpc.pb.h"

namespace weir {
namespace {

using Clock = std::chrono::steady_clock;

// Deadline of every call.
constexpr absl::Duration kCallTimeout = absl::Seconds(30);
// How long to wait for every client's connection before timing anything.
constexpr absl::Duration kConnectTimeout = absl::Seconds(10);
// Consumers lease for long enough that nothing is redelivered mid-run.
constexpr int64_t kVisibilityTimeoutMs = 60'000;
constexpr int64_t kReceiveWaitMs = 1'000;
// A consumer gives up after this many empty long polls in a row, so a run
// whose queue holds fewer messages than --messages still ends.
constexpr int kMaxEmptyPolls = 3;

struct Config {
  std::string server = kDefaultServerAddress;
  std::string queue;
  int clients = 16;
  int64_t messages = 20'000;
  int64_t size = 256;
  int batch = 1;
  std::string phase = "both";
  bool keep_queue = false;
};

struct PhaseResult {
  std::string phase;
  int64_t messages = 0;
  double seconds = 0;
  // Milliseconds per call (send) or per Receive plus its Delete (consume).
  std::vector<double> latencies_ms;
  // Delete entries the server refused (a lease that had ended).
  int64_t failed_deletes = 0;
};

// Remembers the first failed call and tells every client to stop.
class ErrorLatch {
 public:
  void Set(const grpc::Status& status) {
    absl::MutexLock lock(&mu_);
    if (!failed_.load()) first_ = status;
    failed_.store(true);
  }
  bool failed() const { return failed_.load(std::memory_order_relaxed); }
  grpc::Status first() const {
    absl::MutexLock lock(&mu_);
    return first_;
  }

 private:
  mutable absl::Mutex mu_;
  std::atomic<bool> failed_{false};
  grpc::Status first_ ABSL_GUARDED_BY(mu_);
};

// Per-client state that the client thread alone writes.
struct ClientRecord {
  std::vector<double> latencies_ms;
  // When this client's last successful call ended: a phase ends with its
  // last useful call, not with trailing empty polls.
  Clock::time_point last_done{};
  int64_t failed_deletes = 0;
};

double MillisSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start)
      .count();
}

void SetDeadline(grpc::ClientContext& context) {
  context.set_deadline(absl::ToChronoTime(absl::Now() + kCallTimeout));
}

PhaseResult Summarize(const std::string& phase, int64_t messages,
                      Clock::time_point start,
                      std::vector<ClientRecord>& records) {
  PhaseResult result;
  result.phase = phase;
  result.messages = messages;
  Clock::time_point end = start;
  for (ClientRecord& record : records) {
    end = std::max(end, record.last_done);
    result.failed_deletes += record.failed_deletes;
    result.latencies_ms.insert(result.latencies_ms.end(),
                               record.latencies_ms.begin(),
                               record.latencies_ms.end());
  }
  result.seconds = std::chrono::duration<double>(end - start).count();
  std::sort(result.latencies_ms.begin(), result.latencies_ms.end());
  return result;
}

PhaseResult RunSend(const Config& config,
                    const std::vector<std::unique_ptr<v1::Weir::Stub>>& stubs,
                    ErrorLatch& errors) {
  constexpr size_t kTextSlack = 64 << 10;
  std::atomic<int64_t> claimed{0};
  std::vector<ClientRecord> records(stubs.size());
  const Clock::time_point start = Clock::now();
  std::vector<std::thread> threads;
  for (size_t i = 0; i < stubs.size(); ++i) {
    threads.emplace_back([&, i] {
      const std::string text =
          bench::RandomText(config.size + kTextSlack, i + 1);
      std::mt19937_64 rng(i + 1);
      std::uniform_int_distribution<size_t> offset(0, kTextSlack);
      ClientRecord& record = records[i];
      while (!errors.failed()) {
        const int64_t first = claimed.fetch_add(config.batch);
        if (first >= config.messages) break;
        const int64_t count =
            std::min<int64_t>(config.batch, config.messages - first);
        v1::SendRequest request;
        request.set_queue(config.queue);
        for (int64_t j = 0; j < count; ++j) {
          request.add_entries()->set_body(
              text.substr(offset(rng), config.size));
        }
        v1::SendResponse response;
        grpc::ClientContext context;
        SetDeadline(context);
        const Clock::time_point call_start = Clock::now();
        const grpc::Status status =
            stubs[i]->Send(&context, request, &response);
        if (!status.ok()) {
          errors.Set(status);
          break;
        }
        record.latencies_ms.push_back(MillisSince(call_start));
        record.last_done = Clock::now();
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  return Summarize("send", std::min(claimed.load(), config.messages), start,
                   records);
}

PhaseResult RunConsume(
    const Config& config,
    const std::vector<std::unique_ptr<v1::Weir::Stub>>& stubs,
    ErrorLatch& errors) {
  std::atomic<int64_t> consumed{0};
  std::vector<ClientRecord> records(stubs.size());
  const Clock::time_point start = Clock::now();
  std::vector<std::thread> threads;
  for (size_t i = 0; i < stubs.size(); ++i) {
    threads.emplace_back([&, i] {
      ClientRecord& record = records[i];
      v1::ReceiveRequest receive;
      receive.set_queue(config.queue);
      receive.set_max_messages(config.batch);
      receive.set_visibility_timeout_ms(kVisibilityTimeoutMs);
      receive.set_wait_time_ms(kReceiveWaitMs);
      int empty_polls = 0;
      while (!errors.failed() && consumed.load() < config.messages) {
        v1::ReceiveResponse received;
        grpc::ClientContext receive_context;
        SetDeadline(receive_context);
        const Clock::time_point call_start = Clock::now();
        grpc::Status status =
            stubs[i]->Receive(&receive_context, receive, &received);
        if (!status.ok()) {
          errors.Set(status);
          break;
        }
        if (received.messages_size() == 0) {
          if (++empty_polls >= kMaxEmptyPolls) break;
          continue;
        }
        empty_polls = 0;

        v1::DeleteRequest request;
        request.set_queue(config.queue);
        for (const v1::Message& message : received.messages()) {
          request.add_receipt_handles(message.receipt_handle());
        }
        v1::DeleteResponse response;
        grpc::ClientContext delete_context;
        SetDeadline(delete_context);
        status = stubs[i]->Delete(&delete_context, request, &response);
        if (!status.ok()) {
          errors.Set(status);
          break;
        }
        record.latencies_ms.push_back(MillisSince(call_start));
        record.last_done = Clock::now();
        int64_t deleted = 0;
        for (const v1::EntryResult& result : response.results()) {
          if (result.code() == grpc::StatusCode::OK) ++deleted;
        }
        record.failed_deletes += request.receipt_handles_size() - deleted;
        consumed.fetch_add(deleted);
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  return Summarize("consume", consumed.load(), start, records);
}

// Nearest-rank percentile of sorted values; 0 when there are none.
double Percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  const auto rank =
      static_cast<size_t>(std::ceil(p * static_cast<double>(sorted.size())));
  return sorted[std::clamp<size_t>(rank, 1, sorted.size()) - 1];
}

void PrintTableHeader() {
  std::cout << "| phase | clients | batch | size (B) | messages | seconds "
               "| messages/s | MB/s | p50 (ms) | p99 (ms) |\n"
            << "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
}

void PrintRow(const Config& config, const PhaseResult& result) {
  const double rate =
      result.seconds > 0 ? static_cast<double>(result.messages) / result.seconds
                         : 0;
  std::cout << absl::StrFormat(
      "| %s | %d | %d | %d | %d | %.3f | %.0f | %.2f | %.2f | %.2f |\n",
      result.phase, config.clients, config.batch, config.size, result.messages,
      result.seconds, rate, rate * static_cast<double>(config.size) / 1e6,
      Percentile(result.latencies_ms, 0.50),
      Percentile(result.latencies_ms, 0.99));
  std::cout.flush();
}

int Fail(const grpc::Status& status) {
  std::cerr << "error: " << FormatStatus(status) << "\n";
  return 1;
}

int Main(int argc, char** argv) {
  Config config;
  CLI::App app{
      "Measures messages/s through a running Weir server with many "
      "concurrent gRPC clients.",
      "grpc_bench"};
  app.add_option("--server", config.server, "Server address, HOST:PORT")
      ->envname(kServerEnvVar)
      ->capture_default_str();
  CLI::Option* queue_option = app.add_option(
      "--queue", config.queue,
      "Queue to use, created if missing (default: a new bench-<pid>-<time>)");
  app.add_option("--clients", config.clients, "Concurrent clients (threads)")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  app.add_option("--messages", config.messages, "Messages in total")
      ->check(CLI::Range(int64_t{1}, int64_t{1'000'000'000}))
      ->capture_default_str();
  app.add_option("--size", config.size, "Body size in bytes")
      ->check(CLI::Range(int64_t{0}, int64_t{4} << 20))
      ->capture_default_str();
  app.add_option("--batch", config.batch,
                 "Entries per Send and max_messages per Receive")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  app.add_option("--phase", config.phase, "Which phases to run")
      ->check(CLI::IsMember({"send", "consume", "both"}))
      ->capture_default_str();
  app.add_flag("--keep-queue", config.keep_queue,
               "With --phase both, keep the queue this run created");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }

  const bool send_phase = config.phase != "consume";
  const bool consume_phase = config.phase != "send";
  if (queue_option->count() == 0) {
    if (!send_phase) {
      return Fail(grpc::Status(
          grpc::StatusCode::INVALID_ARGUMENT,
          "--phase consume needs --queue naming a queue that holds messages"));
    }
    config.queue =
        absl::StrCat("bench-", getpid(), "-", absl::ToUnixSeconds(absl::Now()));
  }

  ChannelOptions dedicated;
  dedicated.dedicated_connection = true;
  std::vector<std::unique_ptr<v1::Weir::Stub>> stubs;
  for (int i = 0; i < config.clients; ++i) {
    std::shared_ptr<grpc::Channel> channel =
        CreateChannel(config.server, dedicated);
    if (!channel->WaitForConnected(
            absl::ToChronoTime(absl::Now() + kConnectTimeout))) {
      return Fail(grpc::Status(
          grpc::StatusCode::UNAVAILABLE,
          absl::StrCat("cannot connect to ", config.server, " within ",
                       absl::FormatDuration(kConnectTimeout))));
    }
    stubs.push_back(v1::Weir::NewStub(channel));
  }

  bool created = false;
  if (send_phase) {
    v1::CreateQueueRequest request;
    request.set_name(config.queue);
    v1::CreateQueueResponse response;
    grpc::ClientContext context;
    SetDeadline(context);
    const grpc::Status status =
        stubs[0]->CreateQueue(&context, request, &response);
    // ALREADY_EXISTS: the queue exists with another configuration; use it.
    if (!status.ok() &&
        status.error_code() != grpc::StatusCode::ALREADY_EXISTS) {
      return Fail(status);
    }
    created = status.ok() && response.created();
  }

  std::cerr << "server " << config.server << ", queue " << config.queue
            << (created ? " (created)" : "") << "\n";
  PrintTableHeader();
  ErrorLatch errors;
  if (send_phase) {
    PrintRow(config, RunSend(config, stubs, errors));
    if (errors.failed()) return Fail(errors.first());
  }
  if (consume_phase) {
    const PhaseResult result = RunConsume(config, stubs, errors);
    PrintRow(config, result);
    if (errors.failed()) return Fail(errors.first());
    if (result.failed_deletes > 0) {
      std::cerr << "warning: " << result.failed_deletes
                << " deletes were refused (leases ended)\n";
    }
    if (result.messages < config.messages) {
      std::cerr << "warning: consumed " << result.messages << " of "
                << config.messages << " messages: the queue ran dry\n";
    }
  }
  std::cout << "\nLatency: send = one Send call; consume = one Receive plus "
               "its Delete.\n";

  if (config.phase == "both" && created && !config.keep_queue) {
    v1::DeleteQueueRequest request;
    request.set_name(config.queue);
    v1::DeleteQueueResponse response;
    grpc::ClientContext context;
    SetDeadline(context);
    const grpc::Status status =
        stubs[0]->DeleteQueue(&context, request, &response);
    if (!status.ok()) return Fail(status);
  }
  return 0;
}

}  // namespace
}  // namespace weir

int main(int argc, char** argv) { return weir::Main(argc, argv); }
