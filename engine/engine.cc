#include "engine/engine.h"

#include <atomic>
#include <utility>

#include "absl/container/btree_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/coding.h"
#include "engine/dispatcher.h"
#include "engine/key_codec.h"
#include "engine/queue.h"
#include "engine/storage.h"
#include "engine/subscription.h"
#include "rocksdb/iterator.h"

namespace weir {
namespace {

constexpr absl::Duration kRetentionInterval = absl::Seconds(1);

// A name no queue can have is bad input, reported without echoing it
// whole: the name may be megabytes long, and the status message travels in
// gRPC metadata, which clients limit to a few KiB.
absl::Status QueueNotFound(absl::string_view name) {
  if (absl::Status s = ValidateQueueName(name); !s.ok()) return s;
  return absl::NotFoundError(absl::StrCat("queue ", name, " not found"));
}

// Makes `messages`, just leased, ready again at once. Best effort: a lease
// that is not released lapses anyway. Writes and waits: not on the
// storage's commit thread.
void ReleaseLeases(Queue& q, const std::vector<ReceivedMessage>& messages) {
  std::vector<VisibilityChange> release;
  release.reserve(messages.size());
  for (const ReceivedMessage& m : messages) {
    release.push_back({m.receipt_handle, absl::ZeroDuration()});
  }
  (void)q.ChangeVisibility(release);
}

// A long-poll receive parked on a queue. Its attempts run one at a time:
// the first on the caller's thread, later ones on the dispatcher when the
// queue wakes it, its wait ends, or it is cancelled.
class PendingReceive : public QueueWaiter,
                       public ReceiveWaiter,
                       public std::enable_shared_from_this<PendingReceive> {
 public:
  PendingReceive(std::weak_ptr<Queue> queue, ReceiveOptions options,
                 absl::Time expire, ReceiveCallback done,
                 Dispatcher* dispatcher, Clock* clock)
      : queue_(std::move(queue)),
        options_(std::move(options)),
        expire_(expire),
        dispatcher_(dispatcher),
        clock_(clock),
        done_(std::move(done)) {}

  // The first attempt runs on the caller's thread (an RPC thread): a pass
  // does not wait for its write, whose completion (and `done`) comes on the
  // storage's commit thread.
  void Start() {
    std::weak_ptr<PendingReceive> weak = shared_from_this();
    if (expire_ > clock_->Now()) {
      dispatcher_->At(expire_, [weak] {
        if (auto self = weak.lock()) self->Wake();
      });
    }
    {
      absl::MutexLock lock(&mu_);
      state_ = kScheduled;
    }
    Attempt();
  }

  bool OnPark() override {
    absl::MutexLock lock(&mu_);
    if (rewake_) return false;
    state_ = kParked;
    return true;
  }

  bool Parked() override {
    absl::MutexLock lock(&mu_);
    return state_ == kParked;
  }

  void Wake() override {
    absl::MutexLock lock(&mu_);
    if (state_ == kParked) {
      state_ = kScheduled;
      dispatcher_->Run([self = shared_from_this()] { self->Attempt(); });
    } else if (state_ == kRunning) {
      rewake_ = true;
    }
  }

  Claim TryClaim() override {
    absl::MutexLock lock(&mu_);
    if (state_ != kParked || cancelled_) return {};
    // Like a pass in progress: a wake or the end of the wait meanwhile only
    // marks rewake_, and Handoff finishes or looks again.
    state_ = kRunning;
    return {options_.max_messages, options_.visibility_timeout};
  }

  void Handoff(std::vector<ReceivedMessage> messages) override {
    std::shared_ptr<Queue> q = queue_.lock();
    if (q == nullptr) {
      Finish(absl::NotFoundError("queue not found"));
      return;
    }
    Queue::ReceivePass pass;
    pass.messages = std::move(messages);
    AfterPass(std::move(q), /*can_wait=*/true, std::move(pass));
  }

  void Cancel() override {
    {
      absl::MutexLock lock(&mu_);
      cancelled_ = true;
    }
    Wake();
  }

 private:
  enum State { kRunning, kParked, kScheduled, kDone };

  // One pass over the queue. A pass that parks returns: Wake schedules the
  // next on an engine thread.
  void Attempt() {
    bool cancelled;
    {
      absl::MutexLock lock(&mu_);
      if (state_ == kDone) return;
      state_ = kRunning;
      cancelled = cancelled_;
      rewake_ = false;
    }
    if (cancelled) {
      Finish(absl::CancelledError("receive cancelled"));
      return;
    }
    std::shared_ptr<Queue> q = queue_.lock();
    if (q == nullptr) {
      Finish(absl::NotFoundError("queue not found"));
      return;
    }
    const bool can_wait = clock_->Now() < expire_;
    q->ReceiveOnceAsync(
        options_, can_wait ? shared_from_this() : nullptr,
        [self = shared_from_this(), q, can_wait](Queue::ReceivePass pass) {
          self->AfterPass(std::move(q), can_wait, std::move(pass));
        });
  }

  // Runs where the pass completed: on Attempt's thread, or on the storage's
  // commit thread, which must not be held up (nor write and wait there).
  void AfterPass(std::shared_ptr<Queue> q, bool can_wait,
                 Queue::ReceivePass pass) {
    if (pass.parked) return;
    absl::StatusOr<std::vector<ReceivedMessage>>& r = pass.messages;
    if (r.ok() && r->empty() && (pass.more || can_wait)) {
      // More of the log to look at, or found nothing but was woken
      // meanwhile (so not parked): look again.
      dispatcher_->Run([self = shared_from_this()] { self->Attempt(); });
      return;
    }
    bool cancelled;
    {
      absl::MutexLock lock(&mu_);
      cancelled = cancelled_;
    }
    if (cancelled && r.ok() && !r->empty()) {
      // Releasing the leases writes and waits: on an engine thread.
      dispatcher_->Run([self = shared_from_this(), q = std::move(q),
                        r = std::move(r)]() mutable {
        self->ReleaseIfCancelled(*q, &r);
        self->Finish(std::move(r));
      });
      return;
    }
    Finish(std::move(r));
  }

  // A receiver that went away while its messages were being leased gets
  // nothing; the messages are released for others at once.
  void ReleaseIfCancelled(Queue& q,
                          absl::StatusOr<std::vector<ReceivedMessage>>* r) {
    {
      absl::MutexLock lock(&mu_);
      if (!cancelled_ || !r->ok() || (*r)->empty()) return;
    }
    ReleaseLeases(q, **r);
    *r = absl::CancelledError("receive cancelled");
  }

  void Finish(absl::StatusOr<std::vector<ReceivedMessage>> r) {
    ReceiveCallback done;
    {
      absl::MutexLock lock(&mu_);
      state_ = kDone;
      done = std::move(done_);
    }
    if (done) done(std::move(r));
  }

  const std::weak_ptr<Queue> queue_;
  const ReceiveOptions options_;
  const absl::Time expire_;
  Dispatcher* const dispatcher_;
  Clock* const clock_;

  absl::Mutex mu_;
  ReceiveCallback done_ ABSL_GUARDED_BY(mu_);
  State state_ ABSL_GUARDED_BY(mu_) = kRunning;
  bool rewake_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
};

// Waits for both halves of a DeleteAndReceiveAsync call and answers once.
// A write error fails the deletes receipt by receipt (the call answers as
// Delete does). The deletes fail whole only when the queue closed under
// them (it was deleted), and then the receive has almost always failed too;
// should it have leased anything, that is released again.
class DeleteAndReceiveJoin {
 public:
  DeleteAndReceiveJoin(std::weak_ptr<Queue> queue, Dispatcher* dispatcher,
                       DeleteAndReceiveCallback done)
      : queue_(std::move(queue)),
        dispatcher_(dispatcher),
        done_(std::move(done)) {}

