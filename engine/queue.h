// One queue: its configuration, its log of offsets, its consumer groups'
// delivery state, retention, and the receivers parked on it.
//
// Decisions are made in memory under the queue's lock; the RocksDB write that
// makes them durable happens outside it, so concurrent callers share fsyncs
// (group commit). Entries being written are marked busy, and the in-memory
// state is committed (or rolled back) once the write returns. Nothing is
// acknowledged before it is durable. Rare structural changes (purge, seek,
// group creation and deletion, age retention) run exclusively: they wait for
// writes in flight and hold new calls back until they are done.
#ifndef WEIR_ENGINE_QUEUE_H_
#define WEIR_ENGINE_QUEUE_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/btree_map.h"
#include "absl/container/btree_set.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "engine/clock.h"
#include "engine/dispatcher.h"
#include "engine/engine.h"
#include "engine/group_state.h"
#include "engine/records.h"
#include "engine/storage.h"

namespace weir {

// Something parked until a queue group may have messages for it.
class QueueWaiter {
 public:
  virtual ~QueueWaiter() = default;
  // Called under the queue's lock just before the waiter is parked. Returns
  // false to refuse because it was woken meanwhile (the caller retries).
  virtual bool OnPark() = 0;
  // Whether it is still parked (not woken, cancelled or timed out).
  virtual bool Parked() = 0;
  // Called without the queue's lock: messages may be available.
  virtual void Wake() = 0;

  // What a claimed waiter takes (see TryClaim).
  struct Claim {
    // 0: not claimed.
    int max_messages = 0;
    // Unset: the queue's configured visibility timeout.
    std::optional<absl::Duration> visibility_timeout;
  };
  // A send may lease its messages to parked waiters in its own write and
  // hand them over once that write is durable: the consumer gets them after
  // one fsync instead of two. Called under the queue's lock: if still
  // parked, the waiter stops being parked (it is neither woken nor timed out
  // until Handoff) and says how many messages it takes, each leased for its
  // visibility timeout. Otherwise returns max_messages 0. The default
  // refuses: the waiter is only ever woken.
  virtual Claim TryClaim() { return {}; }
  // Called once after each successful TryClaim, without the queue's lock, on
  // the thread where a write of the queue completed (which must not be held
  // up, nor write and wait): the messages leased for it, oldest first, once
  // they and every offset below them are durable; or none when the send's
  // write failed (the waiter then looks again as if woken).
  virtual void Handoff(std::vector<ReceivedMessage> messages) {}
};

// Attributes a dead-lettered message carries.
inline constexpr char kAttrSourceQueue[] = "weir.source_queue";
inline constexpr char kAttrSourceOffset[] = "weir.source_offset";
inline constexpr char kAttrSourceGroup[] = "weir.source_group";
inline constexpr char kAttrReceiveCount[] = "weir.receive_count";
inline constexpr char kAttrOrderingKey[] = "weir.ordering_key";

// Finds another queue of the engine by name; null if there is none.
using QueueLookup =
    std::function<std::shared_ptr<class Queue>(absl::string_view)>;

class Queue : public std::enable_shared_from_this<Queue> {
 public:
  Queue(Storage* storage, Clock* clock, Dispatcher* dispatcher,
        QueueLookup lookup, const QueueRecord& record);

  // Rebuilds the in-memory state from storage. Call once, before sharing.
  absl::Status Load();
  // Adds the records of a new queue (name, configuration, default group) to
  // `batch`.
  static void WriteNew(const QueueRecord& record, const Storage& storage,
                       rocksdb::WriteBatch* batch);

  uint64_t id() const { return id_; }
  const std::string& name() const { return name_; }
  // The configuration in force (a copy: UpdateConfig may change it).
  QueueConfig config() const;
  // Persists and applies a new configuration (normalized and checked by the
  // caller). Callers serialize updates of one queue. What is already
  // scheduled (lease deadlines, delays of messages sent) does not move; the
  // rest applies from the next call on.
  absl::Status UpdateConfig(const QueueConfig& config);
  QueueInfo info() const;

