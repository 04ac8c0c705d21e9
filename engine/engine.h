// Weir's queue engine: named, persistent, append-only message logs on RocksDB,
// consumed as work queues with leases and visibility timeouts.
//
// An Engine is safe for concurrent use by any number of threads without
// external synchronization. It holds no gRPC: the RPC layer translates to and
// from these types.
#ifndef WEIR_ENGINE_ENGINE_H_
#define WEIR_ENGINE_ENGINE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "engine/clock.h"
#include "engine/queue_config.h"
#include "engine/records.h"

namespace rocksdb {
class Env;
}  // namespace rocksdb

namespace weir {

enum class Durability {
  // A write returns once the write-ahead log is fsynced. Concurrent writers
  // share one fsync (group commit). Survives power cuts.
  kSync,
  // A write returns once it is in the write-ahead log in the OS page cache.
  // Survives a process crash. A background thread fsyncs the log every
  // EngineOptions::async_wal_sync_interval, so a power cut loses at most
  // what was acknowledged in about the last interval (plus one fsync).
  kAsync,
};

struct EngineOptions {
  Durability durability = Durability::kSync;
  // kAsync only: how often the write-ahead log is fsynced in the background.
  // Zero: never (then RocksDB syncs it only when it starts a new log file,
  // and a power cut may lose minutes of acknowledged writes).
  absl::Duration async_wal_sync_interval = absl::Milliseconds(100);
  // Bytes RocksDB's memtables may hold in all, which bounds the server's
  // memory under a high write rate at some cost in flushes and compaction
  // (docs/benchmarks.md). Zero: RocksDB's defaults, no such budget.
  size_t memtable_budget_bytes = 0;
  // Source of time for every deadline. Not owned; must outlive the Engine.
  // Null means the real clock.
  Clock* clock = nullptr;
  // Threads that serve long-polling receivers. At least 1.
  int delivery_threads = 4;
  // RocksDB environment, for fault injection in tests. Not owned; must
  // outlive the Engine. Null means the default.
  rocksdb::Env* env = nullptr;
  // Tests only: runs on the writing thread after each blocking write to the
  // database is done and before its effects are published (a Send's
  // offsets, a lease's delivery). Lets a test hold one write there while
  // others go past it. Empty in production.
  std::function<void()> after_blocking_write_for_test;
  // Create the data directory if it does not exist.
  bool create_if_missing = true;
};

struct QueueInfo {
  std::string name;
  QueueConfig config;
  absl::Time create_time;
};

// A position in a queue's log: an offset, or the first message enqueued at or
// after a time; or the earliest retained message, or the end (what is sent
// next).
struct LogPosition {
  enum class Kind { kEarliest, kLatest, kOffset, kTime };
  Kind kind = Kind::kEarliest;
  uint64_t offset = 0;  // For kOffset.
  absl::Time time;      // For kTime.

