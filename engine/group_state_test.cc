#include "engine/group_state.h"

#include "gtest/gtest.h"

namespace weir {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1000);

TEST(GroupState, FreshLeaseAdvancesCursorAndCountsOneReceive) {
  GroupState g(0, "", 0, 0, 0);
  auto [lease, undo] = g.BeginLease(0, kT0 + absl::Seconds(30), false);
  EXPECT_EQ(lease.receive_count, 1u);
  EXPECT_FALSE(undo.existed);
  EXPECT_EQ(g.cursor(), 1u);
  g.CommitLease(0);
  g.Expire(kT0);
  EXPECT_FALSE(g.FirstReady().has_value());
  EXPECT_EQ(g.NextDeadline(), kT0 + absl::Seconds(30));
}

TEST(GroupState, LapsedLeaseBecomesReadyAndRedeliversWithHigherCount) {
  GroupState g(0, "", 0, 0, 0);
  g.BeginLease(0, kT0 + absl::Seconds(30), false);
  g.CommitLease(0);
  g.Expire(kT0 + absl::Seconds(30));
  ASSERT_EQ(g.FirstReady(), 0u);
  auto [lease, undo] = g.BeginLease(0, kT0 + absl::Seconds(90), false);
  EXPECT_EQ(lease.receive_count, 2u);
  EXPECT_TRUE(undo.existed);
}

TEST(GroupState, AbortedLeaseRestoresReadyEntry) {
  GroupState g(0, "", 0, 0, 0);
  auto [lease, undo] = g.BeginLease(0, kT0, false);
  g.AbortLease(0, undo);
  g.Expire(kT0);
  ASSERT_EQ(g.FirstReady(), 0u);
  EXPECT_EQ(g.FindLease(0)->receive_count, 0u);
  EXPECT_EQ(g.cursor(), 1u);
}

TEST(GroupState, OutOfOrderDeletesAdvanceFloorOnlyOverContiguousPrefix) {
  GroupState g(0, "", 0, 0, 0);
  for (uint64_t o = 0; o < 4; ++o) {
    g.BeginLease(o, kT0, false);
    g.CommitLease(o);
  }
  for (uint64_t o : {2, 1}) {
    g.BeginChange(o);
    g.CommitDelete(o);
  }
  EXPECT_EQ(g.delete_floor(), 0u);
  EXPECT_TRUE(g.IsDeleted(1));
  EXPECT_FALSE(g.IsDeleted(0));
  g.BeginChange(0);
  g.CommitDelete(0);
  EXPECT_EQ(g.delete_floor(), 3u);
  EXPECT_EQ(g.deleted_above_floor(), 0u);
}

TEST(GroupState, BusyEntriesAreNeitherReadyNorCounted) {
  GroupState g(0, "", 0, 0, 0);
  g.BeginLease(0, kT0, false);
  g.CommitLease(0);
  g.BeginChange(0);
  g.Expire(kT0 + absl::Hours(1));
  EXPECT_FALSE(g.FirstReady().has_value());
  EXPECT_TRUE(g.has_busy());
  g.AbortChange(0);
  g.Expire(kT0 + absl::Hours(1));
  EXPECT_EQ(g.FirstReady(), 0u);
}

TEST(GroupState, RestoreRebuildsCursorAndFloor) {
  GroupState g(0, "", 0, /*delete_floor=*/10, /*cursor=*/10);
  g.RestoreDeleted(10);
  g.RestoreDeleted(12);
  g.RestoreLease(11, kT0, 3);
  g.RestoreLease(5, kT0, 1);  // Below the floor: ignored.
  EXPECT_EQ(g.delete_floor(), 11u);
  EXPECT_EQ(g.cursor(), 13u);
  EXPECT_EQ(g.FindLease(11)->receive_count, 3u);
  EXPECT_EQ(g.FindLease(5), nullptr);
}

TEST(GroupState, DelayOnlyLeaseDoesNotCountAReceive) {
  GroupState g(0, "", 0, 0, 0);
  auto [lease, undo] = g.BeginLease(0, kT0 + absl::Minutes(1), true);
  EXPECT_EQ(lease.receive_count, 0u);
  g.CommitLease(0);
  size_t in_flight, delayed;
  g.CountPending(&in_flight, &delayed);
  EXPECT_EQ(in_flight, 0u);
  EXPECT_EQ(delayed, 1u);
}

}  // namespace
}  // namespace weir
