// push_latency: end-to-end latency (send call start -> consumer has the
// message) at a steady, modest rate, with consumers on Subscribe streams
// versus long-polling Receive.
//
//   push_latency [--server ADDR] [--mode subscribe|receive|both]
//                [--rate MSGS_PER_S] [--seconds S] [--consumers N]
//
// One producer thread sends single messages on a fixed schedule (open loop:
// a late send is measured from when it was due, so a stall shows up as
// latency instead of being hidden). Each body carries its due time; the
// consumers, in the same process, read the clock when a message reaches
// them and delete it. Prints a markdown table row per mode.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/channel.h"
#include "grpcpp/grpcpp.h"
#include "weir/v1/weir.grpc.pb.h"

namespace weir {
namespace {

namespace pb = ::weir::v1;
using SteadyClock = std::chrono::steady_clock;

constexpr int64_t kVisibilityTimeoutMs = 60'000;

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             SteadyClock::now().time_since_epoch())
      .count();
}

// Latency samples of one run, in microseconds. Thread-safe.
class Samples {
 public:
  void Add(int64_t due_ns) {
    const double us = (NowNs() - due_ns) / 1e3;
    absl::MutexLock lock(&mu_);
    us_.push_back(us);
  }
  size_t size() {
    absl::MutexLock lock(&mu_);
    return us_.size();
  }
  // The p-th percentile (nearest rank).
  double Percentile(double p) {
    absl::MutexLock lock(&mu_);
    if (us_.empty()) return 0;
    std::sort(us_.begin(), us_.end());
    size_t rank = static_cast<size_t>(p / 100.0 * us_.size());
    return us_[std::min(rank, us_.size() - 1)];
  }

 private:
  absl::Mutex mu_;
  std::vector<double> us_ ABSL_GUARDED_BY(mu_);
};

void Check(const grpc::Status& s, const char* what) {
  if (s.ok()) return;
  std::cerr << "push_latency: " << what << ": " << FormatStatus(s) << std::endl;
  std::exit(1);
}

int64_t DueTime(const pb::Message& m) {
  int64_t due = 0;
  if (!absl::SimpleAtoi(m.body().substr(0, m.body().find(' ')), &due)) {
    std::cerr << "push_latency: a message not sent by this run" << std::endl;
    std::exit(1);
  }
  return due;
}

// Consumes over one Subscribe stream until `stop`, deleting on the stream.
void SubscribeConsumer(std::shared_ptr<grpc::Channel> channel,
                       const std::string& queue, std::atomic<bool>* stop,
                       Samples* samples) {
  auto stub = pb::Weir::NewStub(channel);
  grpc::ClientContext ctx;
  auto stream = stub->Subscribe(&ctx);
  pb::SubscribeRequest start;
  start.mutable_start()->set_queue(queue);
  start.mutable_start()->set_visibility_timeout_ms(kVisibilityTimeoutMs);
  start.set_credit(64);
  stream->Write(start);
  std::thread canceller([&] {
    while (!stop->load()) absl::SleepFor(absl::Milliseconds(50));
    ctx.TryCancel();
  });
  pb::SubscribeResponse resp;
  while (stream->Read(&resp)) {
    if (resp.messages_size() == 0) continue;
    pb::SubscribeRequest ack;
    for (const pb::Message& m : resp.messages()) {
      samples->Add(DueTime(m));
      ack.add_delete_receipt_handles(m.receipt_handle());
    }
    ack.set_credit(resp.messages_size());
    stream->Write(ack);
  }
  stream->Finish();
  canceller.join();
}

// Consumes with long-polling Receive and Delete until `stop`.
void ReceiveConsumer(std::shared_ptr<grpc::Channel> channel,
                     const std::string& queue, std::atomic<bool>* stop,
                     Samples* samples) {
  auto stub = pb::Weir::NewStub(channel);
  while (!stop->load()) {
    pb::ReceiveRequest req;
    req.set_queue(queue);
    req.set_max_messages(10);
    req.set_visibility_timeout_ms(kVisibilityTimeoutMs);
    req.set_wait_time_ms(1000);
    pb::ReceiveResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
    Check(stub->Receive(&ctx, req, &resp), "Receive");
    if (resp.messages_size() == 0) continue;
    pb::DeleteRequest del;
    del.set_queue(queue);
    for (const pb::Message& m : resp.messages()) {
      samples->Add(DueTime(m));
      del.add_receipt_handles(m.receipt_handle());
    }
    pb::DeleteResponse dresp;
    grpc::ClientContext dctx;
    Check(stub->Delete(&dctx, del, &dresp), "Delete");
  }
}

