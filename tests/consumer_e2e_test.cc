// weir::Consumer against the real server: every message handled and deleted
// although the handler fails every second call, retries only after their
// back-off, heartbeats that keep a slow handler's lease, a graceful stop,
// and a server killed and restarted under a running consumer.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "client/consumer.h"
#include "gtest/gtest.h"
#include "tests/client_fixture.h"
#include "tests/e2e_fixture.h"
#include "tests/server_process.h"
#include "weir/v1/weir.pb.h"

namespace weir::test {
namespace {

// Generous: the machine may be loaded.
constexpr absl::Duration kWait = absl::Seconds(120);

// What the handler saw, per offset, in call order.
class Recorder {
 public:
  struct Attempt {
    uint32_t receive_count;
    absl::Time start;
    absl::Time end;
    bool ok;
  };

  void Add(uint64_t offset, Attempt attempt) {
    absl::MutexLock lock(&mu_);
    attempts_[offset].push_back(attempt);
    if (attempt.ok) ++succeeded_[offset];
  }

  // True when every offset in [0, count) succeeded at least once.
  bool AllSucceeded(uint64_t count) const {
    absl::MutexLock lock(&mu_);
    for (uint64_t offset = 0; offset < count; ++offset) {
      if (succeeded_.count(offset) == 0) return false;
    }
    return true;
  }

  size_t SucceededCount() const {
    absl::MutexLock lock(&mu_);
    return succeeded_.size();
  }

  std::map<uint64_t, std::vector<Attempt>> attempts() const {
    absl::MutexLock lock(&mu_);
    return attempts_;
  }
  std::map<uint64_t, int> succeeded() const {
    absl::MutexLock lock(&mu_);
    return succeeded_;
  }

