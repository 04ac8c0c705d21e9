// Consumer groups, replay (Read, SeekGroup) and retention.
#include <set>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "engine/engine.h"
#include "engine/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace weir {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::SizeIs;

class GroupsTest : public EngineFixture {
 protected:
  void SendN(const std::string& q, int n, const std::string& prefix = "m") {
    for (int i = 0; i < n; i += 1000) {
      std::vector<std::string> bodies;
      for (int j = i; j < std::min(n, i + 1000); ++j) {
        bodies.push_back(prefix + std::to_string(j));
      }
      SendBodies(q, bodies);
    }
  }

  GroupInfo MakeGroup(const std::string& q, const std::string& g,
                      LogPosition start = LogPosition::Earliest()) {
    auto r = engine_->CreateGroup(q, g, start);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : GroupInfo();
  }

  // Receives and deletes everything ready in `group`; returns the offsets.
  std::vector<uint64_t> Drain(const std::string& q, const std::string& group) {
    std::vector<uint64_t> offsets;
    for (;;) {
      auto msgs = Recv(q, 500, absl::Hours(1), group);
      if (msgs.empty()) return offsets;
      std::vector<std::string> receipts;
      for (auto& m : msgs) {
        offsets.push_back(m.offset);
        receipts.push_back(m.receipt_handle);
      }
      auto r = engine_->Delete(q, receipts);
      EXPECT_TRUE(r.ok());
      for (auto& s : *r) EXPECT_TRUE(s.ok()) << s;
    }
  }

  std::vector<uint64_t> ReadOffsets(const std::string& q, LogPosition from) {
    std::vector<uint64_t> offsets;
    ReadOptions o;
    o.from = from;
    o.max_messages = 1000;
    for (;;) {
      auto r = engine_->Read(q, o);
      EXPECT_TRUE(r.ok()) << r.status();
      if (!r.ok() || r->messages.empty()) return offsets;
      for (auto& m : r->messages) offsets.push_back(m.offset);
      o.from = LogPosition::Offset(r->next_offset);
    }
  }
};

TEST_F(GroupsTest, ThreeGroupsEachReceiveEveryMessageExactlyOnce) {
  Create("q");
  MakeGroup("q", "billing");
  MakeGroup("q", "audit");
  constexpr int kMessages = 10000;
  SendN("q", kMessages);
  for (const std::string group : {"", "billing", "audit"}) {
    // Four competing consumers per group.
    absl::Mutex mu;
    std::multiset<uint64_t> seen;
    std::vector<std::thread> consumers;
    for (int t = 0; t < 4; ++t) {
      consumers.emplace_back([&] {
        ReceiveOptions o;
        o.group = group;
        o.max_messages = 64;
        o.visibility_timeout = absl::Hours(1);
        for (;;) {
          auto msgs = engine_->Receive("q", o);
          ASSERT_TRUE(msgs.ok()) << msgs.status();
          if (msgs->empty()) return;
          std::vector<std::string> receipts;
          {
            absl::MutexLock l(&mu);
            for (auto& m : *msgs) {
              seen.insert(m.offset);
              receipts.push_back(m.receipt_handle);
            }
          }
          auto r = engine_->Delete("q", receipts);
          ASSERT_TRUE(r.ok());
          for (auto& s : *r) ASSERT_TRUE(s.ok()) << s;
        }
      });
    }
    for (auto& c : consumers) c.join();
    EXPECT_EQ(seen.size(), static_cast<size_t>(kMessages)) << group;
    EXPECT_EQ(std::set<uint64_t>(seen.begin(), seen.end()).size(),
              static_cast<size_t>(kMessages))
        << group;
    QueueStats s = Stats("q", group);
    EXPECT_EQ(s.deleted_total, static_cast<uint64_t>(kMessages)) << group;
    EXPECT_EQ(s.ready + s.in_flight, 0u) << group;
  }
}

TEST_F(GroupsTest, GroupsAreIndependent) {
  Create("q");
  MakeGroup("q", "a");
  SendN("q", 3);
  auto d = Recv("q", 10, absl::Hours(1));
  ASSERT_THAT(d, SizeIs(3));
  // The default group's leases do not hide anything from group a.
  auto a = Recv("q", 10, absl::Hours(1), "a");
  ASSERT_THAT(a, SizeIs(3));
  EXPECT_EQ(Stats("q", "").in_flight, 3u);
  EXPECT_EQ(Stats("q", "a").in_flight, 3u);
  // A receipt names its group: deleting in a leaves the default group alone.
  ASSERT_TRUE(DeleteOne("q", a[0].receipt_handle).ok());
  EXPECT_EQ(Stats("q", "a").deleted_total, 1u);
  EXPECT_EQ(Stats("q", "").deleted_total, 0u);
}