struct Result {
  std::string mode;
  int64_t sent = 0;
  size_t received = 0;
  double p50 = 0, p90 = 0, p99 = 0, max = 0;
};

Result Run(const std::string& server, const std::string& mode, int rate,
           int seconds, int consumers) {
  auto channel = CreateChannel(server);
  auto stub = pb::Weir::NewStub(channel);
  const std::string queue =
      absl::StrCat("push-latency-", mode, "-", absl::ToUnixMicros(absl::Now()));
  {
    pb::CreateQueueRequest req;
    req.set_name(queue);
    pb::CreateQueueResponse resp;
    grpc::ClientContext ctx;
    Check(stub->CreateQueue(&ctx, req, &resp), "CreateQueue");
  }
  Samples samples;
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int i = 0; i < consumers; ++i) {
    // A channel each, as separate consumer processes would have.
    ChannelOptions own_options;
    own_options.dedicated_connection = true;
    auto own = CreateChannel(server, own_options);
    threads.emplace_back(
        mode == "subscribe" ? SubscribeConsumer : ReceiveConsumer, own, queue,
        &stop, &samples);
  }
  // Let every consumer reach its wait before the first send.
  absl::SleepFor(absl::Milliseconds(500));

  const int64_t total = static_cast<int64_t>(rate) * seconds;
  const int64_t interval_ns = 1'000'000'000LL / rate;
  const int64_t begin = NowNs();
  for (int64_t i = 0; i < total; ++i) {
    const int64_t due = begin + i * interval_ns;
    while (NowNs() < due) {
      std::this_thread::sleep_for(std::chrono::nanoseconds(due - NowNs()));
    }
    pb::SendRequest req;
    req.set_queue(queue);
    req.add_entries()->set_body(absl::StrCat(due, " ", std::string(200, 'x')));
    pb::SendResponse resp;
    grpc::ClientContext ctx;
    Check(stub->Send(&ctx, req, &resp), "Send");
  }
  // Wait for the stragglers (bounded), then stop the consumers.
  const absl::Time give_up = absl::Now() + absl::Seconds(30);
  while (samples.size() < static_cast<size_t>(total) && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  stop = true;
  for (auto& t : threads) t.join();
  {
    pb::DeleteQueueRequest req;
    req.set_name(queue);
    pb::DeleteQueueResponse resp;
    grpc::ClientContext ctx;
    stub->DeleteQueue(&ctx, req, &resp);
  }
  Result r;
  r.mode = mode;
  r.sent = total;
  r.received = samples.size();
  r.p50 = samples.Percentile(50);
  r.p90 = samples.Percentile(90);
  r.p99 = samples.Percentile(99);
  r.max = samples.Percentile(100);
  return r;
}

}  // namespace
}  // namespace weir

int main(int argc, char** argv) {
  CLI::App app{"End-to-end latency of Subscribe versus long-polling Receive"};
  std::string server = weir::kDefaultServerAddress;
  std::string mode = "both";
  int rate = 200;
  int seconds = 10;
  int consumers = 4;
  app.add_option("--server", server, "Server address");
  app.add_option("--mode", mode, "subscribe, receive or both")
      ->check(CLI::IsMember({"subscribe", "receive", "both"}));
  app.add_option("--rate", rate, "Messages per second")
      ->check(CLI::Range(1, 100000));
  app.add_option("--seconds", seconds, "Length of each run")
      ->check(CLI::Range(1, 3600));
  app.add_option("--consumers", consumers, "Consumer threads")
      ->check(CLI::Range(1, 256));
  CLI11_PARSE(app, argc, argv);

  std::vector<std::string> modes;
  if (mode == "both") {
    modes = {"subscribe", "receive"};
  } else {
    modes = {mode};
  }
  std::cout << "| consumer | rate (msg/s) | messages | received | p50 | p90 | "
               "p99 | max |\n|---|---:|---:|---:|---:|---:|---:|---:|"
            << std::endl;
  bool lost = false;
  for (const std::string& m : modes) {
    weir::Result r = weir::Run(server, m, rate, seconds, consumers);
    lost |= r.received != static_cast<size_t>(r.sent);
    std::cout << absl::StrFormat(
                     "| %s | %d | %d | %d | %.0f us | %.0f us | %.0f us | "
                     "%.0f us |",
                     m == "subscribe" ? "Subscribe stream"
                                      : "Receive long poll",
                     rate, r.sent, r.received, r.p50, r.p90, r.p99, r.max)
              << std::endl;
  }
  return lost ? 1 : 0;
}