  static LogPosition Earliest() { return {}; }
  static LogPosition Latest() { return {Kind::kLatest, 0, absl::Time()}; }
  static LogPosition Offset(uint64_t o) {
    return {Kind::kOffset, o, absl::Time()};
  }
  static LogPosition Time(absl::Time t) { return {Kind::kTime, 0, t}; }
};

struct GroupInfo {
  std::string name;  // Empty for the default group.
  // The next offset never delivered to this group.
  uint64_t cursor = 0;
  // Every offset below this is deleted for this group.
  uint64_t delete_floor = 0;
  // Messages sent but not yet delivered to this group (next offset - cursor).
  uint64_t lag = 0;
  uint64_t in_flight = 0;
};

// A message as stored, without lease state (Read).
struct StoredMessage {
  uint64_t offset = 0;
  std::string body;
  Attributes attributes;
  absl::Time enqueue_time;
  std::string ordering_key;
};

struct ReadOptions {
  LogPosition from;
  // 1..1000.
  int max_messages = 100;
  // Stops before a message that would take the answer past this (but always
  // returns at least one). At most 8 MiB.
  size_t max_bytes = 4 << 20;
};

struct ReadResult {
  std::vector<StoredMessage> messages;
  // Where the next Read should start.
  uint64_t next_offset = 0;
};

struct StorageStats {
  uint64_t sst_bytes = 0;       // On disk, in table files.
  uint64_t memtable_bytes = 0;  // In memory, not yet flushed.
  // The engine's writes since open (a send, the leases of a receive, a
  // delete, ...), however many of them shared one fsync.
  uint64_t writes = 0;
};

struct QueueStats {
  uint64_t ready = 0;
  uint64_t in_flight = 0;
  uint64_t delayed = 0;
  absl::Duration oldest_ready_age = absl::ZeroDuration();
  uint64_t sent_total = 0;
  uint64_t received_total = 0;
  uint64_t deleted_total = 0;
  uint64_t next_offset = 0;
};

// A message to append.
struct SendEntry {
  std::string body;
  Attributes attributes;
  // Unset: the queue's configured delay. 0..15 min.
  std::optional<absl::Duration> delay;
  // Messages with the same key are delivered in offset order, one at a time
  // per group. Empty: unordered. At most 128 bytes.
  std::string ordering_key;
  // A second send of the same id within the queue's dedup window appends
  // nothing and returns the first offset. Empty: no dedup. At most 128 bytes.
  std::string dedup_id;
};

struct ReceiveOptions {
  // The consumer group; empty for the default group.
  std::string group;
  // 1..1000.
  int max_messages = 1;
  // Unset: the queue's configured visibility timeout. 0..12 h.
  std::optional<absl::Duration> visibility_timeout;
};

struct ReceivedMessage {
  uint64_t offset = 0;
  std::string body;
  Attributes attributes;
  absl::Time enqueue_time;
  std::string ordering_key;
  uint32_t receive_count = 0;
  std::string receipt_handle;
  absl::Time lease_deadline;
};

struct VisibilityChange {
  std::string receipt_handle;
  // From now: 0 releases the message at once; > 0 extends or postpones.
  absl::Duration visibility_timeout;
};

// Cancels a pending long-poll receive. Thread-safe.
class ReceiveWaiter {
 public:
  virtual ~ReceiveWaiter() = default;
  // Ends the wait: the callback runs with CANCELLED unless it already ran or
  // is running. Never blocks.
  virtual void Cancel() = 0;
};

using SendCallback = std::function<void(absl::StatusOr<std::vector<uint64_t>>)>;

using ReceiveCallback =
    std::function<void(absl::StatusOr<std::vector<ReceivedMessage>>)>;

// What Engine::DeleteAndReceiveAsync answers.
struct DeleteAndReceiveResult {
  // One per receipt, in order, as Delete answers them.
  std::vector<absl::Status> deletes;
  // As ReceiveAsync answers them; may be empty.
  std::vector<ReceivedMessage> messages;
};

using DeleteAndReceiveCallback =
    std::function<void(absl::StatusOr<DeleteAndReceiveResult>)>;

struct SubscribeOptions {
  // The consumer group; empty for the default group.
  std::string group;
  // Lease duration of delivered messages. Unset: the queue's visibility
  // timeout. (0, 12 h].
  std::optional<absl::Duration> visibility_timeout;
};

// What a subscriber asks for in one go: deletes, then lease extensions, then
// releases, applied in that order.
struct SubscriptionOps {
  std::vector<std::string> deletes;
  // Each lease gets its visibility_timeout (> 0) from now and stays the
  // subscription's.
  std::vector<VisibilityChange> extends;
  // Each message becomes ready after its visibility_timeout (0: at once)
  // and is no longer the subscription's.
  std::vector<VisibilityChange> releases;
};

// Per-entry outcomes of SubscriptionOps, as for Delete and ChangeVisibility.
struct SubscriptionAck {
  std::vector<absl::Status> deletes;
  std::vector<absl::Status> extends;
  std::vector<absl::Status> releases;
};

// Called with each batch a subscription leases (never empty, oldest first),
// or once with an error after which nothing more is delivered: NOT_FOUND
// when the queue or group is deleted, UNAVAILABLE when the engine shuts down
// or storage fails.
using SubscriptionCallback =
    std::function<void(absl::StatusOr<std::vector<ReceivedMessage>>)>;

// A push consumer of one queue group (Engine::Subscribe). It leases messages
// as soon as they are ready, never more than the credit it was given, and
// hands them to its callback one batch at a time: the next batch comes only
// after DeliveryDone, so a slow transport holds at most one batch. It
// remembers the leases it handed out until they are deleted or released, and
// releases the rest when it is closed, so other consumers get them at once.
// Callbacks run on engine threads and never after the closed callback of
// Close: deliveries one at a time, Apply's callbacks one at a time in order,
// but a delivery and an Apply callback may run at the same time. A
// Subscription must be destroyed before its Engine. Thread-safe.
class Subscription {
 public:
  // Most credit outstanding at once.
  static constexpr int64_t kMaxCredit = 10000;
  // Most messages in one delivered batch.
  static constexpr int kMaxBatch = 100;