TEST_F(GroupsTest, GroupsStartWhereTold) {
  Create("q");
  SendN("q", 5);
  clock_.Advance(absl::Seconds(10));
  const absl::Time t = clock_.Now();
  SendN("q", 5, "late");
  EXPECT_EQ(MakeGroup("q", "all").cursor, 0u);
  EXPECT_EQ(MakeGroup("q", "new", LogPosition::Latest()).cursor, 10u);
  EXPECT_EQ(MakeGroup("q", "from3", LogPosition::Offset(3)).cursor, 3u);
  EXPECT_EQ(MakeGroup("q", "recent", LogPosition::Time(t)).cursor, 5u);
  EXPECT_THAT(Recv("q", 100, absl::Hours(1), "all"), SizeIs(10));
  EXPECT_THAT(Recv("q", 100, absl::Hours(1), "new"), IsEmpty());
  EXPECT_THAT(Recv("q", 100, absl::Hours(1), "from3"), SizeIs(7));
  auto recent = Recv("q", 100, absl::Hours(1), "recent");
  ASSERT_THAT(recent, SizeIs(5));
  EXPECT_EQ(recent[0].body, "late0");
  SendN("q", 1);
  EXPECT_THAT(Recv("q", 100, absl::Hours(1), "new"), SizeIs(1));
}

TEST_F(GroupsTest, ListGroupsShowsCursorLagAndInFlight) {
  Create("q");
  MakeGroup("q", "b");
  MakeGroup("q", "a");
  SendN("q", 10);
  Recv("q", 4, absl::Hours(1), "a");
  auto groups = engine_->ListGroups("q");
  ASSERT_TRUE(groups.ok());
  ASSERT_THAT(*groups, SizeIs(3));
  EXPECT_EQ((*groups)[0].name, "");
  EXPECT_EQ((*groups)[1].name, "a");
  EXPECT_EQ((*groups)[1].cursor, 4u);
  EXPECT_EQ((*groups)[1].lag, 6u);
  EXPECT_EQ((*groups)[1].in_flight, 4u);
  EXPECT_EQ((*groups)[2].name, "b");
  EXPECT_EQ((*groups)[2].lag, 10u);
}

TEST_F(GroupsTest, ReadReturnsRetainedMessagesFromOffsetOrTime) {
  Create("q");
  // More than one time index step within one instant, then another second.
  SendN("q", 2500, "a");
  clock_.Advance(absl::Seconds(1));
  const absl::Time t = clock_.Now();
  SendN("q", 2500, "b");
  std::vector<uint64_t> from_offset =
      ReadOffsets("q", LogPosition::Offset(4000));
  ASSERT_THAT(from_offset, SizeIs(1000));
  EXPECT_EQ(from_offset.front(), 4000u);
  EXPECT_EQ(from_offset.back(), 4999u);
  std::vector<uint64_t> from_time = ReadOffsets("q", LogPosition::Time(t));
  ASSERT_THAT(from_time, SizeIs(2500));
  EXPECT_EQ(from_time.front(), 2500u);
  ReadOptions o;
  o.from = LogPosition::Time(t);
  o.max_messages = 1;
  auto r = engine_->Read("q", o);
  ASSERT_TRUE(r.ok());
  ASSERT_THAT(r->messages, SizeIs(1));
  EXPECT_EQ(r->messages[0].body, "b0");
  EXPECT_EQ(r->messages[0].enqueue_time, t);
  EXPECT_EQ(r->next_offset, 2501u);
  // Reading leases nothing.
  EXPECT_EQ(Stats("q").ready, 5000u);
  // Deleted and removed messages are not retained: not read.
  Drain("q", "");
  EXPECT_THAT(ReadOffsets("q", LogPosition::Earliest()), IsEmpty());
  EXPECT_THAT(ReadOffsets("q", LogPosition::Offset(0)), IsEmpty());
}

