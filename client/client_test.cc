// Unit tests of the client library that need no server: status mapping,
// back-off arithmetic, option checks, and errors of an unreachable server.
#include "client/client.h"

#include <cstdint>
#include <future>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "client/consumer.h"
#include "client/producer.h"
#include "gtest/gtest.h"

namespace weir {
namespace {

// Nothing listens here (port 1 on loopback is reserved and unused).
constexpr char kNowhere[] = "127.0.0.1:1";

TEST(FromGrpcStatus, KeepsCodeAndMessage) {
  const absl::Status status = FromGrpcStatus(
      grpc::Status(grpc::StatusCode::NOT_FOUND, "queue \"x\" does not exist"));
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(status.message(), "queue \"x\" does not exist");
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK).ok());
}

TEST(FromEntryResult, KeepsCodeAndMessage) {
  v1::EntryResult result;
  result.set_code(9);
  result.set_message("lease ended");
  const absl::Status status = FromEntryResult(result);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(status.message(), "lease ended");
  EXPECT_TRUE(FromEntryResult(v1::EntryResult()).ok());
}

TEST(Positions, SetTheirCase) {
  EXPECT_TRUE(EarliestPosition().earliest());
  EXPECT_TRUE(LatestPosition().latest());
  EXPECT_EQ(OffsetPosition(42).offset(), 42u);
  EXPECT_EQ(TimePosition(absl::FromUnixMillis(1234)).time_ms(), 1234);
}

TEST(Backoff, GrowsByTheMultiplierUpToTheMaximum) {
  const Backoff backoff{absl::Milliseconds(100), absl::Seconds(1), 2.0};
  EXPECT_EQ(backoff.Delay(0), absl::Milliseconds(100));
  EXPECT_EQ(backoff.Delay(1), absl::Milliseconds(100));
  EXPECT_EQ(backoff.Delay(2), absl::Milliseconds(200));
  EXPECT_EQ(backoff.Delay(3), absl::Milliseconds(400));
  EXPECT_EQ(backoff.Delay(4), absl::Milliseconds(800));
  EXPECT_EQ(backoff.Delay(5), absl::Seconds(1));
  EXPECT_EQ(backoff.Delay(1000), absl::Seconds(1));
}

TEST(Backoff, MultiplierBelowOneIsConstant) {
  const Backoff backoff{absl::Milliseconds(50), absl::Seconds(1), 0.5};
  EXPECT_EQ(backoff.Delay(7), absl::Milliseconds(50));
}

TEST(ClientConnect, MissingTlsFilesAreReported) {
  ClientOptions options;
  options.tls = TlsOptions{};
  options.tls->root_certs_path = "/nonexistent/roots.pem";
  absl::StatusOr<std::unique_ptr<Client>> client =
      Client::Connect(kNowhere, options);
  EXPECT_EQ(client.status().code(), absl::StatusCode::kNotFound)
      << client.status();

  options.tls = TlsOptions{};
  options.tls->client_cert_path = "/nonexistent/cert.pem";
  client = Client::Connect(kNowhere, options);
  EXPECT_EQ(client.status().code(), absl::StatusCode::kInvalidArgument)
      << client.status();
}

TEST(ClientConnect, TlsWithDefaultRootsConnectsLazily) {
  ClientOptions options;
  options.tls = TlsOptions{};
  EXPECT_TRUE(Client::Connect(kNowhere, options).ok());
}

TEST(Client, UnreachableServerIsUnavailable) {
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(kNowhere);
  ASSERT_TRUE(client.ok()) << client.status();
  absl::StatusOr<v1::QueueStats> stats = (*client)->GetQueueStats(
      "orders", "", CallOptions{.timeout = absl::Seconds(20)});
  EXPECT_EQ(stats.status().code(), absl::StatusCode::kUnavailable)
      << stats.status();
}