  // Each runs once, on whichever thread the half completed on.
  void Deleted(absl::StatusOr<std::vector<absl::Status>> r) {
    {
      absl::MutexLock lock(&mu_);
      deletes_ = std::move(r);
      if (--remaining_ > 0) return;
    }
    Finish();
  }
  void Received(absl::StatusOr<std::vector<ReceivedMessage>> r) {
    {
      absl::MutexLock lock(&mu_);
      messages_ = std::move(r);
      if (--remaining_ > 0) return;
    }
    Finish();
  }

 private:
  void Finish() {
    absl::StatusOr<std::vector<absl::Status>> deletes;
    absl::StatusOr<std::vector<ReceivedMessage>> messages;
    {
      absl::MutexLock lock(&mu_);
      deletes = std::move(deletes_);
      messages = std::move(messages_);
    }
    if (!deletes.ok()) {
      if (messages.ok() && !messages->empty()) {
        // On an engine thread: this may run on the commit thread.
        dispatcher_->Run([weak = queue_, leased = *std::move(messages)] {
          if (std::shared_ptr<Queue> q = weak.lock()) ReleaseLeases(*q, leased);
        });
      }
      done_(deletes.status());
      return;
    }
    if (!messages.ok()) {
      done_(messages.status());
      return;
    }
    done_(DeleteAndReceiveResult{*std::move(deletes), *std::move(messages)});
  }