  absl::StatusOr<std::vector<uint64_t>> Send(
      absl::Span<const SendEntry> entries);
  // Send without blocking: the write goes through Storage::WriteAsync and
  // `done` runs on the storage's commit thread (or at once on this thread
  // for bad input and batches of duplicates only).
  void SendAsync(absl::Span<const SendEntry> entries, SendCallback done);

  // Leases up to options.max_messages. When none is ready and `waiter` is
  // given, parks it (atomically with finding nothing) and sets *parked.
  absl::StatusOr<std::vector<ReceivedMessage>> Receive(
      const ReceiveOptions& options, std::shared_ptr<QueueWaiter> waiter,
      bool* parked);

  // What one pass of Receive found: the messages leased (or an error),
  // whether it found none and parked the waiter, and whether it stopped at
  // its scan limit (or moved dead letters aside) with more of the log to
  // look at, in which case it never parks and the caller looks again.
  struct ReceivePass {
    absl::StatusOr<std::vector<ReceivedMessage>> messages;
    bool parked = false;
    bool more = false;
  };
  using ReceivePassCallback = std::function<void(ReceivePass)>;
  // One pass of Receive without blocking: the leases are written through
  // Storage::WriteAsync and `done` runs on the storage's commit thread, or
  // at once on this thread when there is nothing to write (bad input,
  // nothing ready). `done` must be quick and must not write and wait, as
  // for WriteAsync. The bodies are read on this thread.
  void ReceiveOnceAsync(const ReceiveOptions& options,
                        const std::shared_ptr<QueueWaiter>& waiter,
                        ReceivePassCallback done);

  // OK if the queue has a group `name` (empty: the default group);
  // NOT_FOUND if not, UNAVAILABLE once closed.
  absl::Status CheckGroup(absl::string_view name);
  // OK if a receive with `options` would be accepted now: max_messages and
  // the visibility timeout in range, the group there. INVALID_ARGUMENT,
  // NOT_FOUND or UNAVAILABLE as a receive would answer.
  absl::Status CheckReceive(const ReceiveOptions& options);

  absl::StatusOr<std::vector<absl::Status>> Delete(
      absl::Span<const std::string> receipts);
  // Delete without blocking: `done` runs on the storage's commit thread (or
  // at once on this thread when nothing needs writing).
  void DeleteAsync(absl::Span<const std::string> receipts,
                   Engine::DeleteCallback done);
  absl::StatusOr<std::vector<absl::Status>> ChangeVisibility(
      absl::Span<const VisibilityChange> changes);

  absl::StatusOr<uint64_t> Purge();
  absl::StatusOr<QueueStats> Stats(absl::string_view group);

  absl::StatusOr<GroupInfo> CreateGroup(absl::string_view name,
                                        const LogPosition& start);
  absl::Status DeleteGroup(absl::string_view name);
  absl::StatusOr<std::vector<GroupInfo>> ListGroups();
  absl::StatusOr<GroupInfo> SeekGroup(absl::string_view name,
                                      const LogPosition& to);
  absl::StatusOr<ReadResult> Read(const ReadOptions& options);

  // Moves up to `max_messages` messages this queue's default group has
  // neither deleted nor leased to `to_queue`, or when empty to the queue
  // named by their kAttrSourceQueue attribute. Each message is appended to
  // its target and deleted here in one atomic write. Messages whose target
  // does not exist (any more) stay. Returns how many moved.
  absl::StatusOr<uint64_t> Redrive(absl::string_view to_queue,
                                   int max_messages);

