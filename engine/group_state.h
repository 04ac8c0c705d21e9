// In-memory delivery state of one consumer group on one queue: which
// messages it has been handed (the cursor), which are leased and until when,
// which are ready again, and which are deleted (the delete floor plus the
// deleted offsets above it). Pure bookkeeping: no I/O, no locking. The owner
// (Queue) serializes access and persists changes before committing them.
//
// A lease entry is "busy" while a write about it is in flight; busy entries
// are neither ready nor expiring, and nothing else may change them until the
// write is committed or aborted.
#ifndef WEIR_ENGINE_GROUP_STATE_H_
#define WEIR_ENGINE_GROUP_STATE_H_

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <utility>

#include "absl/container/btree_set.h"
#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"

namespace weir {

class GroupState {
 public:
  struct Lease {
    absl::Time deadline = absl::InfinitePast();
    // 0: never received (held back by a send delay).
    uint32_t receive_count = 0;
    bool busy = false;
  };

  // What a lease entry was before BeginLease, to undo it.
  struct Undo {
    bool existed = false;
    Lease before;
  };

  GroupState(uint32_t id, std::string name, uint32_t generation,
             uint64_t delete_floor, uint64_t cursor);

  uint32_t id() const { return id_; }
  const std::string& name() const { return name_; }
  uint32_t generation() const { return generation_; }
  uint64_t delete_floor() const { return floor_; }
  uint64_t cursor() const { return cursor_; }

  // --- Recovery: call before anything else. ---
  void RestoreLease(uint64_t offset, absl::Time deadline,
                    uint32_t receive_count);
  void RestoreDeleted(uint64_t offset);

  // Moves every lease whose deadline is at or before `now` to the ready set.
  void Expire(absl::Time now);

  // The lowest ready offset, if any.
  std::optional<uint64_t> FirstReady() const;
  // The earliest deadline of a lease that is not ready yet.
  std::optional<absl::Time> NextDeadline() const;

  // Moves the cursor past `offset` (which must be the cursor) without
  // delivering it.
  void AdvanceCursor() { ++cursor_; }

  // Starts leasing `offset` until `deadline`: it must be ready or be the
  // cursor (which then advances). receive_count grows by one unless
  // `delay_only` (a delayed message held back, not received). Marks the
  // entry busy and returns its new lease and how to undo.
  std::pair<Lease, Undo> BeginLease(uint64_t offset, absl::Time deadline,
                                    bool delay_only);
  // The lease write is durable: the entry stops being busy.
  void CommitLease(uint64_t offset);
  // The lease write failed: restores the entry as it was.
  void AbortLease(uint64_t offset, const Undo& undo);

  // Looks up the lease of `offset`; null if there is none.
  const Lease* FindLease(uint64_t offset) const;
  bool IsDeleted(uint64_t offset) const;

  // Starts a change (delete or new deadline) of an existing, idle lease:
  // takes it out of the ready and deadline sets and marks it busy.
  void BeginChange(uint64_t offset);
  // Ends a change: with `deleted`, the message is deleted for this group;
  // otherwise its lease now ends at `deadline` (`AbortChange` keeps the old).
  void CommitDelete(uint64_t offset);
  void CommitDeadline(uint64_t offset, absl::Time deadline);
  void AbortChange(uint64_t offset);

  // Gives `offset` (below the cursor, with no entry) an entry that was never
  // received: ready at `visible_at` (InfinitePast: now). A keyed message
  // whose turn has come, or a message found again on recovery. Not
  // persisted: the owner rebuilds such entries on open.
  void AddReady(uint64_t offset, absl::Time visible_at = absl::InfinitePast());
  // Whether `offset` has a lease entry or is deleted.
  bool Tracked(uint64_t offset) const {
    return IsDeleted(offset) || leases_.contains(offset);
  }
  // Drops the entry of `offset` without deleting the message.
  void Forget(uint64_t offset);

  // Marks an offset below the cursor that holds no message (a failed or
  // purged write) as deleted, so the floor can pass it.
  void MarkGone(uint64_t offset);

  // Forgets every lease and deletion and moves floor and cursor to `offset`
  // (either way), with a new generation: older receipts become void.
  void Reset(uint64_t offset, uint32_t generation);
  // Retention: everything below `offset` is gone. Leases and deletions below
  // it are forgotten; floor and cursor move up to it if they were below.
  void DropBelow(uint64_t offset);

  // Counts for stats.
  size_t ready_count() const { return ready_.size(); }
  size_t deleted_above_floor() const { return deleted_.size(); }
  // Leases that are not ready: received (in flight) and delay-only.
  void CountPending(size_t* in_flight, size_t* delayed) const;
  bool has_busy() const { return busy_ > 0; }

 private:
  void Index(uint64_t offset, const Lease& lease);
  void Unindex(uint64_t offset, const Lease& lease);
  void MarkDeleted(uint64_t offset);

  const uint32_t id_;
  const std::string name_;
  uint32_t generation_;
  uint64_t floor_;
  uint64_t cursor_;
  size_t busy_ = 0;
  absl::flat_hash_map<uint64_t, Lease> leases_;
  // Idle leases not yet expired, by deadline.
  std::set<std::pair<absl::Time, uint64_t>> by_deadline_;
  // Idle leases that expired: deliverable again, lowest offset first.
  absl::btree_set<uint64_t> ready_;
  // Deleted offsets at or above floor_.
  absl::btree_set<uint64_t> deleted_;
};

}  // namespace weir

#endif  // WEIR_ENGINE_GROUP_STATE_H_