  const std::weak_ptr<Queue> queue_;
  Dispatcher* const dispatcher_;
  const DeleteAndReceiveCallback done_;
  absl::Mutex mu_;
  int remaining_ ABSL_GUARDED_BY(mu_) = 2;
  absl::StatusOr<std::vector<absl::Status>> deletes_ ABSL_GUARDED_BY(mu_);
  absl::StatusOr<std::vector<ReceivedMessage>> messages_ ABSL_GUARDED_BY(mu_);
};

// The caller's end of a subscription: closing it (or dropping it) stops the
// core, which may live on a little in queued engine tasks.
class SubscriptionHandle : public Subscription {
 public:
  explicit SubscriptionHandle(std::shared_ptr<SubscriptionCore> core)
      : core_(std::move(core)) {}
  ~SubscriptionHandle() override { core_->Close(nullptr); }

  absl::Status AddCredit(int64_t n) override { return core_->AddCredit(n); }
  void DeliveryDone() override { core_->DeliveryDone(); }
  void Apply(
      SubscriptionOps ops,
      std::function<void(absl::StatusOr<SubscriptionAck>)> done) override {
    core_->Apply(std::move(ops), std::move(done));
  }
  void Close(std::function<void()> closed) override {
    core_->Close(std::move(closed));
  }

 private:
  const std::shared_ptr<SubscriptionCore> core_;
};

class EngineImpl : public Engine {
 public:
  EngineImpl(const EngineOptions& options, std::unique_ptr<Storage> storage)
      : clock_(options.clock != nullptr ? options.clock : Clock::Real()),
        storage_(std::move(storage)),
        dispatcher_(
            std::make_unique<Dispatcher>(clock_, options.delivery_threads)) {}

  ~EngineImpl() override {
    BeginShutdown();
    // Writes queued by the async calls complete (their callbacks may use the
    // dispatcher), then the dispatcher runs what is queued and joins.
    // dispatcher_ must keep pointing at the dispatcher meanwhile: a task
    // still running may schedule another (the retention task reschedules
    // itself), so the pointer is not reset while the threads run.
    storage_->DrainAsyncWrites();
    dispatcher_->Shutdown();
    absl::MutexLock lock(&mu_);
    queues_.clear();
  }

  void BeginShutdown() override {
    closing_ = true;
    // Subscriptions first, while their queues still take the releases.
    std::vector<std::weak_ptr<SubscriptionCore>> subscriptions;
    {
      absl::MutexLock lock(&subscriptions_mu_);
      subscriptions.swap(subscriptions_);
    }
    for (auto& weak : subscriptions) {
      if (std::shared_ptr<SubscriptionCore> sub = weak.lock()) sub->Shutdown();
    }
    std::vector<std::shared_ptr<Queue>> queues;
    {
      absl::MutexLock lock(&mu_);
      for (auto& [name, q] : queues_) queues.push_back(q);
    }
    for (auto& q : queues) q->Close();
  }