  // Closes without waiting (as Close with no callback).
  virtual ~Subscription() = default;

  // Allows `n` more messages to be delivered. INVALID_ARGUMENT (credit
  // unchanged) if n < 0 or the credit outstanding would exceed kMaxCredit.
  virtual absl::Status AddCredit(int64_t n) = 0;
  // The transport has handed on the last delivered batch: the next may come.
  virtual void DeliveryDone() = 0;
  // Applies `ops` on an engine thread, after every earlier Apply, and calls
  // `done` once with the outcomes (or with a whole-call error such as
  // NOT_FOUND when the queue is gone). INVALID_ARGUMENT at once when `ops`
  // holds more than 1000 entries in all. Ops given before Close are carried
  // out and answered even if the subscription is closed meanwhile, and
  // Close's `closed` runs only after their `done` has returned; after Close,
  // `done` runs at once on this thread with FAILED_PRECONDITION and nothing
  // is applied.
  virtual void Apply(
      SubscriptionOps ops,
      std::function<void(absl::StatusOr<SubscriptionAck>)> done) = 0;
  // Stops delivering and releases every lease still held (after the ops
  // already applied), without blocking. `closed` (may be empty) runs once no
  // callback of this subscription is running and none will run again: at
  // once on this thread, or on the thread of the last callback. Later calls
  // only wait (their `closed` runs likewise). Never blocks, so it may be
  // called from this subscription's own callbacks (`closed` then runs when
  // the callback has returned).
  virtual void Close(std::function<void()> closed) = 0;
};

// Status codes, for every call: NOT_FOUND for an unknown queue or group,
// INVALID_ARGUMENT for bad input (nothing is changed), including a queue or
// group name that breaks the naming rules, whatever the call; UNAVAILABLE or
// RESOURCE_EXHAUSTED when storage fails to write (nothing acknowledged is
// lost), DATA_LOSS when a stored record is corrupted.
class Engine {
 public:
  // Opens (and by default creates) the engine's data in directory `path`,
  // rebuilding in-memory indexes from what is stored. On success the caller
  // owns the Engine; destroying it waits for in-flight calls and closes the
  // database.
  static absl::StatusOr<std::unique_ptr<Engine>> Open(
      const EngineOptions& options, const std::string& path);

  virtual ~Engine() = default;

