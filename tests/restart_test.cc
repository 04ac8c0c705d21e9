// Crash-restart test against the real weir_server binary: after SIGKILL, a
// restart on the same data directory must keep every acknowledged send,
// every acknowledged delete and every lease with its deadline and receive
// count. Runs in both durability modes: a process kill loses nothing in
// `async` mode either, since the WAL is written before a call returns.
#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "tests/rpc_helpers.h"
#include "tests/server_process.h"
#include "weir/v1/weir.pb.h"

namespace weir::test {
namespace {

using ::weir::v1::Message;

constexpr char kQueue[] = "restart";
constexpr int kMessages = 10'000;
constexpr int kSendBatch = 100;
constexpr int kLongLeased = 1'000;
constexpr int kDeleted = 2'000;
constexpr int kShortLeased = 1'000;
constexpr int kMaxBatch = 1'000;
constexpr int64_t kShortLeaseMs = 3'000;
constexpr int64_t kLongLeaseMs = 60LL * 60 * 1000;
// How long the short leases may take to come back after the restart.
constexpr absl::Duration kRedeliveryDeadline = absl::Seconds(60);

std::string BodyFor(int index) {
  return absl::StrFormat("message-%05d", index);
}

// What the test knows about every message it sent, by offset.
struct Sent {
  std::map<uint64_t, std::string> body_by_offset;
};

class RestartTest : public ::testing::TestWithParam<std::string> {
 protected:
  // Receives exactly `count` never-delivered messages, leased for
  // `visibility_timeout_ms`. Fails on a repeat or an unknown offset.
  std::vector<Message> LeaseFresh(TestClient& client, const Sent& sent,
                                  int count, int64_t visibility_timeout_ms) {
    std::vector<Message> leased;
    std::set<uint64_t> seen;
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    while (static_cast<int>(leased.size()) < count && absl::Now() < deadline) {
      const int want =
          std::min(kMaxBatch, count - static_cast<int>(leased.size()));
      Reply<weir::v1::ReceiveResponse> received = client.Receive(
          kQueue, want, visibility_timeout_ms, /*wait_time_ms=*/1000);
      EXPECT_TRUE(received.ok()) << Describe(received.status);
      if (!received.ok()) break;
      EXPECT_LE(received.response.messages_size(), want);
      for (const Message& m : received.response.messages()) {
        EXPECT_TRUE(seen.insert(m.offset()).second)
            << "offset " << m.offset() << " delivered twice";
        EXPECT_EQ(m.receive_count(), 1) << "offset " << m.offset();
        auto it = sent.body_by_offset.find(m.offset());
        EXPECT_NE(it, sent.body_by_offset.end())
            << "unknown offset " << m.offset();
        if (it != sent.body_by_offset.end()) {
          EXPECT_EQ(m.body(), it->second) << "offset " << m.offset();
        }
        leased.push_back(m);
      }
    }
    EXPECT_EQ(leased.size(), count);
    return leased;
  }