 private:
  mutable absl::Mutex mu_;
  std::map<uint64_t, std::vector<Attempt>> attempts_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, int> succeeded_ ABSL_GUARDED_BY(mu_);
};

// Polls `done` until it holds (true), kWait passes or `consumer` gives up
// (false, with a test failure saying why).
template <typename Done>
bool Eventually(const Consumer& consumer, Done done) {
  const absl::Time deadline = absl::Now() + kWait;
  while (!done()) {
    if (consumer.failed()) {
      ADD_FAILURE() << "the consumer gave up: " << consumer.status();
      return false;
    }
    if (absl::Now() >= deadline) {
      ADD_FAILURE() << "not done within " << absl::FormatDuration(kWait);
      return false;
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  return true;
}

// Polls `stats` until `done` holds or kWait passes; returns the last stats.
template <typename Done>
v1::QueueStats WaitForStats(Client& client, const std::string& queue,
                            Done done) {
  const absl::Time deadline = absl::Now() + kWait;
  absl::StatusOr<v1::QueueStats> stats;
  while (true) {
    stats = client.GetQueueStats(queue);
    if (stats.ok() && done(*stats)) return *stats;
    if (absl::Now() >= deadline) break;
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_TRUE(stats.ok()) << stats.status();
  ADD_FAILURE() << "queue stats did not reach the expected state";
  return stats.ok() ? *stats : v1::QueueStats();
}

class ConsumerE2ETest : public ClientLibraryTest {
 protected:
  void SendN(const std::string& queue, int n) {
    std::vector<std::string> bodies;
    for (int i = 0; i < n; ++i) bodies.push_back(absl::StrCat("m", i));
    SendOk(queue, bodies);
  }
};

TEST_F(ConsumerE2ETest, FailingEverySecondCallStillHandlesEachMessageOnce) {
  const std::string queue = NewQueue("consumer-flaky");
  constexpr int kMessages = 40;
  SendN(queue, kMessages);

  ConsumerOptions options{.queue = queue, .max_in_flight = 4};
  options.retry_backoff = {absl::Milliseconds(200), absl::Seconds(2), 2.0};
  Recorder recorder;
  absl::Mutex calls_mu;
  int calls = 0;
  Consumer consumer(weir(), options, [&](const v1::Message& message) {
    const absl::Time start = absl::Now();
    bool fail;
    {
      absl::MutexLock lock(&calls_mu);
      fail = ++calls % 2 == 0;
    }
    recorder.Add(message.offset(),
                 {message.receive_count(), start, absl::Now(), !fail});
    return fail ? absl::UnavailableError("every second call fails")
                : absl::OkStatus();
  });
  ASSERT_TRUE(consumer.Start().ok());
  ASSERT_TRUE(
      Eventually(consumer, [&] { return recorder.AllSucceeded(kMessages); }))
      << "handled " << recorder.SucceededCount() << " of " << kMessages;
  const v1::QueueStats stats =
      WaitForStats(weir(), queue, [](const v1::QueueStats& s) {
        return s.deleted_total() == kMessages && s.in_flight() == 0;
      });
  consumer.Stop();
  EXPECT_TRUE(consumer.status().ok()) << consumer.status();
  EXPECT_EQ(stats.ready(), 0u);
  EXPECT_EQ(stats.delayed(), 0u);

  int failures = 0;
  for (const auto& [offset, attempts] : recorder.attempts()) {
    SCOPED_TRACE(absl::StrCat("offset ", offset));
    ASSERT_FALSE(attempts.empty());
    EXPECT_TRUE(attempts.back().ok) << "the last attempt failed";
    EXPECT_EQ(recorder.succeeded()[offset], 1) << "handled more than once";
    for (size_t i = 0; i + 1 < attempts.size(); ++i) {
      const Recorder::Attempt& failed = attempts[i];
      const Recorder::Attempt& retry = attempts[i + 1];
      EXPECT_FALSE(failed.ok);
      ++failures;
      // Each delivery counts; the retry waits at least its back-off, which
      // grows with the receive count (the server enforces the delay, so
      // this lower bound holds however slow the machine is).
      EXPECT_EQ(retry.receive_count, failed.receive_count + 1);
      const absl::Duration backoff =
          options.retry_backoff.Delay(failed.receive_count);
      EXPECT_GE(retry.start - failed.end, backoff - absl::Milliseconds(5))
          << "retried after " << absl::FormatDuration(retry.start - failed.end)
          << ", back-off " << absl::FormatDuration(backoff);
    }
  }
  EXPECT_GE(failures, kMessages / 2 - 1);
  const ConsumerStats counters = consumer.stats();
  EXPECT_EQ(counters.succeeded, static_cast<uint64_t>(kMessages));
  EXPECT_EQ(counters.failed, static_cast<uint64_t>(failures));
  EXPECT_EQ(counters.deleted, static_cast<uint64_t>(kMessages));
}

TEST_F(ConsumerE2ETest, HeartbeatKeepsTheLeaseOfASlowHandler) {
  const std::string queue = NewQueue("consumer-slow");
  SendN(queue, 1);
  ConsumerOptions options{.queue = queue, .max_in_flight = 2};
  options.visibility_timeout = absl::Seconds(3);  // heartbeat every 1 s
  Recorder recorder;
  Consumer consumer(weir(), options, [&](const v1::Message& message) {
    const absl::Time start = absl::Now();
    // Work that takes more than twice the lease.
    absl::SleepFor(absl::Seconds(7));
    recorder.Add(message.offset(),
                 {message.receive_count(), start, absl::Now(), true});
    return absl::OkStatus();
  });
  ASSERT_TRUE(consumer.Start().ok());
  ASSERT_TRUE(Eventually(consumer, [&] { return recorder.AllSucceeded(1); }));
  WaitForStats(weir(), queue, [](const v1::QueueStats& s) {
    return s.deleted_total() == 1 && s.in_flight() == 0;
  });
  consumer.Stop();
  const ConsumerStats counters = consumer.stats();
  EXPECT_EQ(counters.delivered, 1u) << "the lease lapsed: redelivered";
  EXPECT_EQ(counters.extend_errors, 0u);
  EXPECT_EQ(counters.deleted, 1u);
  EXPECT_EQ(recorder.attempts()[0].size(), 1u);
}

TEST_F(ConsumerE2ETest, StopFinishesWhatItHoldsAndTakesNoMore) {
  const std::string queue = NewQueue("consumer-stop");
  constexpr int kMessages = 10;
  constexpr int kInFlight = 3;
  SendN(queue, kMessages);
  absl::Mutex mu;
  int started = 0;
  bool release = false;
  ConsumerOptions options{.queue = queue, .max_in_flight = kInFlight};
  options.visibility_timeout = absl::Minutes(10);
  Consumer consumer(weir(), options, [&](const v1::Message&) {
    absl::MutexLock lock(&mu);
    ++started;
    mu.Await(absl::Condition(&release));
    return absl::OkStatus();
  });
  ASSERT_TRUE(consumer.Start().ok());
  ASSERT_TRUE(Eventually(consumer, [&] {
    absl::MutexLock lock(&mu);
    return started == kInFlight;
  }));
  // Stop waits for the running handlers; let them finish once it began.
  std::thread stopper([&] { consumer.Stop(); });
  const absl::Time deadline = absl::Now() + kWait;
  while (!consumer.stopping() && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  ASSERT_TRUE(consumer.stopping());
  {
    absl::MutexLock lock(&mu);
    release = true;
  }
  stopper.join();
  {
    absl::MutexLock lock(&mu);
    EXPECT_EQ(started, kInFlight) << "took new messages while stopping";
  }
  absl::StatusOr<v1::QueueStats> stats = weir().GetQueueStats(queue);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->deleted_total(), static_cast<uint64_t>(kInFlight));
  EXPECT_EQ(stats->in_flight(), 0u);
  EXPECT_EQ(stats->ready(), static_cast<uint64_t>(kMessages - kInFlight));
  EXPECT_EQ(consumer.stats().deleted, static_cast<uint64_t>(kInFlight));
}

TEST_F(ConsumerE2ETest, UnknownQueueStopsTheConsumer) {
  Consumer consumer(weir(), ConsumerOptions{.queue = "no-such-queue"},
                    [](const v1::Message&) { return absl::OkStatus(); });
  ASSERT_TRUE(consumer.Start().ok());
  const absl::Time deadline = absl::Now() + kWait;
  while (!consumer.failed() && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(consumer.status().code(), absl::StatusCode::kNotFound)
      << consumer.status();
  consumer.Stop();
}

TEST_F(ConsumerE2ETest, ConsumersInOneGroupShareAndGroupsFanOut) {
  const std::string queue = NewQueue("consumer-groups");
  ASSERT_TRUE(weir().CreateGroup(queue, "audit", EarliestPosition()).ok());
  constexpr int kMessages = 60;
  Recorder first, second, audit;
  auto record = [](Recorder& recorder) {
    return [&recorder](const v1::Message& message) {
      recorder.Add(message.offset(),
                   {message.receive_count(), absl::Now(), absl::Now(), true});
      return absl::OkStatus();
    };
  };
  Consumer a(weir(), {.queue = queue, .max_in_flight = 2}, record(first));
  Consumer b(weir(), {.queue = queue, .max_in_flight = 2}, record(second));
  Consumer c(weir(), {.queue = queue, .group = "audit"}, record(audit));
  ASSERT_TRUE(a.Start().ok());
  ASSERT_TRUE(b.Start().ok());
  ASSERT_TRUE(c.Start().ok());
  SendN(queue, kMessages);
  ASSERT_TRUE(Eventually(c, [&] { return audit.AllSucceeded(kMessages); }));
  ASSERT_TRUE(Eventually(a, [&] {
    return first.SucceededCount() + second.SucceededCount() >= kMessages;
  }));
  EXPECT_FALSE(b.failed()) << b.status();
  a.Stop();
  b.Stop();
  c.Stop();
  std::map<uint64_t, int> both = first.succeeded();
  for (const auto& [offset, n] : second.succeeded()) both[offset] += n;
  EXPECT_EQ(both.size(), static_cast<size_t>(kMessages));
  for (const auto& [offset, n] : both) {
    EXPECT_EQ(n, 1) << "offset " << offset << " handled by both consumers";
  }
}

// A server killed and restarted (on the same port) under a running consumer,
// then restarted cleanly: nothing is lost and the consumer carries on by
// itself.
TEST(ConsumerRestartTest, ServerKillAndRestartLoseNothingAndConsumerCarriesOn) {
  absl::StatusOr<std::unique_ptr<ServerProcess>> server =
      ServerProcess::Start(ServerOptions{.keep_port = true});
  ASSERT_TRUE(server.ok()) << server.status();
  absl::StatusOr<std::unique_ptr<Client>> weir =
      Client::Connect((*server)->address());
  ASSERT_TRUE(weir.ok()) << weir.status();
  const std::string queue = "restart";
  ASSERT_TRUE((*weir)->CreateQueue(queue).ok());
  constexpr int kBefore = 200;
  constexpr int kAfter = 50;
  std::vector<v1::SendEntry> entries(kBefore);
  for (int i = 0; i < kBefore; ++i) entries[i].set_body(absl::StrCat("m", i));
  ASSERT_TRUE((*weir)->Send(queue, entries).ok());

  ConsumerOptions options{.queue = queue, .max_in_flight = 4};
  // Leases the kill leaves behind lapse soon; heartbeats keep live ones.
  options.visibility_timeout = absl::Seconds(3);
  options.reconnect_backoff = {absl::Milliseconds(50), absl::Seconds(1), 2.0};
  absl::Mutex errors_mu;
  std::vector<absl::Status> errors;
  options.on_stream_error = [&](const absl::Status& status) {
    absl::MutexLock lock(&errors_mu);
    errors.push_back(status);
  };
  Recorder recorder;
  Consumer consumer(**weir, options, [&](const v1::Message& message) {
    const absl::Time start = absl::Now();
    absl::SleepFor(absl::Milliseconds(5));  // some work
    recorder.Add(message.offset(),
                 {message.receive_count(), start, absl::Now(), true});
    return absl::OkStatus();
  });
  ASSERT_TRUE(consumer.Start().ok());
  ASSERT_TRUE(
      Eventually(consumer, [&] { return recorder.SucceededCount() >= 50; }));

  const std::string address = (*server)->address();
  (*server)->Kill();
  ASSERT_TRUE((*server)->Restart().ok());
  ASSERT_EQ((*server)->address(), address);
  // Sent to the restarted server: the consumer must pick these up too.
  std::vector<v1::SendEntry> more(kAfter);
  for (int i = 0; i < kAfter; ++i) more[i].set_body(absl::StrCat("n", i));
  absl::StatusOr<std::vector<uint64_t>> offsets = (*weir)->Send(
      queue, more,
      CallOptions{.timeout = absl::Seconds(60), .wait_for_ready = true});
  ASSERT_TRUE(offsets.ok()) << offsets.status();
  EXPECT_EQ(offsets->front(), static_cast<uint64_t>(kBefore));

  ASSERT_TRUE(Eventually(
      consumer, [&] { return recorder.AllSucceeded(kBefore + kAfter); }))
      << "handled " << recorder.SucceededCount() << " of " << kBefore + kAfter;
  const v1::QueueStats stats =
      WaitForStats(**weir, queue, [](const v1::QueueStats& s) {
        return s.ready() == 0 && s.in_flight() == 0 && s.delayed() == 0;
      });
  EXPECT_EQ(stats.next_offset(), static_cast<uint64_t>(kBefore + kAfter));

  // A clean restart (SIGTERM) while the consumer is busy: the server ends
  // the stream with UNAVAILABLE and the consumer comes back again.
  constexpr int kTotal = kBefore + kAfter + 200;
  std::vector<v1::SendEntry> third(kTotal - kBefore - kAfter);
  for (size_t i = 0; i < third.size(); ++i) third[i].set_body("t");
  ASSERT_TRUE((*weir)->Send(queue, third).ok());
  ASSERT_TRUE(Eventually(consumer, [&] {
    return recorder.SucceededCount() >= kBefore + kAfter + 20;
  }));
  ASSERT_TRUE((*server)->Restart().ok());
  ASSERT_TRUE(
      Eventually(consumer, [&] { return recorder.AllSucceeded(kTotal); }))
      << "handled " << recorder.SucceededCount() << " of " << kTotal;
  WaitForStats(**weir, queue, [](const v1::QueueStats& s) {
    return s.ready() == 0 && s.in_flight() == 0 && s.delayed() == 0;
  });
  consumer.Stop();
  EXPECT_TRUE(consumer.status().ok()) << consumer.status();
  EXPECT_GE(consumer.stats().streams_opened, 3u);
  absl::MutexLock lock(&errors_mu);
  EXPECT_GE(errors.size(), 2u) << "the stream broke fewer than twice";
  bool unavailable = false;
  for (const absl::Status& error : errors) {
    unavailable |= error.code() == absl::StatusCode::kUnavailable;
  }
  EXPECT_TRUE(unavailable) << "no UNAVAILABLE among the stream errors";
}

}  // namespace
}  // namespace weir::test