  absl::Status Load() {
    rocksdb::DB* db = storage_->db();
    std::string next;
    rocksdb::Status s = db->Get(rocksdb::ReadOptions(), storage_->meta(),
                                keys::NextQueueId(), &next);
    if (s.ok()) {
      if (next.size() != 8) return absl::DataLossError("corrupted queue id");
      next_queue_id_ = DecodeFixed64BE(next.data());
    } else if (!s.IsNotFound()) {
      return FromRocks(s, "load queue ids");
    }

    const std::string begin = "Q";
    const std::string end = keys::PrefixSuccessor(begin);
    rocksdb::Slice upper(end);
    rocksdb::ReadOptions ro;
    ro.iterate_upper_bound = &upper;
    std::unique_ptr<rocksdb::Iterator> it(
        db->NewIterator(ro, storage_->meta()));
    absl::MutexLock lock(&mu_);
    for (it->Seek(begin); it->Valid(); it->Next()) {
      QueueRecord rec;
      absl::Status ds = DecodeQueue(
          absl::string_view(it->value().data(), it->value().size()), &rec);
      if (!ds.ok()) return ds;
      auto q = NewQueue(rec);
      if (absl::Status ls = q->Load(); !ls.ok()) {
        return absl::Status(
            ls.code(), absl::StrCat("queue ", rec.name, ": ", ls.message()));
      }
      queues_[rec.name] = std::move(q);
      next_queue_id_ = std::max(next_queue_id_, rec.id + 1);
    }
    return FromRocks(it->status(), "load queues");
  }

  absl::StatusOr<std::pair<QueueInfo, bool>> CreateQueue(
      absl::string_view name, QueueConfig config) override {
    if (absl::Status s = ValidateQueueName(name); !s.ok()) return s;
    if (absl::Status s = NormalizeQueueConfig(&config); !s.ok()) return s;
    if (closing_.load()) {
      return absl::UnavailableError("the server is shutting down");
    }
    absl::MutexLock lock(&mu_);
    if (absl::Status s = CheckDeadLetterQueueLocked(name, config); !s.ok()) {
      return s;
    }
    if (auto it = queues_.find(name); it != queues_.end()) {
      QueueInfo info = it->second->info();
      if (info.config != config) {
        return absl::AlreadyExistsError(absl::StrCat(
            "queue ", name, " already exists with a different configuration"));
      }
      return std::make_pair(std::move(info), false);
    }
    QueueRecord rec;
    rec.id = next_queue_id_;
    rec.name = std::string(name);
    rec.create_time_us = absl::ToUnixMicros(clock_->Now());
    rec.config = config;
    rocksdb::WriteBatch batch;
    std::string next;
    PutFixed64BE(&next, rec.id + 1);
    batch.Put(storage_->meta(), keys::NextQueueId(), next);
    Queue::WriteNew(rec, *storage_, &batch);
    if (absl::Status s = storage_->Write(&batch); !s.ok()) return s;
    next_queue_id_ = rec.id + 1;
    auto q = NewQueue(rec);
    if (absl::Status s = q->Load(); !s.ok()) return s;
    queues_[rec.name] = q;
    return std::make_pair(q->info(), true);
  }

  absl::StatusOr<QueueInfo> UpdateQueue(
      absl::string_view name,
      const std::function<void(QueueConfig&)>& edit) override {
    if (closing_.load()) {
      return absl::UnavailableError("the server is shutting down");
    }
    // Held throughout: updates of a queue are serialized, and the
    // dead-letter queue checked cannot be deleted meanwhile.
    absl::MutexLock lock(&mu_);
    auto it = queues_.find(name);
    if (it == queues_.end()) return QueueNotFound(name);
    QueueConfig config = it->second->config();
    edit(config);
    if (absl::Status s = NormalizeQueueConfig(&config); !s.ok()) return s;
    if (absl::Status s = CheckDeadLetterQueueLocked(name, config); !s.ok()) {
      return s;
    }
    if (absl::Status s = it->second->UpdateConfig(config); !s.ok()) return s;
    return it->second->info();
  }

