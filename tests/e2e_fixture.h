// The fixture shared by the end-to-end suites: one real weir_server per test
// suite, a TestClient per test, and helpers that fail the test on unexpected
// errors. Every test works on queues of its own (UniqueName).
#ifndef WEIR_TESTS_E2E_FIXTURE_H_
#define WEIR_TESTS_E2E_FIXTURE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "tests/rpc_helpers.h"
#include "tests/server_process.h"
#include "weir/v1/weir.pb.h"

namespace weir::test {

using ::weir::v1::Message;
using ::weir::v1::QueueConfig;
using ::weir::v1::QueueStats;

inline constexpr int64_t kDefaultVisibilityTimeoutMs = 30'000;
inline constexpr int64_t kDefaultMaxMessageBytes = 256 << 10;
inline constexpr int64_t kMaxVisibilityTimeoutMs = 12LL * 60 * 60 * 1000;
inline constexpr int64_t kMaxMessageBytesLimit = 4 << 20;
inline constexpr int64_t kMaxDelayMs = 15LL * 60 * 1000;
inline constexpr int64_t kMaxWaitTimeMs = 20'000;
inline constexpr int kMaxBatch = 1000;
// Leases that must not lapse while a test runs.
inline constexpr int64_t kLongLeaseMs = 10LL * 60 * 1000;
// Slack allowed between the server's clock readings and the test's.
inline constexpr int64_t kClockSlackMs = 5'000;

class E2ETest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = new absl::StatusOr<std::unique_ptr<ServerProcess>>(
        ServerProcess::Start());
  }

  // Stopping the server last also checks that nothing the tests sent took it
  // down and that it shuts down cleanly on SIGTERM.
  static void TearDownTestSuite() {
    if (server_->ok()) {
      absl::StatusOr<int> exit_code = (**server_)->Stop();
      if (!exit_code.ok()) {
        ADD_FAILURE() << "stopping weir_server: " << exit_code.status();
      } else if (*exit_code != 0) {
        ADD_FAILURE() << "weir_server exited with code " << *exit_code
                      << " on SIGTERM";
      }
    }
    delete server_;
    server_ = nullptr;
  }

  void SetUp() override {
    ASSERT_TRUE(server_->ok()) << server_->status();
    ASSERT_TRUE((**server_)->running()) << "weir_server is not running";
    client_ = std::make_unique<TestClient>((**server_)->Channel());
  }

  ServerProcess& server() { return ***server_; }
  TestClient& client() { return *client_; }

  // A queue name no other test uses.
  static std::string UniqueName(const std::string& hint) {
    static std::atomic<int> counter{0};
    return absl::StrCat(hint, "-", counter.fetch_add(1));
  }

  // Creates a fresh queue and returns its name.
  std::string NewQueue(const std::string& hint,
                       const QueueConfig& config = {}) {
    std::string name = UniqueName(hint);
    Reply<weir::v1::CreateQueueResponse> created =
        client().CreateQueue(name, config);
    EXPECT_TRUE(created.ok())
        << "CreateQueue " << name << ": " << Describe(created.status);
    return name;
  }

  QueueStats Stats(const std::string& queue) {
    Reply<QueueStats> stats = client().GetQueueStats(queue);
    EXPECT_TRUE(stats.ok()) << Describe(stats.status);
    return stats.response;
  }

  // Polls the queue's stats until `done` holds; false after a minute (a
  // broken server fails the test instead of hanging it).
  bool AwaitStats(const std::string& queue,
                  const std::function<bool(const QueueStats&)>& done) {
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    while (absl::Now() < deadline) {
      if (done(Stats(queue))) return true;
      absl::SleepFor(absl::Milliseconds(5));
    }
    return false;
  }

  // Sends `bodies` and returns their offsets.
  std::vector<uint64_t> SendOk(const std::string& queue,
                               const std::vector<std::string>& bodies) {
    Reply<weir::v1::SendResponse> sent = client().SendBodies(queue, bodies);
    EXPECT_TRUE(sent.ok()) << Describe(sent.status);
    return {sent.response.offsets().begin(), sent.response.offsets().end()};
  }

  // Receives until `count` messages have arrived (a server may hand out fewer
  // than max_messages per call), long-polling so that it never spins.
  std::vector<Message> ReceiveCount(const std::string& queue, int count,
                                    int64_t visibility_timeout_ms) {
    std::vector<Message> messages;
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (static_cast<int>(messages.size()) < count &&
           absl::Now() < deadline) {
      Reply<weir::v1::ReceiveResponse> received =
          client().Receive(queue, count - static_cast<int>(messages.size()),
                           visibility_timeout_ms, /*wait_time_ms=*/1000);
      EXPECT_TRUE(received.ok()) << Describe(received.status);
      if (!received.ok()) break;
      for (const Message& m : received.response.messages()) {
        messages.push_back(m);
      }
    }
    EXPECT_EQ(messages.size(), count) << "messages received from " << queue;
    return messages;
  }

  // Receives without waiting; the queue is expected to have nothing ready.
  void ExpectNothingReady(const std::string& queue) {
    Reply<weir::v1::ReceiveResponse> received =
        client().Receive(queue, kMaxBatch, kLongLeaseMs, /*wait_time_ms=*/0);
    ASSERT_TRUE(received.ok()) << Describe(received.status);
    EXPECT_EQ(received.response.messages_size(), 0)
        << "first unexpected message: offset "
        << received.response.messages(0).offset() << " body \""
        << received.response.messages(0).body() << "\"";
  }

 private:
  static inline absl::StatusOr<std::unique_ptr<ServerProcess>>* server_ =
      nullptr;
  std::unique_ptr<TestClient> client_;
};

}  // namespace weir::test

#endif  // WEIR_TESTS_E2E_FIXTURE_H_