  // Creates a queue. `config` zero fields take defaults; a dead-letter queue
  // must exist and be another queue (INVALID_ARGUMENT). Returns the stored
  // queue and whether it was created now. An existing queue with the same
  // effective configuration is returned unchanged (created = false); with a
  // different one the call fails with ALREADY_EXISTS.
  virtual absl::StatusOr<std::pair<QueueInfo, bool>> CreateQueue(
      absl::string_view name, QueueConfig config) = 0;
  virtual absl::StatusOr<QueueInfo> GetQueue(absl::string_view name) = 0;
  // Changes a queue's configuration: `edit` is applied to a copy of the
  // configuration in force, then the result is normalized and checked as by
  // CreateQueue (INVALID_ARGUMENT, nothing changed) and stored. Leases
  // already handed out and delays of messages already sent keep their
  // times; everything else applies from the next call on. Returns the
  // queue as updated.
  virtual absl::StatusOr<QueueInfo> UpdateQueue(
      absl::string_view name,
      const std::function<void(QueueConfig&)>& edit) = 0;
  // Queues in name order, starting after `start_after`, at most `limit`.
  virtual absl::StatusOr<std::vector<QueueInfo>> ListQueues(
      absl::string_view prefix, absl::string_view start_after, int limit) = 0;
  // Deletes the queue and all its messages. Pending receivers get NOT_FOUND.
  // FAILED_PRECONDITION while another queue uses it as its dead-letter queue.
  virtual absl::Status DeleteQueue(absl::string_view name) = 0;
  // Removes every message; returns how many were removed. Offsets go on
  // from where they were.
  virtual absl::StatusOr<uint64_t> PurgeQueue(absl::string_view name) = 0;
  // Stats of one consumer group (empty: the default group) on the queue;
  // sent_total and next_offset are the queue's.
  virtual absl::StatusOr<QueueStats> GetQueueStats(absl::string_view name,
                                                   absl::string_view group) = 0;

  // --- Consumer groups. Every group sees every message; inside a group each
  // message is leased to one consumer at a time. ---

  // Creates a group that starts delivering at `start` (clamped to the
  // earliest retained message). ALREADY_EXISTS if the name is taken;
  // INVALID_ARGUMENT for an offset past the end or a time in the future.
  virtual absl::StatusOr<GroupInfo> CreateGroup(absl::string_view queue,
                                                absl::string_view group,
                                                const LogPosition& start) = 0;
  // Deletes a group and its leases; the default group cannot be deleted
  // (FAILED_PRECONDITION).
  virtual absl::Status DeleteGroup(absl::string_view queue,
                                   absl::string_view group) = 0;
  // Every group of the queue, the default group first, then by name.
  virtual absl::StatusOr<std::vector<GroupInfo>> ListGroups(
      absl::string_view queue) = 0;
  // Moves the group's cursor to `to` (clamped to the earliest retained
  // message): messages from there on are delivered to the group again, also
  // ones it had deleted. Its leases are dropped, their receipts void.
  virtual absl::StatusOr<GroupInfo> SeekGroup(absl::string_view queue,
                                              absl::string_view group,
                                              const LogPosition& to) = 0;

  // Moves up to `max_messages` messages out of dead-letter queue `dlq` (those
  // its default group has neither deleted nor leased, oldest first): each is
  // appended to `to_queue`, or when that is empty to the queue it came from,
  // and deleted from `dlq` in the same atomic write. Returns how many moved.
  // FAILED_PRECONDITION if `dlq` is no queue's dead-letter queue.
  virtual absl::StatusOr<uint64_t> Redrive(absl::string_view dlq,
                                           absl::string_view to_queue,
                                           int max_messages) = 0;

  // Returns retained messages in offset order from options.from, without
  // leasing them: a stream reader's view of the log.
  virtual absl::StatusOr<ReadResult> Read(absl::string_view queue,
                                          const ReadOptions& options) = 0;

  // Applies retention (max age, keep-deleted-for) to every queue now. The
  // engine also does this by itself about once a second.
  virtual absl::Status RunRetention() = 0;

  // Starts shutting down: every pending long poll ends at once with
  // UNAVAILABLE, and so does every call made from now on. Calls already
  // running finish normally. Call before stopping the RPC server so that it
  // drains quickly; the destructor does the rest.
  virtual void BeginShutdown() = 0;

  // Storage size over all queues.
  virtual StorageStats GetStorageStats() = 0;
  // Flushes and fully compacts storage now, dropping deleted data. RocksDB
  // also compacts by itself in the background; this is for operators and
  // tests. Blocks until done.
  virtual absl::Status CompactStorage() = 0;

  // Appends `entries` atomically: all or none. Returns their offsets, in
  // order. Durable per the engine's Durability when it returns.
  virtual absl::StatusOr<std::vector<uint64_t>> Send(
      absl::string_view queue, absl::Span<const SendEntry> entries) = 0;

