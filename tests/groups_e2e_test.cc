// End-to-end tests of consumer groups, replay (Read, SeekGroup) and
// retention over gRPC against the real weir_server binary, including their
// answers to bad input and a restart in the middle.
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "tests/e2e_fixture.h"
#include "tests/rpc_helpers.h"
#include "tests/server_process.h"
#include "weir/v1/weir.pb.h"

namespace weir::test {
namespace {

using ::grpc::StatusCode;

class GroupsE2ETest : public E2ETest {
 protected:
  std::vector<std::string> Bodies(int n, const std::string& prefix = "m") {
    std::vector<std::string> out;
    for (int i = 0; i < n; ++i) out.push_back(absl::StrCat(prefix, i));
    return out;
  }

  weir::v1::Group MakeGroup(const std::string& queue, const std::string& name,
                            const weir::v1::LogPosition& start = Earliest()) {
    Reply<weir::v1::Group> g = client().CreateGroup(queue, name, start);
    EXPECT_TRUE(g.ok()) << Describe(g.status);
    return g.response;
  }

  // Receives and deletes everything ready in `group`; returns the bodies in
  // the order received.
  std::vector<std::string> Drain(const std::string& queue,
                                 const std::string& group) {
    std::vector<std::string> bodies;
    for (;;) {
      Reply<weir::v1::ReceiveResponse> got =
          client().ReceiveFromGroup(queue, group, kMaxBatch, kLongLeaseMs);
      EXPECT_TRUE(got.ok()) << Describe(got.status);
      if (!got.ok() || got.response.messages_size() == 0) return bodies;
      std::vector<std::string> receipts;
      for (const Message& m : got.response.messages()) {
        bodies.push_back(m.body());
        receipts.push_back(m.receipt_handle());
      }
      Reply<weir::v1::DeleteResponse> deleted =
          client().Delete(queue, receipts);
      EXPECT_TRUE(deleted.ok()) << Describe(deleted.status);
      for (const auto& r : deleted.response.results()) {
        EXPECT_TRUE(HasEntryCode(r, kCodeOk));
      }
    }
  }