  // Lets a caller of DeleteWith add its own writes to the delete's atomic
  // write (redrive: the copies appended to other queues).
  class DeleteHook {
   public:
    virtual ~DeleteHook() = default;
    // `indexes`: the receipts (positions in the batch) about to be deleted.
    // A non-OK status cancels the whole delete: nothing is written.
    virtual absl::Status BeforeWrite(const std::vector<size_t>& indexes,
                                     rocksdb::WriteBatch* batch) = 0;
    // Called with the write's outcome when BeforeWrite returned OK.
    virtual void AfterWrite(bool ok) = 0;
  };

  // Appending on behalf of another queue's write (dead letters, redrive):
  // BeginAppend assigns offsets to `records` (whose visible_at_us holds the
  // delay in microseconds) and adds their writes to `batch`; the caller
  // writes the batch and must then call FinishAppend with the outcome.
  // Takes only this queue's lock, never while the caller holds its own.
  absl::StatusOr<uint64_t> BeginAppend(std::vector<MessageRecord>* records,
                                       rocksdb::WriteBatch* batch);
  void FinishAppend(uint64_t first, size_t n, bool ok);

  // Removes what retention no longer keeps: messages older than max_age
  // (whatever their state) and messages every group deleted more than
  // keep_deleted_for ago.
  absl::Status ApplyRetention();

  // Removes every record of the queue with `batch`'s write; afterwards every
  // call fails with NOT_FOUND and parked waiters are woken.
  absl::Status Drop(rocksdb::WriteBatch* batch);
  // Engine shutdown: calls fail with UNAVAILABLE; parked waiters are woken.
  void Close();

 private:
  struct Group;
  // A send between PrepareSend and FinishSend.
  struct SendPlan {
    // Final for duplicates of an earlier send; the rest set by FinishSend.
    std::vector<uint64_t> offsets;
    // Per entry: its index in `records`, -1 for a duplicate of an earlier
    // send, -2 - j for a repeat of entry j of this batch.
    std::vector<int> appended_as;
    std::vector<MessageRecord> records;
    std::vector<std::string> new_dedup_ids;
    rocksdb::WriteBatch batch;
    uint64_t first = 0;
    // Records [first, first + n) of the batch leased to a claimed waiter of
    // `group` in this write.
    struct Handoff {
      Group* group;
      std::shared_ptr<QueueWaiter> waiter;
      // The group's as leased, for the receipts.
      uint32_t gid;
      uint32_t generation;
      uint64_t first;
      size_t n;
      absl::Time deadline;
    };
    std::vector<Handoff> handoffs;
  };
  // Checks `entries` and assigns offsets, adding the write to plan->batch.
  // Returns false when nothing needs writing (every entry a duplicate: the
  // offsets are final). With may_wait false, returns ABORTED instead of
  // waiting for the write of a dedup id another send is making.
  absl::StatusOr<bool> PrepareSend(absl::Span<const SendEntry> entries,
                                   bool may_wait, SendPlan* plan);
  // Applies the outcome of plan.batch's write; returns the offsets.
  absl::StatusOr<std::vector<uint64_t>> FinishSend(SendPlan& plan,
                                                   const absl::Status& st);
  // A handoff whose write is done: the messages for `waiter` (none if the
  // write failed), due once committed_ has reached `end`.
  struct HandedOver {
    uint64_t end = 0;
    std::shared_ptr<QueueWaiter> waiter;
    std::vector<ReceivedMessage> messages;
  };
  // Moves the deferred handoffs that are due to `due`.
  void TakeDueHandoffsLocked(std::vector<HandedOver>* due)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Leases what it can of plan's records to parked waiters (see
  // QueueWaiter::TryClaim), adding the leases to plan->batch: a group's
  // waiters take the records when its cursor is at the first of them and
  // nothing else is ready, as far as they need no delay or ordering key.
  void PlanHandoffsLocked(const QueueConfig& config, SendPlan* plan)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  struct Group {
    explicit Group(GroupState s) : state(std::move(s)) {}
    GroupState state;
    // The delete floor as last written to storage.
    uint64_t persisted_floor = 0;
    bool floor_write_in_flight = false;
    absl::Time last_floor_write = absl::InfinitePast();
    // Totals; `sent` is kept in the default group's.
    Counters counters;
    std::deque<std::shared_ptr<QueueWaiter>> waiters;
    // waiters.size() after the last sweep of those no longer parked.
    size_t waiters_after_sweep = 0;
    // Per ordering key, the group's undeleted messages of that key that the
    // cursor has passed, in offset order. Only the first is in `state`
    // (leased or ready); the others wait their turn.
    absl::flat_hash_map<std::string, std::deque<uint64_t>> lanes;
  };