  absl::StatusOr<QueueInfo> GetQueue(absl::string_view name) override {
    std::shared_ptr<Queue> q = Find(name);
    if (q == nullptr) return QueueNotFound(name);
    return q->info();
  }

  absl::StatusOr<std::vector<QueueInfo>> ListQueues(
      absl::string_view prefix, absl::string_view start_after,
      int limit) override {
    std::vector<QueueInfo> out;
    absl::ReaderMutexLock lock(&mu_);
    auto it = start_after.empty() || start_after < prefix
                  ? queues_.lower_bound(prefix)
                  : queues_.upper_bound(start_after);
    for (; it != queues_.end() && static_cast<int>(out.size()) < limit; ++it) {
      if (!absl::StartsWith(it->first, prefix)) break;
      out.push_back(it->second->info());
    }
    return out;
  }

  absl::Status DeleteQueue(absl::string_view name) override {
    // Held throughout, so that no queue can name this one as its dead-letter
    // queue between the check and the drop.
    absl::MutexLock lock(&mu_);
    auto it = queues_.find(name);
    if (it == queues_.end()) return QueueNotFound(name);
    if (const Queue* user = DeadLetterUserLocked(name); user != nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat("queue ", name, " is the dead-letter queue of queue ",
                       user->name(), "; delete that queue first"));
    }
    std::shared_ptr<Queue> q = it->second;
    rocksdb::WriteBatch batch;
    if (absl::Status s = q->Drop(&batch); !s.ok()) {
      return s.code() == absl::StatusCode::kNotFound ? QueueNotFound(name) : s;
    }
    queues_.erase(it);
    return absl::OkStatus();
  }

  absl::StatusOr<uint64_t> PurgeQueue(absl::string_view name) override {
    std::shared_ptr<Queue> q = Find(name);
    if (q == nullptr) return QueueNotFound(name);
    return q->Purge();
  }

  absl::StatusOr<QueueStats> GetQueueStats(absl::string_view name,
                                           absl::string_view group) override {
    std::shared_ptr<Queue> q = Find(name);
    if (q == nullptr) return QueueNotFound(name);
    return q->Stats(group);
  }

  absl::StatusOr<GroupInfo> CreateGroup(absl::string_view queue,
                                        absl::string_view group,
                                        const LogPosition& start) override {
    std::shared_ptr<Queue> q = Find(queue);
    if (q == nullptr) return QueueNotFound(queue);
    return q->CreateGroup(group, start);
  }

  absl::Status DeleteGroup(absl::string_view queue,
                           absl::string_view group) override {
    std::shared_ptr<Queue> q = Find(queue);
    if (q == nullptr) return QueueNotFound(queue);
    return q->DeleteGroup(group);
  }

  absl::StatusOr<std::vector<GroupInfo>> ListGroups(
      absl::string_view queue) override {
    std::shared_ptr<Queue> q = Find(queue);
    if (q == nullptr) return QueueNotFound(queue);
    return q->ListGroups();
  }

  absl::StatusOr<GroupInfo> SeekGroup(absl::string_view queue,
                                      absl::string_view group,
                                      const LogPosition& to) override {
    std::shared_ptr<Queue> q = Find(queue);
    if (q == nullptr) return QueueNotFound(queue);
    return q->SeekGroup(group, to);
  }

  absl::StatusOr<uint64_t> Redrive(absl::string_view dlq,
                                   absl::string_view to_queue,
                                   int max_messages) override {
    std::shared_ptr<Queue> q;
    {
      absl::ReaderMutexLock lock(&mu_);
      auto it = queues_.find(dlq);
      if (it == queues_.end()) return QueueNotFound(dlq);
      if (DeadLetterUserLocked(dlq) == nullptr) {
        return absl::FailedPreconditionError(absl::StrCat(
            "queue ", dlq, " is not the dead-letter queue of any queue"));
      }
      q = it->second;
      if (!to_queue.empty() && queues_.find(to_queue) == queues_.end()) {
        return QueueNotFound(to_queue);
      }
    }
    return q->Redrive(to_queue, max_messages);
  }