  // Deletes by receipt in batches; every entry must succeed.
  void DeleteAll(TestClient& client, const std::vector<Message>& messages) {
    for (size_t start = 0; start < messages.size(); start += kMaxBatch) {
      std::vector<std::string> receipts;
      for (size_t i = start; i < std::min(messages.size(), start + kMaxBatch);
           ++i) {
        receipts.push_back(messages[i].receipt_handle());
      }
      Reply<weir::v1::DeleteResponse> deleted = client.Delete(kQueue, receipts);
      ASSERT_TRUE(deleted.ok()) << Describe(deleted.status);
      ASSERT_EQ(deleted.response.results_size(), receipts.size());
      for (int i = 0; i < deleted.response.results_size(); ++i) {
        ASSERT_TRUE(HasEntryCode(deleted.response.results(i), kCodeOk))
            << "receipt " << receipts[i];
      }
    }
  }
};

std::set<uint64_t> OffsetsOf(const std::vector<Message>& messages) {
  std::set<uint64_t> offsets;
  for (const Message& m : messages) offsets.insert(m.offset());
  return offsets;
}

TEST_P(RestartTest, SigkillKeepsSendsDeletesAndLeases) {
  ServerOptions options;
  options.durability = GetParam();
  absl::StatusOr<std::unique_ptr<ServerProcess>> server =
      ServerProcess::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();

  Sent sent;
  std::set<uint64_t> long_leased, deleted, short_leased;
  {
    TestClient client((*server)->Channel());
    Reply<weir::v1::CreateQueueResponse> created = client.CreateQueue(kQueue);
    ASSERT_TRUE(created.ok()) << Describe(created.status);

    // 10,000 distinct bodies, 100 per Send.
    uint64_t last_offset = 0;
    for (int batch = 0; batch < kMessages / kSendBatch; ++batch) {
      std::vector<std::string> bodies;
      for (int i = 0; i < kSendBatch; ++i) {
        bodies.push_back(BodyFor(batch * kSendBatch + i));
      }
      Reply<weir::v1::SendResponse> reply = client.SendBodies(kQueue, bodies);
      ASSERT_TRUE(reply.ok())
          << "batch " << batch << ": " << Describe(reply.status);
      ASSERT_EQ(reply.response.offsets_size(), kSendBatch);
      for (int i = 0; i < kSendBatch; ++i) {
        const uint64_t offset = reply.response.offsets(i);
        if (batch > 0 || i > 0) {
          ASSERT_GT(offset, last_offset) << "offsets must strictly increase";
        }
        last_offset = offset;
        sent.body_by_offset[offset] = bodies[i];
      }
    }
    ASSERT_EQ(sent.body_by_offset.size(), kMessages);

    // The short leases are taken last, so they cannot lapse before the kill
    // while the other phases still receive.
    long_leased =
        OffsetsOf(LeaseFresh(client, sent, kLongLeased, kLongLeaseMs));
    std::vector<Message> to_delete =
        LeaseFresh(client, sent, kDeleted, kLongLeaseMs);
    ASSERT_NO_FATAL_FAILURE(DeleteAll(client, to_delete));
    deleted = OffsetsOf(to_delete);
    short_leased =
        OffsetsOf(LeaseFresh(client, sent, kShortLeased, kShortLeaseMs));
    ASSERT_EQ(long_leased.size(), kLongLeased);
    ASSERT_EQ(deleted.size(), kDeleted);
    ASSERT_EQ(short_leased.size(), kShortLeased);

    Reply<weir::v1::QueueStats> stats = client.GetQueueStats(kQueue);
    ASSERT_TRUE(stats.ok()) << Describe(stats.status);
    EXPECT_EQ(stats.response.in_flight(), kLongLeased + kShortLeased);
  }

  (*server)->Kill();
  absl::Status restarted = (*server)->Restart();
  ASSERT_TRUE(restarted.ok()) << restarted;
  TestClient client((*server)->Channel());

  // Everything available now: the never-delivered messages, plus whichever
  // short leases have lapsed already. Each exactly once.
  std::map<uint64_t, Message> delivered;
  auto take = [&](const Message& m) {
    EXPECT_TRUE(delivered.emplace(m.offset(), m).second)
        << "offset " << m.offset() << " delivered twice after the restart";
    EXPECT_EQ(deleted.count(m.offset()), 0)
        << "deleted offset " << m.offset() << " delivered again";
    EXPECT_EQ(long_leased.count(m.offset()), 0)
        << "offset " << m.offset() << " delivered while its 1 h lease runs";
    auto it = sent.body_by_offset.find(m.offset());
    if (it == sent.body_by_offset.end()) {
      ADD_FAILURE() << "unknown offset " << m.offset();
      return;
    }
    EXPECT_EQ(m.body(), it->second) << "offset " << m.offset();
    const uint32_t expected_count = short_leased.count(m.offset()) ? 2 : 1;
    EXPECT_EQ(m.receive_count(), expected_count) << "offset " << m.offset();
  };
  while (true) {
    Reply<weir::v1::ReceiveResponse> received =
        client.Receive(kQueue, kMaxBatch, kLongLeaseMs, /*wait_time_ms=*/0);
    ASSERT_TRUE(received.ok()) << Describe(received.status);
    if (received.response.messages().empty()) break;
    for (const Message& m : received.response.messages()) take(m);
    ASSERT_LE(delivered.size(), kMessages) << "redelivery does not end";
  }
  int fresh = 0, lapsed = 0;
  for (const auto& [offset, message] : delivered) {
    (short_leased.count(offset) ? lapsed : fresh)++;
  }
  EXPECT_EQ(fresh, kMessages - kDeleted - kLongLeased - kShortLeased)
      << "never-delivered messages that came back after the restart";
  std::cerr << "after the restart: " << fresh << " fresh and " << lapsed
            << " lapsed short leases delivered at once" << std::endl;

  // The short leases come back once their 3 s lapse (long polling, so no
  // fixed sleep), with receive count 2.
  const absl::Time deadline = absl::Now() + kRedeliveryDeadline;
  while (lapsed < kShortLeased && absl::Now() < deadline) {
    Reply<weir::v1::ReceiveResponse> received =
        client.Receive(kQueue, kMaxBatch, kLongLeaseMs, /*wait_time_ms=*/1000);
    ASSERT_TRUE(received.ok()) << Describe(received.status);
    for (const Message& m : received.response.messages()) {
      take(m);
      EXPECT_EQ(short_leased.count(m.offset()), 1)
          << "offset " << m.offset() << " was not a short lease";
      ++lapsed;
    }
  }
  EXPECT_EQ(lapsed, kShortLeased)
      << "short leases redelivered within " << kRedeliveryDeadline;
  std::vector<uint64_t> missing;
  for (uint64_t offset : short_leased) {
    if (delivered.count(offset) == 0) missing.push_back(offset);
  }
  EXPECT_TRUE(missing.empty())
      << missing.size() << " short-leased offsets never came back, e.g. "
      << missing.front();

  // Now everything not deleted is leased; the 1 h leases never came back.
  Reply<weir::v1::ReceiveResponse> rest =
      client.Receive(kQueue, kMaxBatch, kLongLeaseMs, /*wait_time_ms=*/0);
  ASSERT_TRUE(rest.ok()) << Describe(rest.status);
  EXPECT_EQ(rest.response.messages_size(), 0);
  Reply<weir::v1::QueueStats> stats = client.GetQueueStats(kQueue);
  ASSERT_TRUE(stats.ok()) << Describe(stats.status);
  EXPECT_EQ(stats.response.in_flight(), kMessages - kDeleted);
  EXPECT_EQ(stats.response.ready(), 0);
  EXPECT_EQ(stats.response.delayed(), 0);
  EXPECT_GT(stats.response.next_offset(), sent.body_by_offset.rbegin()->first);

  // Offsets are never reused after a crash.
  Reply<weir::v1::SendResponse> after = client.SendBodies(kQueue, {"after"});
  ASSERT_TRUE(after.ok()) << Describe(after.status);
  ASSERT_EQ(after.response.offsets_size(), 1);
  EXPECT_GT(after.response.offsets(0), sent.body_by_offset.rbegin()->first);

  // A clean stop and start keeps the same state: only the new message is
  // ready.
  restarted = (*server)->Restart();
  ASSERT_TRUE(restarted.ok()) << restarted;
  TestClient again((*server)->Channel());
  Reply<weir::v1::QueueStats> stats_again = again.GetQueueStats(kQueue);
  ASSERT_TRUE(stats_again.ok()) << Describe(stats_again.status);
  EXPECT_EQ(stats_again.response.in_flight(), kMessages - kDeleted);
  EXPECT_EQ(stats_again.response.ready(), 1);
  Reply<weir::v1::ReceiveResponse> last =
      again.Receive(kQueue, kMaxBatch, kLongLeaseMs, /*wait_time_ms=*/1000);
  ASSERT_TRUE(last.ok()) << Describe(last.status);
  ASSERT_EQ(last.response.messages_size(), 1);
  EXPECT_EQ(last.response.messages(0).body(), "after");
  EXPECT_EQ(last.response.messages(0).offset(), after.response.offsets(0));

  absl::StatusOr<int> exit_code = (*server)->Stop();
  ASSERT_TRUE(exit_code.ok()) << exit_code.status();
  EXPECT_EQ(*exit_code, 0);
}

// A consumer that deletes each batch in the Receive that leases the next
// (delete_receipt_handles): every delete answered OK survives a SIGKILL,
// and so does the lease of the batch it held at the kill.
TEST_P(RestartTest, SigkillKeepsDeletesCarriedByReceive) {
  ServerOptions options;
  options.durability = GetParam();
  absl::StatusOr<std::unique_ptr<ServerProcess>> server =
      ServerProcess::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();
  constexpr int kBatches = 50;
  constexpr int kPerBatch = 20;
  std::set<uint64_t> deleted;
  {
    TestClient client((*server)->Channel());
    Reply<weir::v1::CreateQueueResponse> created = client.CreateQueue(kQueue);
    ASSERT_TRUE(created.ok()) << Describe(created.status);
    std::vector<std::string> bodies;
    for (int i = 0; i < kBatches * kPerBatch; ++i) {
      bodies.push_back(BodyFor(i));
    }
    for (size_t i = 0; i < bodies.size(); i += kSendBatch) {
      Reply<weir::v1::SendResponse> sent = client.SendBodies(
          kQueue, std::vector<std::string>(bodies.begin() + i,
                                           bodies.begin() + i + kSendBatch));
      ASSERT_TRUE(sent.ok()) << Describe(sent.status);
    }
    std::vector<Message> previous;
    for (int batch = 0; batch < kBatches; ++batch) {
      weir::v1::ReceiveRequest request;
      request.set_queue(kQueue);
      request.set_max_messages(kPerBatch);
      request.set_visibility_timeout_ms(kLongLeaseMs);
      for (const Message& m : previous) {
        request.add_delete_receipt_handles(m.receipt_handle());
      }
      Reply<weir::v1::ReceiveResponse> r = client.Receive(request);
      ASSERT_TRUE(r.ok()) << "batch " << batch << ": " << Describe(r.status);
      ASSERT_EQ(r.response.delete_results_size(), previous.size());
      for (size_t i = 0; i < previous.size(); ++i) {
        ASSERT_TRUE(HasEntryCode(r.response.delete_results(i), kCodeOk));
        deleted.insert(previous[i].offset());
      }
      ASSERT_EQ(r.response.messages_size(), kPerBatch) << "batch " << batch;
      previous.assign(r.response.messages().begin(),
                      r.response.messages().end());
    }
  }
  ASSERT_EQ(deleted.size(), (kBatches - 1) * kPerBatch);

  (*server)->Kill();
  absl::Status restarted = (*server)->Restart();
  ASSERT_TRUE(restarted.ok()) << restarted;
  TestClient client((*server)->Channel());
  Reply<weir::v1::QueueStats> stats = client.GetQueueStats(kQueue);
  ASSERT_TRUE(stats.ok()) << Describe(stats.status);
  EXPECT_EQ(stats.response.deleted_total(), deleted.size());
  EXPECT_EQ(stats.response.in_flight(), kPerBatch);
  EXPECT_EQ(stats.response.ready(), 0);
  Reply<weir::v1::ReceiveResponse> rest =
      client.Receive(kQueue, kMaxBatch, kLongLeaseMs, /*wait_time_ms=*/0);
  ASSERT_TRUE(rest.ok()) << Describe(rest.status);
  EXPECT_EQ(rest.response.messages_size(), 0)
      << "a deleted or held message was delivered again";
}

INSTANTIATE_TEST_SUITE_P(Durability, RestartTest,
                         ::testing::Values("sync", "async"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

}  // namespace
}  // namespace weir::test