  // Send without blocking the caller: `done` runs once with what Send would
  // return, on an engine thread (or on this thread when the call fails
  // before anything is written). Writes of concurrent SendAsync calls are
  // committed together. `done` must be quick: it runs on the thread that
  // commits every queue's writes.
  virtual void SendAsync(absl::string_view queue,
                         absl::Span<const SendEntry> entries,
                         SendCallback done) = 0;

  // Leases up to options.max_messages ready messages; returns at once, with
  // an empty vector when none is ready. Leases are durable when it returns.
  virtual absl::StatusOr<std::vector<ReceivedMessage>> Receive(
      absl::string_view queue, const ReceiveOptions& options) = 0;

  // Like Receive, but when no message is ready waits up to `wait` for one
  // (at most 20 s) without holding a thread, and does not wait for the
  // leases' write either: it goes through the storage's commit thread like
  // SendAsync's. `done` runs exactly once, on the storage's commit thread,
  // an engine thread or the calling thread, and must not block. The
  // returned waiter may be used to cancel; it may be dropped.
  virtual std::shared_ptr<ReceiveWaiter> ReceiveAsync(
      absl::string_view queue, const ReceiveOptions& options,
      absl::Duration wait, ReceiveCallback done) = 0;

  // Deletes `receipts` (0..1000, as Delete) and receives as ReceiveAsync
  // does, in one call: a consumer acknowledges its last batch and asks for
  // the next. Everything that can be checked up front is checked before
  // anything is deleted: the queue, the options, the group, the wait and the
  // number of receipts; a call refused for them changes nothing. The
  // deletes' write is queued before the receive looks, so the two usually
  // share one commit (one fsync in sync mode); the messages being deleted
  // are never leased by it. `done` runs once both are durable, exactly
  // once, as for ReceiveAsync. When the deletes' write fails, `done` gets
  // that error and what the receive leased is released again. When the
  // receive fails (cancelled through the waiter, the queue or group deleted
  // meanwhile, shutdown), `done` gets its error and the deletes stay
  // applied; deleting them again is harmless (OK for a message already
  // deleted).
  virtual std::shared_ptr<ReceiveWaiter> DeleteAndReceiveAsync(
      absl::string_view queue, absl::Span<const std::string> receipts,
      const ReceiveOptions& options, absl::Duration wait,
      DeleteAndReceiveCallback done) = 0;

  // Starts a push consumer of `queue`'s group options.group (see
  // Subscription): NOT_FOUND for an unknown queue or group, INVALID_ARGUMENT
  // for a bad visibility timeout. It delivers nothing until given credit.
  // BeginShutdown releases the leases of every open subscription and ends
  // it with UNAVAILABLE.
  virtual absl::StatusOr<std::unique_ptr<Subscription>> Subscribe(
      absl::string_view queue, const SubscribeOptions& options,
      SubscriptionCallback deliver) = 0;

  // Deletes leased messages by receipt. The outer status is for the whole
  // call (unknown queue, bad batch size); the vector has one status per
  // receipt: OK (also for a message already deleted), INVALID_ARGUMENT for a
  // malformed receipt or one of another queue, FAILED_PRECONDITION when the
  // message has been leased again since the receipt was issued.
  virtual absl::StatusOr<std::vector<absl::Status>> Delete(
      absl::string_view queue, absl::Span<const std::string> receipts) = 0;

  // Delete without blocking the caller: `done` runs once with what Delete
  // would return, on an engine thread (or on this thread when nothing needs
  // writing). Must be quick, as for SendAsync.
  using DeleteCallback =
      std::function<void(absl::StatusOr<std::vector<absl::Status>>)>;
  virtual void DeleteAsync(absl::string_view queue,
                           absl::Span<const std::string> receipts,
                           DeleteCallback done) = 0;

  // Changes lease deadlines by receipt; statuses as for Delete, plus
  // FAILED_PRECONDITION for a message already deleted.
  virtual absl::StatusOr<std::vector<absl::Status>> ChangeVisibility(
      absl::string_view queue, absl::Span<const VisibilityChange> changes) = 0;
};

}  // namespace weir

#endif  // WEIR_ENGINE_ENGINE_H_