TEST(Producer, ReportsTheErrorToEveryMessage) {
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(kNowhere);
  ASSERT_TRUE(client.ok()) << client.status();
  ProducerOptions options;
  options.queue = "orders";
  options.max_batch_messages = 2;
  Producer producer(**client, options);
  std::vector<std::future<absl::StatusOr<uint64_t>>> results;
  for (int i = 0; i < 5; ++i) {
    v1::SendEntry entry;
    entry.set_body("m");
    results.push_back(producer.Send(entry));
  }
  producer.Flush();
  for (auto& result : results) {
    ASSERT_EQ(result.wait_for(std::chrono::seconds(0)),
              std::future_status::ready);
    EXPECT_EQ(result.get().status().code(), absl::StatusCode::kUnavailable);
  }
}

TEST(Producer, SendAfterCloseFails) {
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(kNowhere);
  ASSERT_TRUE(client.ok()) << client.status();
  Producer producer(**client, ProducerOptions{.queue = "orders"});
  producer.Close();
  producer.Close();
  EXPECT_EQ(producer.Send(v1::SendEntry()).get().status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(Producer, NonBlockingProducerRefusesWhenFull) {
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(kNowhere);
  ASSERT_TRUE(client.ok()) << client.status();
  ProducerOptions options;
  options.queue = "orders";
  options.max_pending_messages = 1;
  options.block_when_full = false;
  // Long enough that the first message is still pending at the second Send.
  options.linger = absl::Hours(1);
  Producer producer(**client, options);
  std::future<absl::StatusOr<uint64_t>> first = producer.Send(v1::SendEntry());
  std::future<absl::StatusOr<uint64_t>> second = producer.Send(v1::SendEntry());
  EXPECT_EQ(second.get().status().code(), absl::StatusCode::kResourceExhausted);
  producer.Close();
  EXPECT_EQ(first.get().status().code(), absl::StatusCode::kUnavailable);
}

TEST(Consumer, StartChecksItsOptions) {
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(kNowhere);
  ASSERT_TRUE(client.ok()) << client.status();
  auto handler = [](const v1::Message&) { return absl::OkStatus(); };
  for (const ConsumerOptions& options : {
           ConsumerOptions{.queue = "q", .max_in_flight = 0},
           ConsumerOptions{.queue = "q", .max_in_flight = 1001},
           ConsumerOptions{.queue = "q",
           .visibility_timeout = absl::ZeroDuration()},
           ConsumerOptions{.queue = "q", .heartbeat_fraction = 1.0},
       }) {
    Consumer consumer(**client, options, handler);
    EXPECT_EQ(consumer.Start().code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST(Consumer, StopBeforeStartAndStartAfterStop) {
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(kNowhere);
  ASSERT_TRUE(client.ok()) << client.status();
  Consumer consumer(**client, ConsumerOptions{.queue = "q"},
                    [](const v1::Message&) { return absl::OkStatus(); });
  consumer.Stop();
  EXPECT_EQ(consumer.Start().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(Consumer, UnreachableServerKeepsRetryingUntilStopped) {
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(kNowhere);
  ASSERT_TRUE(client.ok()) << client.status();
  ConsumerOptions options{.queue = "q"};
  options.reconnect_backoff = {absl::Milliseconds(1), absl::Milliseconds(10),
                               2.0};
  absl::Mutex mu;
  int errors = 0;
  options.on_stream_error = [&](const absl::Status& status) {
    EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
    absl::MutexLock lock(&mu);
    ++errors;
  };
  Consumer consumer(**client, options,
                    [](const v1::Message&) { return absl::OkStatus(); });
  ASSERT_TRUE(consumer.Start().ok());
  {
    absl::MutexLock lock(&mu);
    auto retried = [&] { return errors >= 3; };
    EXPECT_TRUE(
        mu.AwaitWithTimeout(absl::Condition(&retried), absl::Seconds(60)));
  }
  consumer.Stop();
  EXPECT_TRUE(consumer.status().ok()) << consumer.status();
  EXPECT_GE(consumer.stats().streams_opened, 3u);
}

}  // namespace
}  // namespace weir