  std::vector<uint64_t> ReadAll(const std::string& queue,
                                const weir::v1::LogPosition& from) {
    std::vector<uint64_t> offsets;
    weir::v1::LogPosition at = from;
    for (;;) {
      Reply<weir::v1::ReadResponse> r = client().Read(queue, at, 7);
      EXPECT_TRUE(r.ok()) << Describe(r.status);
      if (!r.ok() || r.response.messages_size() == 0) return offsets;
      for (const Message& m : r.response.messages()) {
        offsets.push_back(m.offset());
        EXPECT_TRUE(m.receipt_handle().empty());
      }
      at = AtOffset(r.response.next_offset());
    }
  }
};

TEST_F(GroupsE2ETest, EveryGroupReceivesEveryMessageOnce) {
  const std::string q = NewQueue("fanout");
  MakeGroup(q, "billing");
  MakeGroup(q, "audit");
  SendOk(q, Bodies(250));
  for (const std::string group : {"", "billing", "audit"}) {
    std::vector<std::string> got = Drain(q, group);
    EXPECT_EQ(got.size(), 250u) << "group '" << group << "'";
    EXPECT_EQ(std::set<std::string>(got.begin(), got.end()).size(), 250u);
  }
  Reply<weir::v1::ListGroupsResponse> groups = client().ListGroups(q);
  ASSERT_TRUE(groups.ok()) << Describe(groups.status);
  ASSERT_EQ(groups.response.groups_size(), 3);
  EXPECT_EQ(groups.response.groups(0).name(), "");
  EXPECT_EQ(groups.response.groups(1).name(), "audit");
  EXPECT_EQ(groups.response.groups(2).name(), "billing");
  for (const auto& g : groups.response.groups()) {
    EXPECT_EQ(g.cursor(), 250u);
    EXPECT_EQ(g.delete_floor(), 250u);
    EXPECT_EQ(g.lag(), 0u);
    EXPECT_EQ(g.in_flight(), 0u);
  }
}

TEST_F(GroupsE2ETest, GroupsStartWhereTold) {
  const std::string q = NewQueue("start");
  SendOk(q, Bodies(5, "old"));
  const int64_t between = NowUnixMs();
  // Enqueue times are in milliseconds here: make sure the next ones are later.
  while (NowUnixMs() <= between) absl::SleepFor(absl::Milliseconds(1));
  SendOk(q, Bodies(3, "new"));
  EXPECT_EQ(MakeGroup(q, "from-latest", Latest()).cursor(), 8u);
  EXPECT_EQ(MakeGroup(q, "from-offset", AtOffset(6)).cursor(), 6u);
  EXPECT_EQ(MakeGroup(q, "from-time", AtTime(between + 1)).cursor(), 5u);
  weir::v1::LogPosition unset;
  EXPECT_EQ(MakeGroup(q, "from-unset", unset).cursor(), 0u);

  SendOk(q, {"newest"});
  EXPECT_EQ(Drain(q, "from-latest"), std::vector<std::string>{"newest"});
  EXPECT_EQ(Drain(q, "from-offset"),
            (std::vector<std::string>{"new1", "new2", "newest"}));
  EXPECT_EQ(Drain(q, "from-time").size(), 4u);
  EXPECT_EQ(Drain(q, "from-unset").size(), 9u);
}

TEST_F(GroupsE2ETest, StatsAndListGroupsArePerGroup) {
  const std::string q = NewQueue("stats");
  MakeGroup(q, "slow");
  SendOk(q, Bodies(10));
  Reply<weir::v1::ReceiveResponse> got =
      client().ReceiveFromGroup(q, "slow", 4, kLongLeaseMs);
  ASSERT_TRUE(got.ok());
  ASSERT_EQ(got.response.messages_size(), 4);
  Reply<QueueStats> slow = client().GetQueueStats(q, "slow");
  ASSERT_TRUE(slow.ok()) << Describe(slow.status);
  EXPECT_EQ(slow.response.in_flight(), 4u);
  EXPECT_EQ(slow.response.ready(), 6u);
  EXPECT_EQ(slow.response.sent_total(), 10u);
  EXPECT_EQ(slow.response.received_total(), 4u);
  QueueStats def = Stats(q);
  EXPECT_EQ(def.in_flight(), 0u);
  EXPECT_EQ(def.ready(), 10u);
  Reply<weir::v1::ListGroupsResponse> groups = client().ListGroups(q);
  ASSERT_TRUE(groups.ok());
  ASSERT_EQ(groups.response.groups_size(), 2);
  EXPECT_EQ(groups.response.groups(1).cursor(), 4u);
  EXPECT_EQ(groups.response.groups(1).lag(), 6u);
  EXPECT_EQ(groups.response.groups(1).in_flight(), 4u);
}

TEST_F(GroupsE2ETest, ReadReplaysFromOffsetAndTimeWithoutLeasing) {
  const std::string q = NewQueue("read");
  SendOk(q, Bodies(10, "a"));
  const int64_t between = NowUnixMs();
  while (NowUnixMs() <= between) absl::SleepFor(absl::Milliseconds(1));
  SendOk(q, Bodies(10, "b"));
  std::vector<uint64_t> all = ReadAll(q, Earliest());
  ASSERT_EQ(all.size(), 20u);
  for (uint64_t i = 0; i < all.size(); ++i) EXPECT_EQ(all[i], i);
  EXPECT_EQ(ReadAll(q, AtOffset(15)),
            (std::vector<uint64_t>{15, 16, 17, 18, 19}));
  EXPECT_EQ(ReadAll(q, AtTime(between + 1)).front(), 10u);
  EXPECT_TRUE(ReadAll(q, Latest()).empty());
  // Reading leased nothing.
  EXPECT_EQ(Stats(q).ready(), 20u);

  Reply<weir::v1::ReadResponse> one = client().Read(q, AtOffset(3), 1);
  ASSERT_TRUE(one.ok());
  ASSERT_EQ(one.response.messages_size(), 1);
  EXPECT_EQ(one.response.messages(0).body(), "a3");
  EXPECT_GT(one.response.messages(0).enqueue_time_ms(), 0);
  EXPECT_EQ(one.response.next_offset(), 4u);
  // max_bytes stops early but always returns one message.
  Reply<weir::v1::ReadResponse> small = client().Read(q, Earliest(), 100, 1);
  ASSERT_TRUE(small.ok());
  EXPECT_EQ(small.response.messages_size(), 1);
}

TEST_F(GroupsE2ETest,
       SeekBackRedeliversDeletedMessagesWhileRetentionKeepsThem) {
  QueueConfig keep;
  keep.set_retention_keep_deleted_for_ms(kLongLeaseMs);
  const std::string kept = NewQueue("seek-kept", keep);
  const std::string gone = NewQueue("seek-gone");
  for (const std::string& q : {kept, gone}) {
    SendOk(q, Bodies(20));
    ASSERT_EQ(Drain(q, "").size(), 20u);
    Reply<weir::v1::Group> moved = client().SeekGroup(q, "", AtOffset(0));
    ASSERT_TRUE(moved.ok()) << Describe(moved.status);
  }
  EXPECT_EQ(Drain(kept, "").size(), 20u);
  EXPECT_TRUE(Drain(gone, "").empty());
  EXPECT_TRUE(ReadAll(gone, Earliest()).empty());
}

TEST_F(GroupsE2ETest, SeekVoidsTheGroupsReceipts) {
  const std::string q = NewQueue("seek-fence");
  SendOk(q, Bodies(3));
  std::vector<Message> got = ReceiveCount(q, 3, kLongLeaseMs);
  ASSERT_EQ(got.size(), 3u);
  ASSERT_TRUE(client().SeekGroup(q, "", AtOffset(0)).ok());
  Reply<weir::v1::DeleteResponse> stale =
      client().Delete(q, {got[0].receipt_handle()});
  ASSERT_TRUE(stale.ok());
  EXPECT_TRUE(HasEntryCode(stale.response.results(0), kCodeFailedPrecondition));
  EXPECT_EQ(Drain(q, "").size(), 3u);
}

TEST_F(GroupsE2ETest, MaxAgeRemovesOldMessages) {
  QueueConfig config;
  config.set_retention_max_age_ms(1000);
  const std::string q = NewQueue("max-age", config);
  SendOk(q, Bodies(5));
  ReceiveCount(q, 2, kLongLeaseMs);  // Their state does not matter.
  // The server applies retention about once a second: wait for it.
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  std::vector<uint64_t> left = ReadAll(q, Earliest());
  while (!left.empty() && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(100));
    left = ReadAll(q, Earliest());
  }
  EXPECT_TRUE(left.empty());
  QueueStats stats = Stats(q);
  EXPECT_EQ(stats.ready(), 0u);
  EXPECT_EQ(stats.in_flight(), 0u);
  ExpectNothingReady(q);
  SendOk(q, {"fresh"});
  EXPECT_EQ(Drain(q, ""), std::vector<std::string>{"fresh"});
}

TEST_F(GroupsE2ETest, BadInputGetsTheRightCode) {
  const std::string q = NewQueue("groups-bad");
  SendOk(q, Bodies(3));
  MakeGroup(q, "g");
  EXPECT_TRUE(HasCode(client().CreateGroup(q, "g", Earliest()).status,
                      StatusCode::ALREADY_EXISTS));
  EXPECT_TRUE(HasCode(client().CreateGroup(q, "bad name!", Earliest()).status,
                      StatusCode::INVALID_ARGUMENT));
  EXPECT_TRUE(HasCode(client().CreateGroup(q, "", Earliest()).status,
                      StatusCode::INVALID_ARGUMENT));
  EXPECT_TRUE(
      HasCode(client().CreateGroup(q, std::string(81, 'g'), Earliest()).status,
              StatusCode::INVALID_ARGUMENT));
  EXPECT_TRUE(HasCode(client().CreateGroup(q, "past", AtOffset(4)).status,
                      StatusCode::INVALID_ARGUMENT));
  EXPECT_TRUE(HasCode(
      client().CreateGroup(q, "future", AtTime(NowUnixMs() + 3'600'000)).status,
      StatusCode::INVALID_ARGUMENT));
  EXPECT_TRUE(
      HasCode(client().CreateGroup("no-such-queue", "g", Earliest()).status,
              StatusCode::NOT_FOUND));
  EXPECT_TRUE(HasCode(client().SeekGroup(q, "g", AtOffset(99)).status,
                      StatusCode::INVALID_ARGUMENT));
  EXPECT_TRUE(HasCode(
      client().SeekGroup(q, "g", AtTime(NowUnixMs() + 3'600'000)).status,
      StatusCode::INVALID_ARGUMENT));
  EXPECT_TRUE(HasCode(client().SeekGroup(q, "nope", Earliest()).status,
                      StatusCode::NOT_FOUND));
  EXPECT_TRUE(HasCode(client().DeleteGroup(q, "").status,
                      StatusCode::FAILED_PRECONDITION));
  EXPECT_TRUE(
      HasCode(client().DeleteGroup(q, "nope").status, StatusCode::NOT_FOUND));
  EXPECT_TRUE(HasCode(client().ReceiveFromGroup(q, "nope", 1, 1000).status,
                      StatusCode::NOT_FOUND));
  EXPECT_TRUE(
      HasCode(client().GetQueueStats(q, "nope").status, StatusCode::NOT_FOUND));
  EXPECT_TRUE(HasCode(client().ListGroups("no-such-queue").status,
                      StatusCode::NOT_FOUND));
  EXPECT_TRUE(HasCode(client().Read(q, AtOffset(4)).status,
                      StatusCode::INVALID_ARGUMENT));
  EXPECT_TRUE(HasCode(client().Read(q, Earliest(), 1001).status,
                      StatusCode::INVALID_ARGUMENT));
  EXPECT_TRUE(HasCode(client().Read(q, Earliest(), -1).status,
                      StatusCode::INVALID_ARGUMENT));
  EXPECT_TRUE(HasCode(client().Read(q, Earliest(), 10, -1).status,
                      StatusCode::INVALID_ARGUMENT));
  EXPECT_TRUE(HasCode(client().Read(q, Earliest(), 10, 9 << 20).status,
                      StatusCode::INVALID_ARGUMENT));
  EXPECT_TRUE(HasCode(client().Read("no-such-queue", Earliest()).status,
                      StatusCode::NOT_FOUND));
  // Nothing of the above changed the group.
  Reply<weir::v1::ListGroupsResponse> groups = client().ListGroups(q);
  ASSERT_TRUE(groups.ok());
  ASSERT_EQ(groups.response.groups_size(), 2);
  EXPECT_EQ(groups.response.groups(1).cursor(), 0u);
  EXPECT_EQ(Drain(q, "g").size(), 3u);
  ASSERT_TRUE(client().DeleteGroup(q, "g").ok());
  EXPECT_TRUE(HasCode(client().ReceiveFromGroup(q, "g", 1, 1000).status,
                      StatusCode::NOT_FOUND));
}

// A server of its own, killed with SIGKILL in the middle: every group's
// cursor, leases and deletions survive.
TEST(GroupsRestartTest, KillKeepsEveryGroupsState) {
  absl::StatusOr<std::unique_ptr<ServerProcess>> server =
      ServerProcess::Start();
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string q = "groups-restart";
  std::map<std::string, std::set<std::string>> leased_before;
  {
    TestClient client((*server)->Channel());
    QueueConfig keep;
    keep.set_retention_keep_deleted_for_ms(kLongLeaseMs);
    ASSERT_TRUE(client.CreateQueue(q, keep).ok());
    ASSERT_TRUE(client.CreateGroup(q, "a", Earliest()).ok());
    ASSERT_TRUE(client.CreateGroup(q, "b", Earliest()).ok());
    std::vector<std::string> bodies;
    for (int i = 0; i < 100; ++i) bodies.push_back(absl::StrCat("m", i));
    ASSERT_TRUE(client.SendBodies(q, bodies).ok());
    // Group a: deletes 30, holds 10 leased. Group b: seeks to 50 after
    // deleting 60. The default group does nothing.
    Reply<weir::v1::ReceiveResponse> a =
        client.ReceiveFromGroup(q, "a", 40, kLongLeaseMs);
    ASSERT_TRUE(a.ok());
    ASSERT_EQ(a.response.messages_size(), 40);
    std::vector<std::string> receipts;
    for (int i = 0; i < 30; ++i) {
      receipts.push_back(a.response.messages(i).receipt_handle());
    }
    for (int i = 30; i < 40; ++i) {
      leased_before["a"].insert(a.response.messages(i).body());
    }
    ASSERT_TRUE(client.Delete(q, receipts).ok());
    Reply<weir::v1::ReceiveResponse> b =
        client.ReceiveFromGroup(q, "b", 60, kLongLeaseMs);
    ASSERT_TRUE(b.ok());
    receipts.clear();
    for (const Message& m : b.response.messages()) {
      receipts.push_back(m.receipt_handle());
    }
    ASSERT_TRUE(client.Delete(q, receipts).ok());
    ASSERT_TRUE(client.SeekGroup(q, "b", AtOffset(50)).ok());
  }
  (*server)->Kill();
  ASSERT_TRUE((*server)->Restart().ok());
  TestClient client((*server)->Channel());
  Reply<weir::v1::ListGroupsResponse> groups = client.ListGroups(q);
  ASSERT_TRUE(groups.ok()) << Describe(groups.status);
  ASSERT_EQ(groups.response.groups_size(), 3);
  EXPECT_EQ(groups.response.groups(1).name(), "a");
  EXPECT_EQ(groups.response.groups(1).delete_floor(), 30u);
  EXPECT_EQ(groups.response.groups(1).in_flight(), 10u);
  EXPECT_EQ(groups.response.groups(2).name(), "b");
  EXPECT_EQ(groups.response.groups(2).cursor(), 50u);

  // Group a gets the 60 it never received; its 10 leases stay invisible.
  std::set<std::string> a_rest;
  for (;;) {
    Reply<weir::v1::ReceiveResponse> got =
        client.ReceiveFromGroup(q, "a", kMaxBatch, kLongLeaseMs);
    ASSERT_TRUE(got.ok());
    if (got.response.messages_size() == 0) break;
    for (const Message& m : got.response.messages()) {
      EXPECT_EQ(leased_before["a"].count(m.body()), 0u) << m.body();
      EXPECT_TRUE(a_rest.insert(m.body()).second) << m.body();
    }
  }
  EXPECT_EQ(a_rest.size(), 60u);
  Reply<weir::v1::ReceiveResponse> b =
      client.ReceiveFromGroup(q, "b", kMaxBatch, kLongLeaseMs);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b.response.messages_size(), 50);
  Reply<weir::v1::ReceiveResponse> d =
      client.ReceiveFromGroup(q, "", kMaxBatch, kLongLeaseMs);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d.response.messages_size(), 100);
}

}  // namespace
}  // namespace weir::test