  absl::StatusOr<ReadResult> Read(absl::string_view queue,
                                  const ReadOptions& options) override {
    std::shared_ptr<Queue> q = Find(queue);
    if (q == nullptr) return QueueNotFound(queue);
    return q->Read(options);
  }

  absl::Status RunRetention() override {
    std::vector<std::shared_ptr<Queue>> queues;
    {
      absl::ReaderMutexLock lock(&mu_);
      for (auto& [name, q] : queues_) queues.push_back(q);
    }
    absl::Status first_error;
    for (auto& q : queues) {
      absl::Status s = q->ApplyRetention();
      // A queue deleted meanwhile is not an error.
      if (!s.ok() && s.code() != absl::StatusCode::kNotFound &&
          first_error.ok()) {
        first_error = s;
      }
    }
    return first_error;
  }

  StorageStats GetStorageStats() override {
    StorageStats stats;
    storage_->SizeBytes(&stats.sst_bytes, &stats.memtable_bytes);
    stats.writes = storage_->batches_written();
    return stats;
  }

  absl::Status CompactStorage() override { return storage_->CompactAll(); }

  // Runs retention about once a second, on a dispatcher thread.
  void ScheduleRetention() {
    dispatcher_->At(clock_->Now() + kRetentionInterval, [this] {
      (void)RunRetention();
      if (!closing_.load()) ScheduleRetention();
    });
  }

  absl::StatusOr<std::vector<uint64_t>> Send(
      absl::string_view queue, absl::Span<const SendEntry> entries) override {
    std::shared_ptr<Queue> q = Find(queue);
    if (q == nullptr) return QueueNotFound(queue);
    return q->Send(entries);
  }

  void SendAsync(absl::string_view queue, absl::Span<const SendEntry> entries,
                 SendCallback done) override {
    std::shared_ptr<Queue> q = Find(queue);
    if (q == nullptr) {
      done(QueueNotFound(queue));
      return;
    }
    q->SendAsync(entries, std::move(done));
  }

  absl::StatusOr<std::vector<ReceivedMessage>> Receive(
      absl::string_view queue, const ReceiveOptions& options) override {
    std::shared_ptr<Queue> q = Find(queue);
    if (q == nullptr) return QueueNotFound(queue);
    bool parked;
    return q->Receive(options, nullptr, &parked);
  }

  std::shared_ptr<ReceiveWaiter> ReceiveAsync(absl::string_view queue,
                                              const ReceiveOptions& options,
                                              absl::Duration wait,
                                              ReceiveCallback done) override {
    std::shared_ptr<Queue> q = Find(queue);
    absl::Status refused =
        q == nullptr ? QueueNotFound(queue) : CheckWait(wait);
    if (!refused.ok()) {
      done(std::move(refused));
      return nullptr;
    }
    return StartReceive(std::move(q), options, wait, std::move(done));
  }

  std::shared_ptr<ReceiveWaiter> DeleteAndReceiveAsync(
      absl::string_view queue, absl::Span<const std::string> receipts,
      const ReceiveOptions& options, absl::Duration wait,
      DeleteAndReceiveCallback done) override {
    std::shared_ptr<Queue> q = Find(queue);
    auto check = [&]() -> absl::Status {
      if (q == nullptr) return QueueNotFound(queue);
      if (absl::Status s = CheckWait(wait); !s.ok()) return s;
      if (receipts.size() > Limits::kMaxBatchEntries) {
        return absl::InvalidArgumentError(
            absl::StrCat("at most ", Limits::kMaxBatchEntries,
                         " receipts to delete, got ", receipts.size()));
      }
      return q->CheckReceive(options);
    };
    if (absl::Status refused = check(); !refused.ok()) {
      done(std::move(refused));
      return nullptr;
    }
    // The deletes' write is queued first and the receive's pass runs right
    // after it, so that both usually share one commit. The messages being
    // deleted cannot be leased meanwhile: a change in flight takes a lease
    // out of the ready and deadline indexes.
    auto join = std::make_shared<DeleteAndReceiveJoin>(q, dispatcher_.get(),
                                                       std::move(done));
    if (receipts.empty()) {
      join->Deleted(std::vector<absl::Status>());
    } else {
      q->DeleteAsync(receipts,
                     [join](absl::StatusOr<std::vector<absl::Status>> r) {
                       join->Deleted(std::move(r));
                     });
    }
    return StartReceive(std::move(q), options, wait,
                        [join](absl::StatusOr<std::vector<ReceivedMessage>> r) {
                          join->Received(std::move(r));
                        });
  }