  // A message taken by a Receive: to deliver, or to move to the dead-letter
  // queue.
  struct Pick {
    uint64_t offset;
    GroupState::Lease lease;
    GroupState::Undo undo;
    enum Kind { kDeliver, kDeadLetter } kind;
    enum Fate { kKeep, kGone, kAbort } fate = kKeep;
  };

  // One pass of Receive, blocking (see ReceivePass for *parked and *more).
  absl::StatusOr<std::vector<ReceivedMessage>> ReceiveOnce(
      const ReceiveOptions& options, const std::shared_ptr<QueueWaiter>& waiter,
      bool* parked, bool* more);
  // What a pass carries across its write (queue.cc).
  struct ReceivePlan;
  // The pass: with `async` its write goes through Storage::WriteAsync,
  // without it through Storage::Write before this returns. `done` always
  // runs once.
  void ReceiveOnceImpl(const ReceiveOptions& options,
                       const std::shared_ptr<QueueWaiter>& waiter, bool async,
                       ReceivePassCallback done);
  // After the pass's write (`st` its outcome): commits or undoes its leases
  // and dead letters, and wakes whom it released messages for.
  void FinishReceive(ReceivePlan& plan, const absl::Status& st);

  // Delete, with `hook` (may be null; sync only) joining the write; `done`
  // gets the outcome.
  void DeleteImpl(absl::Span<const std::string> receipts, DeleteHook* hook,
                  bool async, Engine::DeleteCallback done);
  // Delete, with `hook` (may be null) joining the write.
  absl::StatusOr<std::vector<absl::Status>> DeleteWith(
      absl::Span<const std::string> receipts, DeleteHook* hook);

  // A receipt checked and resolved to a lease about to change.
  struct Change {
    size_t index;  // In the caller's batch.
    Group* group;
    uint64_t offset;
    uint32_t receive_count;
  };

  // A point in time when the lowest delete floor over all groups had
  // reached `floor` (for keep_deleted_for).
  struct FloorMark {
    uint64_t floor;
    absl::Time first_at;
    absl::Time last_at;
  };

  struct DedupEntry {
    uint64_t offset;
    absl::Time at;  // First sent.
    bool pending;   // Its write is in flight.
  };