TEST_F(GroupsTest, ReadRespectsMaxBytes) {
  Create("q");
  SendBodies("q", {std::string(1000, 'a'), std::string(1000, 'b'),
                   std::string(1000, 'c')});
  ReadOptions o;
  o.max_bytes = 2100;
  auto r = engine_->Read("q", o);
  ASSERT_TRUE(r.ok());
  EXPECT_THAT(r->messages, SizeIs(2));
  o.max_bytes = 10;  // Always at least one.
  r = engine_->Read("q", o);
  ASSERT_TRUE(r.ok());
  EXPECT_THAT(r->messages, SizeIs(1));
}

TEST_F(GroupsTest, SeekBackRedeliversDeletedMessagesWhenKept) {
  QueueConfig c;
  c.retention_keep_deleted_for = absl::Hours(1);
  Create("q", c);
  SendN("q", 100);
  ASSERT_THAT(Drain("q", ""), SizeIs(100));
  auto info = engine_->SeekGroup("q", "", LogPosition::Offset(0));
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->cursor, 0u);
  std::vector<uint64_t> again = Drain("q", "");
  ASSERT_THAT(again, SizeIs(100));
  EXPECT_EQ(again.front(), 0u);
  // Once keep_deleted_for has passed, they are gone.
  clock_.Advance(absl::Hours(1) + absl::Seconds(2));
  ASSERT_TRUE(engine_->RunRetention().ok());
  ASSERT_TRUE(engine_->SeekGroup("q", "", LogPosition::Offset(0)).ok());
  EXPECT_THAT(Drain("q", ""), IsEmpty());
  EXPECT_THAT(ReadOffsets("q", LogPosition::Offset(0)), IsEmpty());
}

TEST_F(GroupsTest, SeekBackRedeliversNothingWhenDeletedAreNotKept) {
  Create("q");
  SendN("q", 100);
  ASSERT_THAT(Drain("q", ""), SizeIs(100));
  auto info = engine_->SeekGroup("q", "", LogPosition::Offset(0));
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->cursor, 100u);
  EXPECT_THAT(Drain("q", ""), IsEmpty());
}

TEST_F(GroupsTest, SeekBackRedeliversWhatAnotherGroupStillNeeds) {
  Create("q");
  MakeGroup("q", "slow");
  SendN("q", 10);
  ASSERT_THAT(Drain("q", ""), SizeIs(10));
  // "slow" has not deleted them, so they are still retained.
  ASSERT_TRUE(engine_->SeekGroup("q", "", LogPosition::Offset(5)).ok());
  EXPECT_THAT(Drain("q", ""), ElementsAre(5, 6, 7, 8, 9));
}