  static absl::Status CheckWait(absl::Duration wait) {
    if (wait < absl::ZeroDuration() || wait > Limits::kMaxWaitTime) {
      return absl::InvalidArgumentError(
          absl::StrCat("wait time ", absl::FormatDuration(wait),
                       " is out of range [0, 20s]"));
    }
    return absl::OkStatus();
  }

  // A checked receive's first pass, on this thread. With no wait, it never
  // parks: it looks once.
  std::shared_ptr<ReceiveWaiter> StartReceive(std::shared_ptr<Queue> q,
                                              const ReceiveOptions& options,
                                              absl::Duration wait,
                                              ReceiveCallback done) {
    auto pending = std::make_shared<PendingReceive>(
        std::move(q), options, clock_->Now() + wait, std::move(done),
        dispatcher_.get(), clock_);
    pending->Start();
    return pending;
  }

  absl::StatusOr<std::unique_ptr<Subscription>> Subscribe(
      absl::string_view queue, const SubscribeOptions& options,
      SubscriptionCallback deliver) override {
    std::shared_ptr<Queue> q = Find(queue);
    if (q == nullptr) return QueueNotFound(queue);
    if (options.visibility_timeout.has_value() &&
        (*options.visibility_timeout <= absl::ZeroDuration() ||
         *options.visibility_timeout > Limits::kMaxVisibilityTimeout)) {
      return absl::InvalidArgumentError(
          absl::StrCat("visibility timeout ",
                       absl::FormatDuration(*options.visibility_timeout),
                       " is out of range (0, 12h]"));
    }
    if (absl::Status s = q->CheckGroup(options.group); !s.ok()) return s;
    ReceiveOptions receive;
    receive.group = options.group;
    receive.visibility_timeout = options.visibility_timeout;
    auto core = std::make_shared<SubscriptionCore>(
        q, std::move(receive), dispatcher_.get(), clock_, std::move(deliver));
    {
      absl::MutexLock lock(&subscriptions_mu_);
      if (closing_.load()) {
        return absl::UnavailableError("the server is shutting down");
      }
      // Forget closed ones once the list has doubled: amortized O(1).
      if (subscriptions_.size() >= subscriptions_prune_at_) {
        std::vector<std::weak_ptr<SubscriptionCore>> live;
        for (auto& weak : subscriptions_) {
          std::shared_ptr<SubscriptionCore> sub = weak.lock();
          if (sub != nullptr && !sub->closed()) live.push_back(weak);
        }
        subscriptions_.swap(live);
        subscriptions_prune_at_ =
            std::max<size_t>(64, 2 * subscriptions_.size());
      }
      subscriptions_.push_back(core);
    }
    return std::make_unique<SubscriptionHandle>(std::move(core));
  }

  absl::StatusOr<std::vector<absl::Status>> Delete(
      absl::string_view queue,
      absl::Span<const std::string> receipts) override {
    std::shared_ptr<Queue> q = Find(queue);
    if (q == nullptr) return QueueNotFound(queue);
    return q->Delete(receipts);
  }

  void DeleteAsync(absl::string_view queue,
                   absl::Span<const std::string> receipts,
                   DeleteCallback done) override {
    std::shared_ptr<Queue> q = Find(queue);
    if (q == nullptr) {
      done(QueueNotFound(queue));
      return;
    }
    q->DeleteAsync(receipts, std::move(done));
  }