  static absl::Status ValidateSend(absl::Span<const SendEntry> entries,
                                   const QueueConfig& config);
  static absl::Status ValidateReceiveOptions(const ReceiveOptions& options,
                                             const QueueConfig& config);
  // `rec` (at `offset`) as handed to a consumer of group `gid`, of
  // `generation`, under `lease`.
  ReceivedMessage DeliveryOf(MessageRecord rec, uint64_t offset, uint32_t gid,
                             uint32_t generation,
                             const GroupState::Lease& lease) const;
  // The copy of `rec` (at `offset`, received `receive_count` times by
  // `group`) that goes to the dead-letter queue.
  MessageRecord DeadLetterOf(MessageRecord rec, uint64_t offset,
                             absl::string_view group,
                             uint32_t receive_count) const;
  // The message at `offset` is deleted for `g` (or held no message): ends
  // its entry and lets the next message of its ordering key go.
  void OnGoneLocked(Group& g, uint64_t offset, bool deleted,
                    std::vector<std::shared_ptr<QueueWaiter>>* wake)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Rebuilds g.lanes from keyed_ and g.state after a restart.
  void RebuildLanesLocked(Group& g, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Makes `offset`, a keyed message whose turn has come, deliverable to `g`:
  // ready now, or once its send delay has passed.
  void PromoteLocked(Group& g, uint64_t offset, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // delayed_ and delayed_by_time_ together.
  void AddDelayedLocked(uint64_t offset, absl::Time visible)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EraseDelayedLocked(uint64_t offset) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ExpireDelayedLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // After a restart: offsets below a group's cursor that have no lease, no
  // deletion and no lane (a delayed message the cursor passed, a lease
  // write that failed, a send that failed) are made deliverable again, or
  // marked gone when they hold no message.
  absl::Status RecoverGapsLocked(Group& g) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint64_t BeginAppendLocked(std::vector<MessageRecord>* records,
                             rocksdb::WriteBatch* batch)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // `handoffs` (may be null): what the append's own write leased, which
  // needs no waiter woken.
  void FinishAppendLocked(uint64_t first, size_t n, bool ok,
                          std::vector<std::shared_ptr<QueueWaiter>>* wake,
                          const std::vector<SendPlan::Handoff>* handoffs =
                              nullptr) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Fails unless the queue is open; waits while an exclusive change runs.
  absl::Status EnterLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Like EnterLocked, then waits for writes in flight and holds new calls
  // back until ExitExclusiveLocked.
  absl::Status EnterExclusiveLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ExitExclusiveLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Group* FindGroupLocked(uint32_t gid) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<Group*> FindGroupLocked(absl::string_view name)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Group& DefaultGroupLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  GroupInfo InfoLocked(const Group& g) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static GroupRecord RecordOf(const GroupState& g);

  // The offset of the first message enqueued at or after `t`, or the end of
  // the log. Reads storage through the sparse time index; takes no lock but
  // mu_ briefly.
  absl::StatusOr<uint64_t> OffsetForTime(absl::Time t);
  // Resolves a position to an offset in [logical floor, end of log].
  // INVALID_ARGUMENT past the end or in the future.
  absl::StatusOr<uint64_t> ResolvePosition(const LogPosition& p);

  // Resolves receipts to idle leases (waiting for busy ones), marks them busy,
  // and fills `results` for receipts that resolve to nothing to change.
  // Returns nothing, and marks nothing, when the queue was closed while it
  // waited (closed_ then says why).
  // `deleting` picks the answer for an already deleted message.
  std::vector<Change> ResolveReceiptsLocked(
      absl::Span<const std::string> receipts, bool deleting,
      std::vector<absl::Status>* results) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Adds the delete-floor write of `g` (group record plus a range delete of
  // its deleted keys below the floor) to `batch` when it is due. Returns the
  // floor written, or 0 when nothing was added.
  uint64_t MaybeWriteFloorLocked(Group& g, absl::Time now,
                                 rocksdb::WriteBatch* batch)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FinishFloorWriteLocked(Group& g, uint64_t floor, bool ok)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Moves the logical floor (what replay can still reach) up to what every
  // group has deleted, less what keep_deleted_for still keeps.
  void UpdateLogicalFloorLocked(absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Adds a range delete of the messages below the logical floor to `batch`
  // when it is due. Returns the new physical floor, or 0.
  uint64_t MaybeRemoveLocked(absl::Time now, rocksdb::WriteBatch* batch)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FinishRemoveLocked(uint64_t floor, bool ok)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Number of messages in [g.cursor, committed_) that can be delivered now,
  // and how many are held back by a delay.
  void CountFreshLocked(const GroupState& g, absl::Time now, uint64_t* ready,
                        uint64_t* delayed) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Takes up to `n` parked waiters of `g` to wake (call Wake outside the
  // lock).
  static void TakeWaiters(Group& g, size_t n,
                          std::vector<std::shared_ptr<QueueWaiter>>* out);
  void TakeAllWaitersLocked(std::vector<std::shared_ptr<QueueWaiter>>* out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Arms a timer for the next lease deadline while waiters are parked.
  void ScheduleCheckLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Timer callback: wakes waiters if leases lapsed.
  void CheckDeadlines();
  static void WakeAll(const std::vector<std::shared_ptr<QueueWaiter>>& ws);

  Storage* const storage_;
  Clock* const clock_;
  Dispatcher* const dispatcher_;
  const QueueLookup lookup_;
  const uint64_t id_;
  const std::string name_;
  const absl::Time create_time_;
  mutable absl::Mutex config_mu_ ABSL_ACQUIRED_AFTER(mu_);
  QueueConfig config_ ABSL_GUARDED_BY(config_mu_);

  mutable absl::Mutex mu_;
  // Signalled when busy entries, writes in flight or an exclusive change
  // finish.
  absl::CondVar changed_;
  absl::Status closed_ ABSL_GUARDED_BY(mu_);  // Non-OK once dropped/closed.
  bool exclusive_ ABSL_GUARDED_BY(mu_) = false;
  int writes_in_flight_ ABSL_GUARDED_BY(mu_) = 0;

  // Next offset to hand out, and the end of the durable prefix: every offset
  // below committed_ is written (or failed, see holes_).
  uint64_t next_offset_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t committed_ ABSL_GUARDED_BY(mu_) = 0;
  // Enqueue times never go backwards along offsets.
  absl::Time last_enqueue_time_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  // The last sparse time index entry written.
  absl::Time last_index_time_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  uint64_t last_index_offset_ ABSL_GUARDED_BY(mu_) = 0;
  // The sparse time index entries still stored, (time_us, offset) in order,
  // so that removal can range-delete those below the floor.
  std::deque<std::pair<int64_t, uint64_t>> time_index_ ABSL_GUARDED_BY(mu_);
  // Sends being written: first offset -> (end offset, finished).
  std::map<uint64_t, std::pair<uint64_t, bool>> pending_sends_
      ABSL_GUARDED_BY(mu_);
  // Offsets below committed_ whose write failed: they hold no message.
  absl::btree_set<uint64_t> holes_ ABSL_GUARDED_BY(mu_);
  // Handoffs whose write is durable, waiting for an earlier send's.
  std::vector<HandedOver> deferred_handoffs_ ABSL_GUARDED_BY(mu_);
  // Messages not visible yet: offset -> visible at, and the same by time
  // (entries whose time has passed are dropped about once a second).
  absl::btree_map<uint64_t, absl::Time> delayed_ ABSL_GUARDED_BY(mu_);
  absl::btree_set<std::pair<absl::Time, uint64_t>> delayed_by_time_
      ABSL_GUARDED_BY(mu_);
  // Ordering keys of keyed messages not yet removed.
  absl::btree_map<uint64_t, std::string> keyed_ ABSL_GUARDED_BY(mu_);
  // Dedup ids seen within the dedup window, and the order they expire in.
  absl::flat_hash_map<std::string, DedupEntry> dedup_ ABSL_GUARDED_BY(mu_);
  std::deque<std::pair<absl::Time, std::string>> dedup_order_
      ABSL_GUARDED_BY(mu_);

  // Retention. Offsets below logical_floor_ are gone for every reader;
  // messages below physical_floor_ are removed from storage too.
  uint64_t logical_floor_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t physical_floor_ ABSL_GUARDED_BY(mu_) = 0;
  bool remove_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time last_remove_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  std::deque<FloorMark> floor_marks_ ABSL_GUARDED_BY(mu_);

  std::map<uint32_t, std::unique_ptr<Group>> groups_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, uint32_t> group_ids_ ABSL_GUARDED_BY(mu_);
  uint32_t next_group_id_ ABSL_GUARDED_BY(mu_) = 1;

  absl::Time next_check_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
};

}  // namespace weir

#endif  // WEIR_ENGINE_QUEUE_H_