TEST_F(GroupsTest, SeekDropsLeasesAndVoidsTheirReceipts) {
  Create("q");
  SendN("q", 3);
  auto leased = Recv("q", 3, absl::Hours(1));
  ASSERT_THAT(leased, SizeIs(3));
  ASSERT_TRUE(engine_->SeekGroup("q", "", LogPosition::Offset(1)).ok());
  EXPECT_EQ(DeleteOne("q", leased[2].receipt_handle).code(),
            absl::StatusCode::kFailedPrecondition);
  auto again = Recv("q", 10, absl::Hours(1));
  ASSERT_THAT(again, SizeIs(2));
  EXPECT_EQ(again[0].offset, 1u);
  EXPECT_EQ(again[0].receive_count, 1u);
  // The void receipt stays void across a restart.
  Reopen();
  EXPECT_EQ(DeleteOne("q", leased[2].receipt_handle).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(DeleteOne("q", again[1].receipt_handle).ok());
}

TEST_F(GroupsTest, MaxAgeRemovesOldMessagesWhateverTheirState) {
  QueueConfig c;
  c.retention_max_age = absl::Minutes(1);
  Create("q", c);
  MakeGroup("q", "other");
  SendN("q", 2000, std::string(1000, 'x'));
  auto leased = Recv("q", 10, absl::Hours(2));
  clock_.Advance(absl::Seconds(30));
  SendN("q", 100, "young");
  ASSERT_TRUE(engine_->CompactStorage().ok());
  const uint64_t before = engine_->GetStorageStats().sst_bytes;

  clock_.Advance(absl::Seconds(31));
  ASSERT_TRUE(engine_->RunRetention().ok());
  for (const std::string group : {"", "other"}) {
    QueueStats s = Stats("q", group);
    EXPECT_EQ(s.ready, 100u) << group;
    EXPECT_EQ(s.in_flight, 0u) << group;
  }
  std::vector<uint64_t> read = ReadOffsets("q", LogPosition::Earliest());
  ASSERT_THAT(read, SizeIs(100));
  EXPECT_EQ(read.front(), 2000u);
  auto young = Recv("q", 1000, absl::Hours(1));
  ASSERT_THAT(young, SizeIs(100));
  EXPECT_EQ(young[0].body, "young0");
  ASSERT_TRUE(engine_->CompactStorage().ok());
  const uint64_t after = engine_->GetStorageStats().sst_bytes;
  EXPECT_LT(after, before / 4) << before << " -> " << after;

  // And it all holds after a restart.
  Reopen();
  EXPECT_THAT(ReadOffsets("q", LogPosition::Earliest()), SizeIs(100));
  EXPECT_EQ(Stats("q", "other").ready, 100u);
}

TEST_F(GroupsTest, RestartKeepsEveryGroupsState) {
  Create("q");
  MakeGroup("q", "a");
  SendN("q", 2000);
  MakeGroup("q", "b", LogPosition::Latest());
  // Default group: 1500 deleted (out of order at the end), 10 leased.
  auto d = Recv("q", 1000, absl::Hours(1));
  std::vector<std::string> receipts;
  for (auto& m : d) receipts.push_back(m.receipt_handle);
  ASSERT_TRUE(engine_->Delete("q", receipts).ok());
  d = Recv("q", 510, absl::Hours(1));
  receipts.clear();
  for (size_t i = 0; i < 500; ++i) receipts.push_back(d[i + 10].receipt_handle);
  ASSERT_TRUE(engine_->Delete("q", receipts).ok());
  // Group a: 5 leased with a short lease.
  auto a = Recv("q", 5, absl::Seconds(10), "a");
  Reopen();
  QueueStats s = Stats("q");
  EXPECT_EQ(s.in_flight, 10u);
  EXPECT_EQ(s.ready, 490u);
  EXPECT_EQ(s.deleted_total, 1500u);
  EXPECT_EQ(Stats("q", "a").in_flight, 5u);
  EXPECT_EQ(Stats("q", "a").ready, 1995u);
  EXPECT_EQ(Stats("q", "b").ready, 0u);
  clock_.Advance(absl::Seconds(10));
  auto a2 = Recv("q", 5, absl::Hours(1), "a");
  ASSERT_THAT(a2, SizeIs(5));
  EXPECT_EQ(a2[0].receive_count, 2u);
  EXPECT_EQ(a2[0].offset, a[0].offset);
  std::vector<uint64_t> rest = Drain("q", "");
  EXPECT_THAT(rest, SizeIs(490));
  EXPECT_EQ(std::set<uint64_t>(rest.begin(), rest.end()).count(d[0].offset),
            0u);
  SendN("q", 1);
  EXPECT_THAT(Drain("q", "b"), ElementsAre(2000));
}

TEST_F(GroupsTest, DeletingALaggingGroupReleasesRetention) {
  Create("q");
  MakeGroup("q", "lagging");
  SendN("q", 50);
  Drain("q", "");
  EXPECT_THAT(ReadOffsets("q", LogPosition::Earliest()), SizeIs(50));
  ASSERT_TRUE(engine_->DeleteGroup("q", "lagging").ok());
  EXPECT_THAT(ReadOffsets("q", LogPosition::Earliest()), IsEmpty());
  EXPECT_EQ(engine_->ListGroups("q")->size(), 1u);
}

TEST_F(GroupsTest, StorageStaysBoundedAfterManyMessagesPassThrough) {
  Create("q");
  ASSERT_TRUE(engine_->CompactStorage().ok());
  const uint64_t fresh = engine_->GetStorageStats().sst_bytes;
  for (int round = 0; round < 50; ++round) {
    SendN("q", 1000, std::string(100, 'x'));
    clock_.Advance(absl::Seconds(1));
    Drain("q", "");
  }
  // Range deletes are written at most once a second.
  clock_.Advance(absl::Seconds(1));
  ASSERT_TRUE(engine_->RunRetention().ok());
  ASSERT_TRUE(engine_->CompactStorage().ok());
  const uint64_t after = engine_->GetStorageStats().sst_bytes;
  // 50,000 messages of 100+ bytes went through: ~5 MB. What is left is the
  // queue's metadata.
  EXPECT_LT(after, fresh + 64 * 1024) << fresh << " -> " << after;
  SendN("q", 1);
  EXPECT_THAT(Drain("q", ""), ElementsAre(50000));
}

// A slow trickle writes a time index entry per message (one a second): once
// the messages are gone, so are their index entries, and time lookups still
// find what is retained.
TEST_F(GroupsTest, TimeIndexShrinksWithTheMessagesItIndexes) {
  Create("q");
  ASSERT_TRUE(engine_->CompactStorage().ok());
  const uint64_t fresh = engine_->GetStorageStats().sst_bytes;
  constexpr int kRounds = 5000;
  for (int i = 0; i < kRounds; ++i) {
    SendN("q", 1);
    clock_.Advance(absl::Seconds(1));
    ASSERT_THAT(Drain("q", ""), SizeIs(1));
  }
  clock_.Advance(absl::Seconds(1));
  ASSERT_TRUE(engine_->RunRetention().ok());
  ASSERT_TRUE(engine_->CompactStorage().ok());
  // 5,000 index entries take well over 100 KiB.
  EXPECT_LT(engine_->GetStorageStats().sst_bytes, fresh + 64 * 1024);

  const absl::Time before = clock_.Now();
  clock_.Advance(absl::Seconds(1));
  SendN("q", 3);
  EXPECT_THAT(ReadOffsets("q", LogPosition::Time(before)),
              ElementsAre(kRounds, kRounds + 1, kRounds + 2));
  Reopen();
  EXPECT_THAT(ReadOffsets("q", LogPosition::Time(before)),
              ElementsAre(kRounds, kRounds + 1, kRounds + 2));
}

TEST_F(GroupsTest, BadInputIsRejected) {
  using absl::StatusCode;
  Create("q");
  SendN("q", 3);
  EXPECT_EQ(engine_->CreateGroup("q", "bad/name", LogPosition::Earliest())
                .status()
                .code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(
      engine_->CreateGroup("q", "", LogPosition::Earliest()).status().code(),
      StatusCode::kInvalidArgument);
  EXPECT_EQ(engine_->CreateGroup("nope", "g", LogPosition::Earliest())
                .status()
                .code(),
            StatusCode::kNotFound);
  MakeGroup("q", "g");
  EXPECT_EQ(
      engine_->CreateGroup("q", "g", LogPosition::Earliest()).status().code(),
      StatusCode::kAlreadyExists);
  EXPECT_EQ(
      engine_->CreateGroup("q", "h", LogPosition::Offset(4)).status().code(),
      StatusCode::kInvalidArgument);
  EXPECT_EQ(
      engine_
          ->CreateGroup("q", "h",
                        LogPosition::Time(clock_.Now() + absl::Seconds(1)))
          .status()
          .code(),
      StatusCode::kInvalidArgument);
  ReceiveOptions o;
  o.group = "unknown";
  EXPECT_EQ(engine_->Receive("q", o).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(engine_->GetQueueStats("q", "unknown").status().code(),
            StatusCode::kNotFound);
  EXPECT_EQ(engine_->SeekGroup("q", "unknown", LogPosition::Offset(0))
                .status()
                .code(),
            StatusCode::kNotFound);
  EXPECT_EQ(
      engine_->SeekGroup("q", "g", LogPosition::Offset(4)).status().code(),
      StatusCode::kInvalidArgument);
  EXPECT_EQ(engine_
                ->SeekGroup("q", "g",
                            LogPosition::Time(clock_.Now() + absl::Hours(1)))
                .status()
                .code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(engine_->DeleteGroup("q", "unknown").code(), StatusCode::kNotFound);
  EXPECT_EQ(engine_->DeleteGroup("q", "").code(),
            StatusCode::kFailedPrecondition);
  ReadOptions r;
  r.max_messages = 0;
  EXPECT_EQ(engine_->Read("q", r).status().code(),
            StatusCode::kInvalidArgument);
  r.max_messages = 10;
  r.from = LogPosition::Offset(99);
  EXPECT_EQ(engine_->Read("q", r).status().code(),
            StatusCode::kInvalidArgument);
  // Nothing changed.
  EXPECT_EQ(engine_->ListGroups("q")->size(), 2u);
  EXPECT_EQ(Stats("q", "g").ready, 3u);
}

}  // namespace
}  // namespace weir