  absl::StatusOr<std::vector<absl::Status>> ChangeVisibility(
      absl::string_view queue,
      absl::Span<const VisibilityChange> changes) override {
    std::shared_ptr<Queue> q = Find(queue);
    if (q == nullptr) return QueueNotFound(queue);
    return q->ChangeVisibility(changes);
  }

 private:
  std::shared_ptr<Queue> NewQueue(const QueueRecord& rec) {
    return std::make_shared<Queue>(
        storage_.get(), clock_, dispatcher_.get(),
        [this](absl::string_view name) { return Find(name); }, rec);
  }

  // INVALID_ARGUMENT unless `config`'s dead-letter queue (if any) exists
  // and is not queue `name` itself.
  absl::Status CheckDeadLetterQueueLocked(absl::string_view name,
                                          const QueueConfig& config)
      ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    if (config.dead_letter_queue.empty()) return absl::OkStatus();
    if (config.dead_letter_queue == name) {
      return absl::InvalidArgumentError(
          absl::StrCat("queue ", name, " cannot be its own dead-letter queue"));
    }
    auto dlq = queues_.find(config.dead_letter_queue);
    if (dlq == queues_.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("dead-letter queue ", config.dead_letter_queue,
                       " does not exist; create it first"));
    }
    // Dead letters must not go round in a circle: a chain of dead-letter
    // queues ends somewhere.
    for (size_t hops = 0; hops < queues_.size(); ++hops) {
      const std::string next = dlq->second->config().dead_letter_queue;
      if (next.empty()) return absl::OkStatus();
      if (next == name) {
        return absl::InvalidArgumentError(absl::StrCat(
            "dead-letter queue ", config.dead_letter_queue, " of queue ", name,
            " leads back to ", name, " through its own dead-letter queues"));
      }
      dlq = queues_.find(next);
      if (dlq == queues_.end()) return absl::OkStatus();
    }
    return absl::OkStatus();
  }

  // A queue whose dead-letter queue is `name`, or null.
  const Queue* DeadLetterUserLocked(absl::string_view name)
      ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    for (const auto& [n, q] : queues_) {
      if (q->config().dead_letter_queue == name) return q.get();
    }
    return nullptr;
  }

  // Null for an unknown queue. Once shutting down, queues stay found but
  // answer UNAVAILABLE.
  std::shared_ptr<Queue> Find(absl::string_view name) {
    absl::ReaderMutexLock lock(&mu_);
    auto it = queues_.find(name);
    return it == queues_.end() ? nullptr : it->second;
  }

  Clock* const clock_;
  std::unique_ptr<Storage> storage_;
  // Declared after storage_: destroyed first, so its tasks never outlive
  // the database.
  std::unique_ptr<Dispatcher> dispatcher_;

  std::atomic<bool> closing_{false};
  absl::Mutex subscriptions_mu_;
  std::vector<std::weak_ptr<SubscriptionCore>> subscriptions_
      ABSL_GUARDED_BY(subscriptions_mu_);
  size_t subscriptions_prune_at_ ABSL_GUARDED_BY(subscriptions_mu_) = 64;
  absl::Mutex mu_;
  absl::btree_map<std::string, std::shared_ptr<Queue>, std::less<>> queues_
      ABSL_GUARDED_BY(mu_);
  uint64_t next_queue_id_ ABSL_GUARDED_BY(mu_) = 1;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Engine>> Engine::Open(
    const EngineOptions& options, const std::string& path) {
  StorageOptions so;
  so.sync = options.durability == Durability::kSync;
  so.wal_sync_interval = options.async_wal_sync_interval;
  so.create_if_missing = options.create_if_missing;
  so.memtable_budget_bytes = options.memtable_budget_bytes;
  so.env = options.env;
  so.after_write_for_test = options.after_blocking_write_for_test;
  absl::StatusOr<std::unique_ptr<Storage>> storage = Storage::Open(so, path);
  if (!storage.ok()) return storage.status();
  auto engine = std::make_unique<EngineImpl>(options, std::move(*storage));
  if (absl::Status s = engine->Load(); !s.ok()) return s;
  engine->ScheduleRetention();
  return engine;
}

}  // namespace weir
