#include "engine/queue.h"

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "engine/coding.h"
#include "engine/key_codec.h"
#include "engine/receipt.h"
#include "rocksdb/iterator.h"

namespace weir {
namespace {

// A Receive or Read answer stops growing past this many bytes (but always
// carries at least one message).
constexpr size_t kMaxAnswerBytes = 8 << 20;
// How often a delete floor, or the removal of messages below the logical
// floor, is written: after this many offsets, or after kFloorWriteInterval.
constexpr uint64_t kFloorWriteStep = 1024;
constexpr absl::Duration kFloorWriteInterval = absl::Seconds(1);
// A Receive looks at most this many offsets beyond what it returns (delayed
// messages it skips, holes).
constexpr int kMaxExtraScan = 1024;
// The sparse time index gets an entry at least this often.
constexpr uint64_t kTimeIndexStep = 1024;
constexpr absl::Duration kTimeIndexInterval = absl::Seconds(1);
// How long Redrive holds the messages it is moving; they come back by
// themselves after this should the server stop meanwhile.
constexpr absl::Duration kRedriveLease = absl::Minutes(1);

int64_t ToUs(absl::Time t) { return absl::ToUnixMicros(t); }
absl::Time FromUs(int64_t us) { return absl::FromUnixMicros(us); }
absl::string_view View(const rocksdb::Slice& s) {
  return absl::string_view(s.data(), s.size());
}

size_t MessageBytes(const std::string& body, const Attributes& attributes) {
  size_t n = body.size();
  for (const auto& [k, v] : attributes) n += k.size() + v.size();
  return n;
}

absl::Status ValidateVisibilityTimeout(absl::Duration d) {
  if (d < absl::ZeroDuration() || d > Limits::kMaxVisibilityTimeout) {
    return absl::InvalidArgumentError(
        absl::StrCat("visibility timeout ", absl::FormatDuration(d),
                     " is out of range [0, 12h]"));
  }
  return absl::OkStatus();
}

absl::Status ValidateBatchSize(size_t n, const char* what) {
  if (n == 0 || n > static_cast<size_t>(Limits::kMaxBatchEntries)) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " must have 1-", Limits::kMaxBatchEntries, " entries, got ", n));
  }
  return absl::OkStatus();
}

// Iterates the keys of one column family in [begin, end).
class RangeIterator {
 public:
  RangeIterator(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* cf,
                std::string begin, std::string end)
      : end_(std::move(end)), upper_(end_) {
    rocksdb::ReadOptions ro;
    ro.iterate_upper_bound = &upper_;
    it_.reset(db->NewIterator(ro, cf));
    it_->Seek(begin);
  }
  bool Valid() const { return it_->Valid(); }
  void Next() { it_->Next(); }
  void Seek(const std::string& key) { it_->Seek(key); }
  absl::string_view key() const { return View(it_->key()); }
  absl::string_view value() const { return View(it_->value()); }
  absl::Status status(const char* what) const {
    return FromRocks(it_->status(), what);
  }

 private:
  const std::string end_;
  rocksdb::Slice upper_;
  std::unique_ptr<rocksdb::Iterator> it_;
};

}  // namespace

Queue::Queue(Storage* storage, Clock* clock, Dispatcher* dispatcher,
             QueueLookup lookup, const QueueRecord& record)
    : storage_(storage),
      clock_(clock),
      dispatcher_(dispatcher),
      lookup_(std::move(lookup)),
      id_(record.id),
      name_(record.name),
      create_time_(FromUs(record.create_time_us)),
      config_(record.config) {}

void Queue::WriteNew(const QueueRecord& record, const Storage& storage,
                     rocksdb::WriteBatch* batch) {
  std::string id;
  PutFixed64BE(&id, record.id);
  batch->Put(storage.meta(), keys::QueueName(record.name), id);
  batch->Put(storage.meta(), keys::Queue(record.id), EncodeQueue(record));
  GroupRecord group;  // The default group: id 0, no name, from offset 0.
  batch->Put(storage.meta(), keys::Group(record.id, 0), EncodeGroup(group));
}

QueueConfig Queue::config() const {
  absl::MutexLock lock(&config_mu_);
  return config_;
}

absl::Status Queue::UpdateConfig(const QueueConfig& config) {
  QueueRecord rec;
  rec.id = id_;
  rec.name = name_;
  rec.create_time_us = ToUs(create_time_);
  rec.config = config;
  rocksdb::WriteBatch batch;
  batch.Put(storage_->meta(), keys::Queue(id_), EncodeQueue(rec));
  if (absl::Status s = storage_->Write(&batch); !s.ok()) return s;
  {
    absl::MutexLock lock(&config_mu_);
    config_ = config;
  }
  return absl::OkStatus();
}

QueueInfo Queue::info() const {
  return QueueInfo{name_, config(), create_time_};
}

GroupRecord Queue::RecordOf(const GroupState& g) {
  GroupRecord rec;
  rec.id = g.id();
  rec.name = g.name();
  rec.delete_floor = g.delete_floor();
  rec.cursor_base = g.delete_floor();
  rec.generation = g.generation();
  return rec;
}

absl::Status Queue::Load() {
  rocksdb::DB* db = storage_->db();
  absl::MutexLock lock(&mu_);

  // Groups.
  for (RangeIterator it(db, storage_->meta(), keys::GroupPrefix(id_),
                        keys::PrefixSuccessor(keys::GroupPrefix(id_)));
       it.Valid(); it.Next()) {
    GroupRecord rec;
    if (absl::Status s = DecodeGroup(it.value(), &rec); !s.ok()) return s;
    auto g = std::make_unique<Group>(GroupState(
        rec.id, rec.name, rec.generation, rec.delete_floor, rec.cursor_base));
    g->persisted_floor = rec.delete_floor;
    group_ids_[rec.name] = rec.id;
    next_group_id_ = std::max(next_group_id_, rec.id + 1);
    groups_[rec.id] = std::move(g);
  }
  if (groups_.find(0) == groups_.end()) {
    groups_[0] = std::make_unique<Group>(GroupState(0, "", 0, 0, 0));
    group_ids_[""] = 0;
  }
  {
    std::string v;
    rocksdb::Status s = db->Get(rocksdb::ReadOptions(), storage_->meta(),
                                keys::NextGroupId(id_), &v);
    if (s.ok() && v.size() == 4) {
      next_group_id_ = std::max(next_group_id_, DecodeFixed32BE(v.data()));
    } else if (!s.ok() && !s.IsNotFound()) {
      return FromRocks(s, "load group ids");
    }
  }

  // The stored messages: the first is the physical floor; one past the last
  // is the next offset, though never below what a group has passed (the last
  // messages may have been removed).
  uint64_t next = 0;
  bool any_stored = false;
  {
    RangeIterator first(db, storage_->messages(), keys::QueueBegin(id_),
                        keys::QueueEnd(id_));
    uint64_t qid, offset;
    if (first.Valid() && keys::ParseMessage(first.key(), &qid, &offset)) {
      any_stored = true;
      physical_floor_ = offset;
    }
    if (absl::Status s = first.status("load offsets"); !s.ok()) return s;
    std::unique_ptr<rocksdb::Iterator> it(
        db->NewIterator(rocksdb::ReadOptions(), storage_->messages()));
    it->SeekForPrev(keys::QueueEnd(id_));
    if (any_stored && it->Valid() &&
        keys::ParseMessage(View(it->key()), &qid, &offset) && qid == id_) {
      next = offset + 1;
    }
    if (!it->status().ok()) return FromRocks(it->status(), "load offsets");
  }

  // Leases and deletions, from each group's floor up.
  for (auto& [gid, g] : groups_) {
    for (int pass = 0; pass < 2; ++pass) {
      rocksdb::ColumnFamilyHandle* cf =
          pass == 0 ? storage_->leases() : storage_->deleted();
      RangeIterator it(
          db, cf, keys::GroupOffset(id_, gid, g->state.delete_floor()),
          keys::PrefixSuccessor(keys::GroupOffsetPrefix(id_, gid)));
      for (; it.Valid(); it.Next()) {
        uint64_t qid, offset;
        uint32_t kgid;
        if (!keys::ParseGroupOffset(it.key(), &qid, &kgid, &offset)) {
          return absl::DataLossError("corrupted lease key");
        }
        if (pass == 0) {
          LeaseRecord lease;
          if (absl::Status s = DecodeLease(it.value(), &lease); !s.ok()) {
            return s;
          }
          g->state.RestoreLease(offset, FromUs(lease.deadline_us),
                                lease.receive_count);
        } else {
          g->state.RestoreDeleted(offset);
        }
      }
      if (absl::Status s = it.status("load leases"); !s.ok()) return s;
    }
    next = std::max(next, g->state.cursor());

    std::string counters;
    rocksdb::Status s = db->Get(rocksdb::ReadOptions(), storage_->meta(),
                                keys::Counters(id_, gid), &counters);
    if (s.ok()) {
      if (absl::Status ds = DecodeCounters(counters, &g->counters); !ds.ok()) {
        return ds;
      }
    } else if (!s.IsNotFound()) {
      return FromRocks(s, "load counters");
    }
  }
  next_offset_ = committed_ = next;
  // With nothing stored, everything below the next offset is gone.
  if (!any_stored) physical_floor_ = next;
  logical_floor_ = physical_floor_;
  const absl::Time now = clock_->Now();
  // Deletions from before the restart are kept for keep_deleted_for from now.
  UpdateLogicalFloorLocked(now);

  // Messages still held back by a send delay.
  for (RangeIterator it(db, storage_->index(), keys::Delay(id_, ToUs(now), 0),
                        keys::PrefixSuccessor(keys::DelayPrefix(id_)));
       it.Valid(); it.Next()) {
    uint64_t qid, visible_us, offset;
    if (!keys::ParseDelay(it.key(), &qid, &visible_us, &offset)) {
      return absl::DataLossError("corrupted delay index key");
    }
    AddDelayedLocked(offset, FromUs(static_cast<int64_t>(visible_us)));
  }

  // The time index (one entry per 1024 messages or second retained), the
  // last entry of it, and the last enqueue time.
  for (RangeIterator it(db, storage_->index(), keys::TimeIndexPrefix(id_),
                        keys::PrefixSuccessor(keys::TimeIndexPrefix(id_)));
       it.Valid(); it.Next()) {
    uint64_t qid, t, offset;
    if (!keys::ParseTimeIndex(it.key(), &qid, &t, &offset)) {
      return absl::DataLossError("corrupted time index key");
    }
    time_index_.emplace_back(static_cast<int64_t>(t), offset);
    last_index_time_ = last_enqueue_time_ = FromUs(static_cast<int64_t>(t));
    last_index_offset_ = offset;
  }

  // Ordering keys of retained messages, then each group's lanes.
  for (RangeIterator it(db, storage_->index(),
                        keys::OrderingKey(id_, physical_floor_),
                        keys::PrefixSuccessor(keys::OrderingKeyPrefix(id_)));
       it.Valid(); it.Next()) {
    uint64_t qid, offset;
    if (!keys::ParseOrderingKey(it.key(), &qid, &offset)) {
      return absl::DataLossError("corrupted ordering key index");
    }
    keyed_[offset] = std::string(it.value());
  }
  for (auto& [gid, g] : groups_) {
    RebuildLanesLocked(*g, now);
    if (absl::Status s = RecoverGapsLocked(*g); !s.ok()) return s;
  }

  // Dedup ids still inside the window.
  for (RangeIterator it(
           db, storage_->index(),
           keys::Dedup(id_,
                       std::max<int64_t>(0, ToUs(now - config().dedup_window)),
                       ""),
           keys::PrefixSuccessor(keys::DedupPrefix(id_)));
       it.Valid(); it.Next()) {
    uint64_t qid, time_us;
    absl::string_view id;
    if (!keys::ParseDedup(it.key(), &qid, &time_us, &id) ||
        it.value().size() != 8) {
      return absl::DataLossError("corrupted dedup index");
    }
    const absl::Time at = FromUs(static_cast<int64_t>(time_us));
    dedup_[std::string(id)] =
        DedupEntry{DecodeFixed64BE(it.value().data()), at, false};
    dedup_order_.emplace_back(at, std::string(id));
  }
  return absl::OkStatus();
}

void Queue::RebuildLanesLocked(Group& g, absl::Time now) {
  g.lanes.clear();
  for (auto it = keyed_.lower_bound(g.state.delete_floor());
       it != keyed_.end() && it->first < g.state.cursor(); ++it) {
    if (g.state.IsDeleted(it->first)) continue;
    g.lanes[it->second].push_back(it->first);
  }
  for (auto& [key, lane] : g.lanes) {
    for (size_t i = 1; i < lane.size(); ++i) g.state.Forget(lane[i]);
    if (g.state.FindLease(lane.front()) == nullptr) {
      PromoteLocked(g, lane.front(), now);
    }
  }
}

absl::Status Queue::RecoverGapsLocked(Group& g) {
  // Every offset in [floor, cursor) should have a lease entry, a deletion or
  // a place in a lane. Sorting what is tracked finds the rest.
  const uint64_t floor = g.state.delete_floor();
  const uint64_t cursor = g.state.cursor();
  if (cursor <= floor) return absl::OkStatus();
  std::vector<uint64_t> gaps;
  for (uint64_t o = floor; o < cursor; ++o) {
    if (g.state.Tracked(o)) continue;
    auto k = keyed_.find(o);
    if (k != keyed_.end() && g.lanes.contains(k->second)) continue;
    // A message still held back by its delay: known to exist.
    if (auto d = delayed_.find(o); d != delayed_.end()) {
      g.state.AddReady(o, d->second);
      continue;
    }
    gaps.push_back(o);
  }
  if (gaps.empty()) return absl::OkStatus();
  // Whether each gap holds a message: one iterator seeking forward, which
  // looks at keys without copying bodies.
  RangeIterator it(storage_->db(), storage_->messages(),
                   keys::Message(id_, gaps.front()),
                   keys::Message(id_, cursor));
  for (uint64_t o : gaps) {
    uint64_t qid = 0, offset = 0;
    bool at = it.Valid() && keys::ParseMessage(it.key(), &qid, &offset);
    if (at && offset < o) {
      it.Seek(keys::Message(id_, o));
      at = it.Valid() && keys::ParseMessage(it.key(), &qid, &offset);
    }
    // A read error must not pass for a missing message.
    if (absl::Status s = it.status("recover delivery state"); !s.ok()) {
      return s;
    }
    if (at && offset == o) {
      // Passed while delayed, or its lease write failed: deliverable.
      g.state.AddReady(o);
    } else {
      g.state.MarkGone(o);  // A send whose write failed.
    }
  }
  return absl::OkStatus();
}

absl::Status Queue::EnterLocked() {
  while (exclusive_) changed_.Wait(&mu_);
  return closed_;
}

absl::Status Queue::EnterExclusiveLocked() {
  if (absl::Status s = EnterLocked(); !s.ok()) return s;
  exclusive_ = true;
  while (writes_in_flight_ > 0) changed_.Wait(&mu_);
  return absl::OkStatus();
}

void Queue::ExitExclusiveLocked() {
  exclusive_ = false;
  changed_.SignalAll();
}

Queue::Group* Queue::FindGroupLocked(uint32_t gid) {
  auto it = groups_.find(gid);
  return it == groups_.end() ? nullptr : it->second.get();
}

absl::StatusOr<Queue::Group*> Queue::FindGroupLocked(absl::string_view name) {
  auto it = group_ids_.find(name);
  if (it == group_ids_.end()) {
    // As for queues: a name no group can have is bad input, not echoed.
    if (absl::Status s = ValidateGroupName(name); !s.ok()) return s;
    return absl::NotFoundError(
        absl::StrCat("group ", name, " not found in queue ", name_));
  }
  return groups_.at(it->second).get();
}

absl::Status Queue::CheckGroup(absl::string_view name) {
  absl::MutexLock lock(&mu_);
  if (!closed_.ok()) return closed_;
  return FindGroupLocked(name).status();
}

absl::Status Queue::ValidateReceiveOptions(const ReceiveOptions& options,
                                           const QueueConfig& config) {
  if (options.max_messages < 1 ||
      options.max_messages > Limits::kMaxBatchEntries) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_messages must be 1-", Limits::kMaxBatchEntries,
                     ", got ", options.max_messages));
  }
  return ValidateVisibilityTimeout(
      options.visibility_timeout.value_or(config.visibility_timeout));
}

absl::Status Queue::CheckReceive(const ReceiveOptions& options) {
  if (absl::Status s = ValidateReceiveOptions(options, config()); !s.ok()) {
    return s;
  }
  return CheckGroup(options.group);
}

Queue::Group& Queue::DefaultGroupLocked() { return *groups_.at(0); }

absl::Status Queue::ValidateSend(absl::Span<const SendEntry> entries,
                                 const QueueConfig& config) {
  if (absl::Status s = ValidateBatchSize(entries.size(), "a send batch");
      !s.ok()) {
    return s;
  }
  for (size_t i = 0; i < entries.size(); ++i) {
    const SendEntry& e = entries[i];
    const size_t bytes = MessageBytes(e.body, e.attributes);
    if (bytes > static_cast<size_t>(config.max_message_bytes)) {
      return absl::InvalidArgumentError(
          absl::StrCat("entry ", i, ": message of ", bytes,
                       " bytes exceeds the queue's max_message_bytes ",
                       config.max_message_bytes));
    }
    if (e.delay.has_value() &&
        (*e.delay < absl::ZeroDuration() || *e.delay > Limits::kMaxDelay)) {
      return absl::InvalidArgumentError(
          absl::StrCat("entry ", i, ": delay ", absl::FormatDuration(*e.delay),
                       " is out of range [0, 15m]"));
    }
    for (const auto& [k, v] : e.attributes) {
      if (k.empty() || k.size() > Limits::kMaxAttributeKeyLength) {
        return absl::InvalidArgumentError(
            absl::StrCat("entry ", i, ": attribute names must be 1-",
                         Limits::kMaxAttributeKeyLength, " bytes"));
      }
    }
    if (e.ordering_key.size() > Limits::kMaxOrderingKeyLength) {
      return absl::InvalidArgumentError(
          absl::StrCat("entry ", i, ": ordering_key of ", e.ordering_key.size(),
                       " bytes exceeds ", Limits::kMaxOrderingKeyLength));
    }
    if (e.dedup_id.size() > Limits::kMaxDedupIdLength) {
      return absl::InvalidArgumentError(
          absl::StrCat("entry ", i, ": dedup_id of ", e.dedup_id.size(),
                       " bytes exceeds ", Limits::kMaxDedupIdLength));
    }
  }
  return absl::OkStatus();
}

uint64_t Queue::BeginAppendLocked(std::vector<MessageRecord>* records,
                                  rocksdb::WriteBatch* batch) {
  const absl::Time now = std::max(clock_->Now(), last_enqueue_time_);
  last_enqueue_time_ = now;
  const uint64_t first = next_offset_;
  const size_t n = records->size();
  next_offset_ += n;
  pending_sends_[first] = {first + n, false};
  for (size_t i = 0; i < n; ++i) {
    MessageRecord& rec = (*records)[i];
    const uint64_t offset = first + i;
    rec.enqueue_time_us = ToUs(now);
    if (rec.visible_at_us > 0) {
      // visible_at_us arrives holding the delay in microseconds.
      const absl::Time visible = now + absl::Microseconds(rec.visible_at_us);
      rec.visible_at_us = ToUs(visible);
      AddDelayedLocked(offset, visible);
      batch->Put(storage_->index(), keys::Delay(id_, ToUs(visible), offset),
                 "");
    }
    if (!rec.ordering_key.empty()) {
      keyed_[offset] = rec.ordering_key;
      batch->Put(storage_->index(), keys::OrderingKey(id_, offset),
                 rec.ordering_key);
    }
    if (!rec.dedup_id.empty()) {
      std::string value;
      PutFixed64BE(&value, offset);
      batch->Put(storage_->index(), keys::Dedup(id_, ToUs(now), rec.dedup_id),
                 value);
    }
    batch->Put(storage_->messages(), keys::Message(id_, offset),
               EncodeMessage(rec));
  }
  if (now - last_index_time_ >= kTimeIndexInterval ||
      first - last_index_offset_ >= kTimeIndexStep) {
    last_index_time_ = now;
    last_index_offset_ = first;
    time_index_.emplace_back(ToUs(now), first);
    batch->Put(storage_->index(), keys::TimeIndex(id_, ToUs(now), first), "");
  }
  Counters delta;
  delta.sent = n;
  batch->Merge(storage_->meta(), keys::Counters(id_, 0), EncodeCounters(delta));
  ++writes_in_flight_;
  return first;
}

void Queue::FinishAppendLocked(uint64_t first, size_t n, bool ok,
                               std::vector<std::shared_ptr<QueueWaiter>>* wake,
                               const std::vector<SendPlan::Handoff>* handoffs) {
  pending_sends_[first].second = true;
  if (!ok) {
    for (uint64_t o = first; o < first + n; ++o) {
      holes_.insert(o);
      EraseDelayedLocked(o);
      keyed_.erase(o);
    }
  } else {
    DefaultGroupLocked().counters.sent += n;
  }
  const uint64_t before = committed_;
  while (!pending_sends_.empty() && pending_sends_.begin()->second.second) {
    committed_ = pending_sends_.begin()->second.first;
    pending_sends_.erase(pending_sends_.begin());
  }
  if (committed_ > before) {
    // committed_ moved, so this append was the first unfinished one: its
    // offsets are among those now committed, and what its write leased
    // (when ok) needs no one woken.
    for (auto& [gid, g] : groups_) {
      size_t n_wake = committed_ - before;
      if (ok && handoffs != nullptr) {
        for (const SendPlan::Handoff& h : *handoffs) {
          if (h.group == g.get()) n_wake -= h.n;
        }
      }
      TakeWaiters(*g, n_wake, wake);
    }
  }
  --writes_in_flight_;
  changed_.SignalAll();
}

absl::StatusOr<uint64_t> Queue::BeginAppend(std::vector<MessageRecord>* records,
                                            rocksdb::WriteBatch* batch) {
  absl::MutexLock lock(&mu_);
  // Unlike EnterLocked, does not wait for an exclusive change: the caller
  // holds a write in flight on its own queue, and that queue's exclusive
  // change may be waiting for it while this one waits for a write in flight
  // on the caller's (a dead letter of A into D while D is redriven into A).
  // An exclusive change holds mu_ from the moment its writes in flight are
  // done, so an append that slips in before only makes it wait for one more.
  if (!closed_.ok()) return closed_;
  return BeginAppendLocked(records, batch);
}

void Queue::FinishAppend(uint64_t first, size_t n, bool ok) {
  std::vector<std::shared_ptr<QueueWaiter>> wake;
  std::vector<HandedOver> due;
  {
    absl::MutexLock lock(&mu_);
    FinishAppendLocked(first, n, ok, &wake);
    TakeDueHandoffsLocked(&due);
  }
  WakeAll(wake);
  for (HandedOver& h : due) h.waiter->Handoff(std::move(h.messages));
}

void Queue::TakeDueHandoffsLocked(std::vector<HandedOver>* due) {
  if (deferred_handoffs_.empty()) return;
  std::vector<HandedOver> keep;
  for (HandedOver& h : deferred_handoffs_) {
    if (h.end <= committed_) {
      due->push_back(std::move(h));
    } else {
      keep.push_back(std::move(h));
    }
  }
  deferred_handoffs_.swap(keep);
}

absl::StatusOr<std::vector<uint64_t>> Queue::Send(
    absl::Span<const SendEntry> entries) {
  SendPlan plan;
  absl::StatusOr<bool> write = PrepareSend(entries, /*may_wait=*/true, &plan);
  if (!write.ok()) return write.status();
  if (!*write) return std::move(plan.offsets);
  return FinishSend(plan, storage_->Write(&plan.batch));
}

void Queue::SendAsync(absl::Span<const SendEntry> entries, SendCallback done) {
  auto plan = std::make_shared<SendPlan>();
  absl::StatusOr<bool> write =
      PrepareSend(entries, /*may_wait=*/false, plan.get());
  if (!write.ok() && absl::IsAborted(write.status())) {
    // A dedup id of the batch is still being written by another send: wait
    // for it on an engine thread.
    std::vector<SendEntry> copy(entries.begin(), entries.end());
    dispatcher_->Run([self = shared_from_this(), copy = std::move(copy),
                      done = std::move(done)] { done(self->Send(copy)); });
    return;
  }
  if (!write.ok()) {
    done(write.status());
    return;
  }
  if (!*write) {
    done(std::move(plan->offsets));
    return;
  }
  rocksdb::WriteBatch batch = std::move(plan->batch);
  storage_->WriteAsync(
      std::move(batch),
      [self = shared_from_this(), plan, done = std::move(done)](
          absl::Status st) { done(self->FinishSend(*plan, st)); });
}

absl::StatusOr<bool> Queue::PrepareSend(absl::Span<const SendEntry> entries,
                                        bool may_wait, SendPlan* plan) {
  const QueueConfig config = this->config();
  if (absl::Status s = ValidateSend(entries, config); !s.ok()) return s;
  const size_t n = entries.size();
  plan->offsets.assign(n, 0);
  plan->appended_as.assign(n, -1);
  std::vector<MessageRecord>& records = plan->records;
  absl::MutexLock lock(&mu_);
  for (;;) {
    if (absl::Status s = EnterLocked(); !s.ok()) return s;
    // A dedup id whose first send is still being written is waited for:
    // its offset only counts once that write succeeded.
    bool pending = false;
    for (const SendEntry& e : entries) {
      auto it = e.dedup_id.empty() ? dedup_.end() : dedup_.find(e.dedup_id);
      if (it != dedup_.end() && it->second.pending) pending = true;
    }
    if (!pending) break;
    if (!may_wait) return absl::AbortedError("a dedup id is being written");
    changed_.Wait(&mu_);
  }
  const absl::Time now = clock_->Now();
  absl::flat_hash_map<absl::string_view, size_t> in_batch;
  for (size_t i = 0; i < n; ++i) {
    const SendEntry& e = entries[i];
    if (!e.dedup_id.empty()) {
      auto it = dedup_.find(e.dedup_id);
      if (it != dedup_.end() && it->second.at + config.dedup_window > now) {
        plan->offsets[i] = it->second.offset;
        continue;
      }
      auto [b, fresh] = in_batch.try_emplace(e.dedup_id, i);
      if (!fresh) {
        plan->appended_as[i] = -2 - static_cast<int>(b->second);  // Same as b.
        continue;
      }
    }
    plan->appended_as[i] = static_cast<int>(records.size());
    MessageRecord rec;
    const absl::Duration delay = e.delay.value_or(config.delay);
    rec.visible_at_us = absl::ToInt64Microseconds(delay);
    rec.attributes = e.attributes;
    rec.ordering_key = e.ordering_key;
    rec.dedup_id = e.dedup_id;
    rec.body = e.body;
    records.push_back(std::move(rec));
  }
  if (records.empty()) return false;
  plan->first = BeginAppendLocked(&records, &plan->batch);
  const absl::Time at = FromUs(records[0].enqueue_time_us);
  for (size_t j = 0; j < records.size(); ++j) {
    const std::string& id = records[j].dedup_id;
    if (id.empty()) continue;
    dedup_[id] = DedupEntry{plan->first + j, at, /*pending=*/true};
    plan->new_dedup_ids.push_back(id);
  }
  PlanHandoffsLocked(config, plan);
  return true;
}

void Queue::PlanHandoffsLocked(const QueueConfig& config, SendPlan* plan) {
  const std::vector<MessageRecord>& records = plan->records;
  const absl::Time now = FromUs(records[0].enqueue_time_us);
  // How many records, from the first, may go at once: counted only when a
  // group has waiters at the cursor (rarely, on a busy queue).
  std::optional<size_t> counted;
  for (auto& [gid, gp] : groups_) {
    Group& g = *gp;
    GroupState& gs = g.state;
    if (g.waiters.empty() || gs.cursor() != plan->first) continue;
    if (!counted.has_value()) {
      // BeginAppendLocked has made visible_at_us a time for delayed records.
      size_t n = 0;
      while (n < records.size() && records[n].visible_at_us == 0 &&
             records[n].ordering_key.empty()) {
        ++n;
      }
      counted = n;
    }
    const size_t eligible = *counted;
    if (eligible == 0) return;
    // Lapsed leases go first, and the waiters are woken for them.
    gs.Expire(now);
    if (gs.FirstReady().has_value()) continue;
    size_t next = 0;
    uint64_t leased = 0;
    // Still parked but taking no handoff: woken once the write is done.
    std::vector<std::shared_ptr<QueueWaiter>> refused;
    while (next < eligible && !g.waiters.empty()) {
      std::shared_ptr<QueueWaiter> w = std::move(g.waiters.front());
      g.waiters.pop_front();
      g.waiters_after_sweep = std::min(g.waiters_after_sweep, g.waiters.size());
      const QueueWaiter::Claim claim = w->TryClaim();
      if (claim.max_messages <= 0) {
        if (w->Parked()) refused.push_back(std::move(w));
        continue;
      }
      SendPlan::Handoff h{
          &g,
          std::move(w),
          gid,
          gs.generation(),
          plan->first + next,
          0,
          now + claim.visibility_timeout.value_or(config.visibility_timeout)};
      size_t bytes = 0;
      while (next < eligible && h.n < static_cast<size_t>(claim.max_messages)) {
        const size_t size = records[next].body.size();
        if (h.n > 0 && bytes + size > kMaxAnswerBytes) break;
        const uint64_t offset = plan->first + next;
        const GroupState::Lease lease =
            gs.BeginLease(offset, h.deadline, false).first;
        plan->batch.Put(
            storage_->leases(), keys::GroupOffset(id_, gid, offset),
            EncodeLease(LeaseRecord{ToUs(h.deadline), lease.receive_count}));
        bytes += size;
        ++h.n;
        ++next;
      }
      leased += h.n;
      plan->handoffs.push_back(std::move(h));
    }
    g.waiters.insert(g.waiters.begin(), refused.begin(), refused.end());
    if (leased > 0) {
      Counters delta;
      delta.received = leased;
      plan->batch.Merge(storage_->meta(), keys::Counters(id_, gid),
                        EncodeCounters(delta));
    }
  }
}

absl::StatusOr<std::vector<uint64_t>> Queue::FinishSend(
    SendPlan& plan, const absl::Status& st) {
  // The messages of each handoff, built without the lock.
  std::vector<HandedOver> handed;
  handed.reserve(plan.handoffs.size());
  for (SendPlan::Handoff& h : plan.handoffs) {
    HandedOver& out = handed.emplace_back();
    out.end = plan.first + plan.records.size();
    out.waiter = std::move(h.waiter);
    if (!st.ok()) continue;
    out.messages.reserve(h.n);
    // Leased from the cursor: never received before.
    const GroupState::Lease lease{h.deadline, /*receive_count=*/1};
    for (uint64_t o = h.first; o < h.first + h.n; ++o) {
      out.messages.push_back(DeliveryOf(plan.records[o - plan.first], o, h.gid,
                                        h.generation, lease));
    }
  }
  std::vector<std::shared_ptr<QueueWaiter>> wake;
  std::vector<HandedOver> due;
  {
    absl::MutexLock lock(&mu_);
    for (const std::string& id : plan.new_dedup_ids) {
      auto it = dedup_.find(id);
      if (!st.ok()) {
        dedup_.erase(it);
      } else {
        it->second.pending = false;
        dedup_order_.emplace_back(it->second.at, id);
      }
    }
    for (const SendPlan::Handoff& h : plan.handoffs) {
      GroupState& gs = h.group->state;
      for (uint64_t o = h.first; o < h.first + h.n; ++o) {
        if (st.ok()) {
          gs.CommitLease(o);
        } else {
          gs.MarkGone(o);  // The send failed: no message.
        }
      }
      if (st.ok()) h.group->counters.received += h.n;
    }
    FinishAppendLocked(plan.first, plan.records.size(), st.ok(), &wake,
                       &plan.handoffs);
    if (!plan.handoffs.empty()) ScheduleCheckLocked();
    // Like any delivery, a handoff waits for the offsets below it to be
    // durable (or holes): an earlier send may still be in flight.
    for (HandedOver& h : handed) {
      if (h.messages.empty() || h.end <= committed_) {
        due.push_back(std::move(h));
      } else {
        deferred_handoffs_.push_back(std::move(h));
      }
    }
    TakeDueHandoffsLocked(&due);
  }
  WakeAll(wake);
  for (HandedOver& h : due) h.waiter->Handoff(std::move(h.messages));
  if (!st.ok()) return st;
  const size_t n = plan.offsets.size();
  for (size_t i = 0; i < n; ++i) {
    const int as = plan.appended_as[i];
    if (as >= 0) {
      plan.offsets[i] = plan.first + as;
    } else if (as <= -2) {
      plan.offsets[i] = plan.first + plan.appended_as[-2 - as];
    }
  }
  return std::move(plan.offsets);
}

absl::StatusOr<std::vector<ReceivedMessage>> Queue::Receive(
    const ReceiveOptions& options, std::shared_ptr<QueueWaiter> waiter,
    bool* parked) {
  for (;;) {
    bool more = false;
    absl::StatusOr<std::vector<ReceivedMessage>> r =
        ReceiveOnce(options, waiter, parked, &more);
    // A pass that only moved delayed messages aside or dead-lettered some
    // looks again at once: ready messages may lie beyond them.
    if (!r.ok() || !r->empty() || *parked || !more) return r;
  }
}

absl::StatusOr<std::vector<ReceivedMessage>> Queue::ReceiveOnce(
    const ReceiveOptions& options, const std::shared_ptr<QueueWaiter>& waiter,
    bool* parked, bool* more) {
  // Without `async` the pass (and so `done`) completes before this returns.
  ReceivePass result;
  ReceiveOnceImpl(options, waiter, /*async=*/false,
                  [&result](ReceivePass pass) { result = std::move(pass); });
  *parked = result.parked;
  *more = result.more;
  return std::move(result.messages);
}

void Queue::ReceiveOnceAsync(const ReceiveOptions& options,
                             const std::shared_ptr<QueueWaiter>& waiter,
                             ReceivePassCallback done) {
  ReceiveOnceImpl(options, waiter, /*async=*/true, std::move(done));
}

// What a pass of Receive carries across its write.
struct Queue::ReceivePlan {
  std::vector<Pick> picks;
  Group* group = nullptr;
  std::vector<ReceivedMessage> out;
  std::shared_ptr<Queue> dlq;
  std::vector<MessageRecord> dead_letters;
  uint64_t dead_first = 0;
  bool dead_appended = false;
  bool more = false;
};

void Queue::ReceiveOnceImpl(const ReceiveOptions& options,
                            const std::shared_ptr<QueueWaiter>& waiter,
                            bool async, ReceivePassCallback done) {
  auto fail = [&done](absl::Status s) {
    ReceivePass pass;
    pass.messages = std::move(s);
    done(std::move(pass));
  };
  const QueueConfig config = this->config();
  if (absl::Status s = ValidateReceiveOptions(options, config); !s.ok()) {
    fail(std::move(s));
    return;
  }
  const absl::Duration timeout =
      options.visibility_timeout.value_or(config.visibility_timeout);
  // Messages received max_receives times go to the dead-letter queue
  // instead of being delivered again.
  std::shared_ptr<Queue> dlq;
  if (config.max_receives > 0) {
    dlq = lookup_(config.dead_letter_queue);
    if (dlq.get() == this) dlq = nullptr;
  }

  std::vector<Pick> picks;
  const absl::Time now = clock_->Now();
  const absl::Time deadline = now + timeout;
  Group* group;
  uint32_t gid;
  uint32_t generation;
  bool parked = false;
  bool more = false;
  mu_.Lock();
  absl::Status entered = EnterLocked();
  absl::StatusOr<Group*> found = entered.ok() ? FindGroupLocked(options.group)
                                              : absl::StatusOr<Group*>(entered);
  if (!found.ok()) {
    mu_.Unlock();
    fail(found.status());
    return;
  }
  group = *found;
  GroupState& gs = group->state;
  gid = gs.id();
  generation = gs.generation();
  gs.Expire(now);
  int taken = 0;
  // Every pick is a write; messages held back in a lane or holes cost
  // nothing and are passed without limit.
  const size_t max_picks =
      static_cast<size_t>(options.max_messages) + kMaxExtraScan;
  while (taken < options.max_messages) {
    if (picks.size() >= max_picks) {
      more = true;
      break;
    }
    if (std::optional<uint64_t> r = gs.FirstReady()) {
      if (dlq != nullptr &&
          static_cast<int32_t>(gs.FindLease(*r)->receive_count) >=
              config.max_receives) {
        GroupState::Lease lease = *gs.FindLease(*r);
        gs.BeginChange(*r);
        picks.push_back({*r, lease, {}, Pick::kDeadLetter});
        continue;
      }
      auto [lease, undo] = gs.BeginLease(*r, deadline, false);
      picks.push_back({*r, lease, undo, Pick::kDeliver});
      ++taken;
      continue;
    }
    const uint64_t c = gs.cursor();
    if (c >= committed_) break;
    if (holes_.contains(c)) {
      gs.AdvanceCursor();
      gs.MarkGone(c);
      continue;
    }
    // A keyed message waits in its key's lane behind the one delivered.
    if (auto k = keyed_.find(c); k != keyed_.end()) {
      std::deque<uint64_t>& lane = group->lanes[k->second];
      lane.push_back(c);
      if (lane.size() > 1) {
        gs.AdvanceCursor();
        continue;
      }
    }
    if (auto d = delayed_.find(c); d != delayed_.end()) {
      if (d->second > now) {
        // Held back until its time in the group's deadline order: nothing
        // to write (on open, RecoverGapsLocked finds it again).
        gs.AdvanceCursor();
        gs.AddReady(c, d->second);
        continue;
      }
      EraseDelayedLocked(c);
    }
    auto [lease, undo] = gs.BeginLease(c, deadline, false);
    picks.push_back({c, lease, undo, Pick::kDeliver});
    ++taken;
  }
  if (taken == 0 && !more && waiter != nullptr && waiter->OnPark()) {
    group->waiters.push_back(waiter);
    parked = true;
    ScheduleCheckLocked();
  }
  if (!picks.empty()) ++writes_in_flight_;
  mu_.Unlock();
  if (picks.empty()) {
    ReceivePass pass;
    pass.messages = std::vector<ReceivedMessage>();
    pass.parked = parked;
    pass.more = more;
    done(std::move(pass));
    return;
  }
  // Something to write: what finishing the pass needs moves into its plan.
  auto plan = std::make_shared<ReceivePlan>();
  plan->picks = std::move(picks);
  plan->group = group;
  plan->dlq = std::move(dlq);
  plan->more = more;

  // Read the bodies (immutable once written) without the lock.
  std::vector<std::string> key_bufs;
  std::vector<size_t> read_index;
  for (size_t i = 0; i < plan->picks.size(); ++i) {
    key_bufs.push_back(keys::Message(id_, plan->picks[i].offset));
    read_index.push_back(i);
  }
  std::vector<rocksdb::Slice> read_keys(key_bufs.begin(), key_bufs.end());
  std::vector<std::string> values;
  std::vector<rocksdb::ColumnFamilyHandle*> cfs(read_keys.size(),
                                                storage_->messages());
  std::vector<rocksdb::Status> read_status =
      storage_->db()->MultiGet(rocksdb::ReadOptions(), cfs, read_keys, &values);

  absl::Status st;
  std::vector<ReceivedMessage>& out = plan->out;
  out.reserve(read_index.size());
  std::vector<MessageRecord>& dead_letters = plan->dead_letters;
  size_t bytes = 0;
  for (size_t k = 0; k < read_index.size() && st.ok(); ++k) {
    Pick& p = plan->picks[read_index[k]];
    if (read_status[k].IsNotFound()) {
      p.fate = Pick::kGone;
      continue;
    }
    if (!read_status[k].ok()) {
      st = FromRocks(read_status[k], "read message");
      break;
    }
    if (p.kind == Pick::kDeliver && !out.empty() &&
        bytes + values[k].size() > kMaxAnswerBytes) {
      p.fate = Pick::kAbort;
      continue;
    }
    MessageRecord rec;
    st = DecodeMessage(values[k], &rec);
    if (!st.ok()) {
      st = absl::DataLossError(absl::StrCat("message at offset ", p.offset,
                                            " of queue ", name_, ": ",
                                            st.message()));
      break;
    }
    if (p.kind == Pick::kDeadLetter) {
      dead_letters.push_back(DeadLetterOf(
          std::move(rec), p.offset, options.group, p.lease.receive_count));
      continue;
    }
    bytes += values[k].size();
    out.push_back(
        DeliveryOf(std::move(rec), p.offset, gid, generation, p.lease));
  }

  rocksdb::WriteBatch batch;
  // Dead letters are appended to the dead-letter queue in this queue's
  // write: a message is in exactly one of the two, even across a crash.
  if (st.ok() && !dead_letters.empty()) {
    absl::StatusOr<uint64_t> first =
        plan->dlq->BeginAppend(&dead_letters, &batch);
    if (first.ok()) {
      plan->dead_first = *first;
      plan->dead_appended = true;
    }
  }
  if (st.ok()) {
    for (const Pick& p : plan->picks) {
      if (p.fate != Pick::kKeep) continue;
      const std::string key = keys::GroupOffset(id_, gid, p.offset);
      if (p.kind == Pick::kDeadLetter) {
        if (!plan->dead_appended) continue;
        batch.Delete(storage_->leases(), key);
        batch.Put(storage_->deleted(), key, "");
        continue;
      }
      LeaseRecord rec{ToUs(p.lease.deadline), p.lease.receive_count};
      batch.Put(storage_->leases(), key, EncodeLease(rec));
    }
    if (!out.empty()) {
      Counters delta;
      delta.received = out.size();
      batch.Merge(storage_->meta(), keys::Counters(id_, gid),
                  EncodeCounters(delta));
    }
  }
  auto finish = [self = shared_from_this(), plan,
                 done = std::move(done)](absl::Status st) {
    self->FinishReceive(*plan, st);
    ReceivePass pass;
    if (st.ok()) {
      pass.messages = std::move(plan->out);
    } else {
      pass.messages = std::move(st);
    }
    pass.more = plan->more;
    done(std::move(pass));
  };
  if (!st.ok() || batch.Count() == 0) {
    finish(st);
  } else if (async) {
    storage_->WriteAsync(std::move(batch), std::move(finish));
  } else {
    finish(storage_->Write(&batch));
  }
}

void Queue::FinishReceive(ReceivePlan& plan, const absl::Status& st) {
  if (plan.dead_appended) {
    plan.dlq->FinishAppend(plan.dead_first, plan.dead_letters.size(), st.ok());
  }
  std::vector<ReceivedMessage>& out = plan.out;
  Group* const group = plan.group;
  std::vector<std::shared_ptr<QueueWaiter>> wake;
  {
    absl::MutexLock lock(&mu_);
    GroupState& gs = group->state;
    size_t returned = 0;
    for (const Pick& p : plan.picks) {
      if (p.fate == Pick::kGone) {
        OnGoneLocked(*group, p.offset, /*deleted=*/false, &wake);
      } else if (p.kind == Pick::kDeadLetter) {
        if (st.ok() && plan.dead_appended && p.fate == Pick::kKeep) {
          OnGoneLocked(*group, p.offset, /*deleted=*/true, &wake);
          // The next message of its key may be ready now.
          plan.more = true;
        } else {
          gs.AbortChange(p.offset);
        }
      } else if (p.fate == Pick::kAbort || !st.ok()) {
        gs.AbortLease(p.offset, p.undo);
        ++returned;
      } else {
        gs.CommitLease(p.offset);
      }
    }
    if (st.ok()) group->counters.received += out.size();
    if (returned > 0) TakeWaiters(*group, returned, &wake);
    ScheduleCheckLocked();
    --writes_in_flight_;
    changed_.SignalAll();
  }
  WakeAll(wake);
}

namespace {

// What a redriven message looks like again: without the attributes its
// dead-letter queue added, with its ordering key back.
MessageRecord RedrivenOf(ReceivedMessage m) {
  MessageRecord rec;
  for (auto& [k, v] : m.attributes) {
    if (k == kAttrOrderingKey) {
      rec.ordering_key = std::move(v);
    } else if (k != kAttrSourceQueue && k != kAttrSourceOffset &&
               k != kAttrSourceGroup && k != kAttrReceiveCount) {
      rec.attributes.emplace_back(std::move(k), std::move(v));
    }
  }
  if (rec.ordering_key.empty()) rec.ordering_key = std::move(m.ordering_key);
  rec.body = std::move(m.body);
  return rec;
}

// Appends the redriven copies to their target queues in the write that
// deletes them from the dead-letter queue.
class RedriveAppends : public Queue::DeleteHook {
 public:
  struct Item {
    std::shared_ptr<Queue> target;
    MessageRecord record;
  };
  explicit RedriveAppends(std::vector<Item> items) : items_(std::move(items)) {}

  absl::Status BeforeWrite(const std::vector<size_t>& indexes,
                           rocksdb::WriteBatch* batch) override {
    // One append per target queue, in offset order.
    for (size_t i : indexes) {
      Item& item = items_[i];
      auto [it, fresh] =
          by_target_.try_emplace(item.target.get(), appends_.size());
      if (fresh) appends_.push_back(Append{item.target, {}, 0, false});
      appends_[it->second].records.push_back(std::move(item.record));
    }
    for (Append& a : appends_) {
      absl::StatusOr<uint64_t> first = a.target->BeginAppend(&a.records, batch);
      if (!first.ok()) {
        AfterWrite(false);
        return absl::Status(first.status().code(),
                            absl::StrCat("redrive to queue ", a.target->name(),
                                         ": ", first.status().message()));
      }
      a.first = *first;
      a.begun = true;
    }
    return absl::OkStatus();
  }

  void AfterWrite(bool ok) override {
    for (Append& a : appends_) {
      if (a.begun) a.target->FinishAppend(a.first, a.records.size(), ok);
      a.begun = false;
    }
  }

 private:
  struct Append {
    std::shared_ptr<Queue> target;
    std::vector<MessageRecord> records;
    uint64_t first;
    bool begun;
  };
  std::vector<Item> items_;
  absl::flat_hash_map<const Queue*, size_t> by_target_;
  std::vector<Append> appends_;
};

}  // namespace

absl::StatusOr<uint64_t> Queue::Redrive(absl::string_view to_queue,
                                        int max_messages) {
  if (max_messages < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_messages must be at least 1, got ", max_messages));
  }
  std::shared_ptr<Queue> fixed;
  if (!to_queue.empty()) {
    fixed = lookup_(to_queue);
    if (fixed == nullptr) {
      if (absl::Status s = ValidateQueueName(to_queue); !s.ok()) return s;
      return absl::NotFoundError(
          absl::StrCat("queue ", to_queue, " not found"));
    }
    if (fixed.get() == this) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot redrive queue ", name_, " into itself"));
    }
  }
  uint64_t moved = 0;
  // Messages with nowhere to go stay leased until the end, so that the next
  // batch does not receive them again, and are then released.
  std::vector<std::string> stuck;
  absl::Status error;
  while (error.ok() && moved < static_cast<uint64_t>(max_messages)) {
    ReceiveOptions ro;
    ro.max_messages = static_cast<int>(
        std::min<uint64_t>(Limits::kMaxBatchEntries, max_messages - moved));
    ro.visibility_timeout = kRedriveLease;
    bool parked;
    absl::StatusOr<std::vector<ReceivedMessage>> got =
        Receive(ro, nullptr, &parked);
    if (!got.ok()) {
      error = got.status();
      break;
    }
    if (got->empty()) break;
    std::vector<std::string> receipts;
    std::vector<RedriveAppends::Item> items;
    for (ReceivedMessage& m : *got) {
      std::shared_ptr<Queue> target = fixed;
      if (target == nullptr) {
        for (const auto& [k, v] : m.attributes) {
          if (k == kAttrSourceQueue) target = lookup_(v);
        }
      }
      if (target == nullptr || target.get() == this) {
        stuck.push_back(std::move(m.receipt_handle));
        continue;
      }
      receipts.push_back(m.receipt_handle);
      items.push_back({std::move(target), RedrivenOf(std::move(m))});
    }
    if (receipts.empty()) continue;
    RedriveAppends hook(std::move(items));
    absl::StatusOr<std::vector<absl::Status>> results =
        DeleteWith(receipts, &hook);
    if (!results.ok()) {
      error = results.status();
    } else {
      for (const absl::Status& r : *results) {
        if (r.ok()) {
          ++moved;
        } else if (error.ok()) {
          error = r;
        }
      }
    }
    if (!error.ok()) {
      for (std::string& r : receipts) stuck.push_back(std::move(r));
    }
  }
  for (size_t i = 0; i < stuck.size(); i += Limits::kMaxBatchEntries) {
    std::vector<VisibilityChange> release;
    for (size_t j = i; j < stuck.size() && j < i + Limits::kMaxBatchEntries;
         ++j) {
      release.push_back({stuck[j], absl::ZeroDuration()});
    }
    (void)ChangeVisibility(release);
  }
  if (!error.ok() && moved == 0) return error;
  return moved;
}

ReceivedMessage Queue::DeliveryOf(MessageRecord rec, uint64_t offset,
                                  uint32_t gid, uint32_t generation,
                                  const GroupState::Lease& lease) const {
  ReceivedMessage m;
  m.offset = offset;
  m.body = std::move(rec.body);
  m.attributes = std::move(rec.attributes);
  m.ordering_key = std::move(rec.ordering_key);
  m.enqueue_time = FromUs(rec.enqueue_time_us);
  m.receive_count = lease.receive_count;
  m.lease_deadline = lease.deadline;
  m.receipt_handle =
      EncodeReceipt(Receipt{id_, gid, generation, offset, lease.receive_count});
  return m;
}

MessageRecord Queue::DeadLetterOf(MessageRecord rec, uint64_t offset,
                                  absl::string_view group,
                                  uint32_t receive_count) const {
  rec.attributes.emplace_back(kAttrSourceQueue, name_);
  rec.attributes.emplace_back(kAttrSourceOffset, absl::StrCat(offset));
  rec.attributes.emplace_back(kAttrSourceGroup, std::string(group));
  rec.attributes.emplace_back(kAttrReceiveCount, absl::StrCat(receive_count));
  if (!rec.ordering_key.empty()) {
    rec.attributes.emplace_back(kAttrOrderingKey, std::move(rec.ordering_key));
  }
  rec.ordering_key.clear();
  rec.dedup_id.clear();
  rec.visible_at_us = 0;
  return rec;
}

void Queue::OnGoneLocked(Group& g, uint64_t offset, bool deleted,
                         std::vector<std::shared_ptr<QueueWaiter>>* wake) {
  if (deleted) {
    g.state.CommitDelete(offset);
  } else {
    g.state.MarkGone(offset);
  }
  // The next message of the same key gets its turn.
  auto k = keyed_.find(offset);
  if (k == keyed_.end()) return;
  auto lane = g.lanes.find(k->second);
  if (lane == g.lanes.end() || lane->second.empty() ||
      lane->second.front() != offset) {
    return;
  }
  lane->second.pop_front();
  if (lane->second.empty()) {
    g.lanes.erase(lane);
    return;
  }
  PromoteLocked(g, lane->second.front(), clock_->Now());
  TakeWaiters(g, 1, wake);
}

void Queue::AddDelayedLocked(uint64_t offset, absl::Time visible) {
  auto [it, inserted] = delayed_.try_emplace(offset, visible);
  if (!inserted) {
    delayed_by_time_.erase({it->second, offset});
    it->second = visible;
  }
  delayed_by_time_.emplace(visible, offset);
}

void Queue::EraseDelayedLocked(uint64_t offset) {
  auto it = delayed_.find(offset);
  if (it == delayed_.end()) return;
  delayed_by_time_.erase({it->second, offset});
  delayed_.erase(it);
}

void Queue::ExpireDelayedLocked(absl::Time now) {
  while (!delayed_by_time_.empty() && delayed_by_time_.begin()->first <= now) {
    delayed_.erase(delayed_by_time_.begin()->second);
    delayed_by_time_.erase(delayed_by_time_.begin());
  }
}

void Queue::PromoteLocked(Group& g, uint64_t offset, absl::Time now) {
  auto d = delayed_.find(offset);
  g.state.AddReady(offset, d != delayed_.end() && d->second > now
                               ? d->second
                               : absl::InfinitePast());
}

std::vector<Queue::Change> Queue::ResolveReceiptsLocked(
    absl::Span<const std::string> receipts, bool deleting,
    std::vector<absl::Status>* results) {
  std::vector<absl::StatusOr<Receipt>> decoded;
  decoded.reserve(receipts.size());
  for (const std::string& r : receipts) decoded.push_back(DecodeReceipt(r));

  // Wait until none of the leases named is busy, so that every change below
  // starts from a settled entry. Nothing is marked busy while waiting, so
  // two batches cannot wait on each other.
  for (;;) {
    bool busy = false;
    for (const auto& r : decoded) {
      if (!r.ok() || r->queue_id != id_) continue;
      Group* g = FindGroupLocked(r->group_id);
      if (g == nullptr) continue;
      const GroupState::Lease* lease = g->state.FindLease(r->offset);
      if (lease != nullptr && lease->busy) {
        busy = true;
        break;
      }
    }
    if (!busy) break;
    changed_.Wait(&mu_);
  }
  // The queue may have been dropped or closed meanwhile; the caller checks.
  if (!closed_.ok()) return {};

  std::vector<Change> changes;
  absl::flat_hash_map<std::pair<uint32_t, uint64_t>, size_t> first_seen;
  std::vector<std::pair<size_t, size_t>> duplicates;  // (index, first index)
  for (size_t i = 0; i < decoded.size(); ++i) {
    absl::Status& result = (*results)[i];
    if (!decoded[i].ok()) {
      result = decoded[i].status();
      continue;
    }
    const Receipt& r = *decoded[i];
    if (r.queue_id != id_) {
      result =
          absl::InvalidArgumentError("receipt handle belongs to another queue");
      continue;
    }
    Group* g = FindGroupLocked(r.group_id);
    if (g == nullptr) {
      result = absl::FailedPreconditionError(
          "the consumer group of this receipt no longer exists");
      continue;
    }
    if (r.generation != g->state.generation()) {
      result = absl::FailedPreconditionError(
          "the lease of this receipt was dropped when the group was reset");
      continue;
    }
    const GroupState::Lease* lease = g->state.FindLease(r.offset);
    if (lease == nullptr) {
      if (g->state.IsDeleted(r.offset)) {
        result = deleting ? absl::OkStatus()
                          : absl::FailedPreconditionError(absl::StrCat(
                                "message ", r.offset, " is already deleted"));
      } else {
        result = absl::FailedPreconditionError(absl::StrCat(
            "message ", r.offset, " is not leased under this receipt"));
      }
      continue;
    }
    if (lease->receive_count != r.receive_count) {
      result = absl::FailedPreconditionError(absl::StrCat(
          "message ", r.offset,
          " has been received again since this receipt was issued"));
      continue;
    }
    // Only an entry naming the current lease claims its message: a stale
    // receipt of the same message earlier in the batch (one whose lease
    // lapsed and was taken again) must not shut out the current one.
    auto [it, inserted] = first_seen.try_emplace({r.group_id, r.offset}, i);
    if (!inserted) {
      if (receipts[i] == receipts[it->second]) {
        duplicates.emplace_back(i, it->second);
      } else {
        result = absl::FailedPreconditionError(absl::StrCat(
            "another entry of this batch names message ", r.offset));
      }
      continue;
    }
    g->state.BeginChange(r.offset);
    changes.push_back(Change{i, g, r.offset, r.receive_count});
  }
  // Duplicates share the first occurrence's fate; filled in by the caller
  // once that is known.
  for (auto [i, first] : duplicates) {
    (*results)[i] = absl::UnknownError(absl::StrCat("duplicate of ", first));
  }
  return changes;
}

namespace {

// Gives duplicate receipts in a batch the result of their first occurrence.
// Empty entries (left out of the batch, with results of their own) are
// nobody's duplicates.
void FillDuplicates(absl::Span<const std::string> receipts,
                    std::vector<absl::Status>* results) {
  absl::flat_hash_map<absl::string_view, size_t> first;
  for (size_t i = 0; i < receipts.size(); ++i) {
    if (receipts[i].empty()) continue;
    auto [it, inserted] = first.try_emplace(receipts[i], i);
    if (!inserted) (*results)[i] = (*results)[it->second];
  }
}

}  // namespace

uint64_t Queue::MaybeWriteFloorLocked(Group& g, absl::Time now,
                                      rocksdb::WriteBatch* batch) {
  const uint64_t floor = g.state.delete_floor();
  if (g.floor_write_in_flight || floor <= g.persisted_floor) return 0;
  if (floor - g.persisted_floor < kFloorWriteStep &&
      now - g.last_floor_write < kFloorWriteInterval) {
    return 0;
  }
  const uint32_t gid = g.state.id();
  batch->Put(storage_->meta(), keys::Group(id_, gid),
             EncodeGroup(RecordOf(g.state)));
  storage_->DeleteRange(batch, storage_->deleted(),
                        keys::GroupOffset(id_, gid, g.persisted_floor),
                        keys::GroupOffset(id_, gid, floor));
  g.floor_write_in_flight = true;
  g.last_floor_write = now;
  return floor;
}

void Queue::FinishFloorWriteLocked(Group& g, uint64_t floor, bool ok) {
  if (floor == 0) return;
  g.floor_write_in_flight = false;
  if (ok) g.persisted_floor = std::max(g.persisted_floor, floor);
}

void Queue::UpdateLogicalFloorLocked(absl::Time now) {
  uint64_t min_floor = next_offset_;
  for (const auto& [gid, g] : groups_) {
    min_floor = std::min(min_floor, g->state.delete_floor());
  }
  const absl::Duration keep = config().retention_keep_deleted_for;
  if (keep == absl::ZeroDuration()) {
    logical_floor_ = std::max(logical_floor_, min_floor);
    return;
  }
  // Marks at most one per second: the floor reached, and when it was last
  // moved within that second (what was deleted last is kept longest).
  if (min_floor > logical_floor_ &&
      (floor_marks_.empty() || floor_marks_.back().floor < min_floor)) {
    if (floor_marks_.empty() ||
        now - floor_marks_.back().first_at >= kFloorWriteInterval) {
      floor_marks_.push_back(FloorMark{min_floor, now, now});
    } else {
      floor_marks_.back().floor = min_floor;
      floor_marks_.back().last_at = now;
    }
  }
  while (!floor_marks_.empty() && floor_marks_.front().last_at + keep <= now) {
    logical_floor_ = std::max(logical_floor_,
                              std::min(floor_marks_.front().floor, min_floor));
    floor_marks_.pop_front();
  }
}

uint64_t Queue::MaybeRemoveLocked(absl::Time now, rocksdb::WriteBatch* batch) {
  if (remove_in_flight_ || logical_floor_ <= physical_floor_) return 0;
  if (logical_floor_ - physical_floor_ < kFloorWriteStep &&
      now - last_remove_ < kFloorWriteInterval) {
    return 0;
  }
  storage_->DeleteRange(batch, storage_->messages(),
                        keys::Message(id_, physical_floor_),
                        keys::Message(id_, logical_floor_));
  // Range deletes are not free (see Storage::DeleteRange): none when no
  // keyed message is below the floor.
  if (!keyed_.empty() && keyed_.begin()->first < logical_floor_) {
    storage_->DeleteRange(batch, storage_->index(), keys::OrderingKey(id_, 0),
                          keys::OrderingKey(id_, logical_floor_));
  }
  // Delay index entries in the past are no longer needed.
  storage_->DeleteRange(batch, storage_->index(), keys::Delay(id_, 0, 0),
                        keys::Delay(id_, ToUs(now), 0));
  // Time index entries below the floor, but the last one at or below it:
  // that one still bounds a lookup of the first retained messages. Should
  // the write fail, the next removal's range covers them again.
  size_t drop = 0;
  while (drop + 1 < time_index_.size() &&
         time_index_[drop + 1].second <= logical_floor_) {
    ++drop;
  }
  if (drop > 0) {
    storage_->DeleteRange(batch, storage_->index(), keys::TimeIndex(id_, 0, 0),
                          keys::TimeIndex(id_, time_index_[drop].first,
                                          time_index_[drop].second));
    time_index_.erase(time_index_.begin(), time_index_.begin() + drop);
  }
  remove_in_flight_ = true;
  last_remove_ = now;
  return logical_floor_;
}

void Queue::FinishRemoveLocked(uint64_t floor, bool ok) {
  if (floor == 0) return;
  remove_in_flight_ = false;
  if (!ok) return;
  physical_floor_ = std::max(physical_floor_, floor);
  keyed_.erase(keyed_.begin(), keyed_.lower_bound(physical_floor_));
}

absl::StatusOr<std::vector<absl::Status>> Queue::Delete(
    absl::Span<const std::string> receipts) {
  if (absl::Status s = ValidateBatchSize(receipts.size(), "a delete batch");
      !s.ok()) {
    return s;
  }
  return DeleteWith(receipts, nullptr);
}

absl::StatusOr<std::vector<absl::Status>> Queue::DeleteWith(
    absl::Span<const std::string> receipts, DeleteHook* hook) {
  absl::StatusOr<std::vector<absl::Status>> out;
  DeleteImpl(receipts, hook, /*async=*/false,
             [&out](absl::StatusOr<std::vector<absl::Status>> r) {
               out = std::move(r);
             });
  return out;
}

void Queue::DeleteAsync(absl::Span<const std::string> receipts,
                        Engine::DeleteCallback done) {
  if (absl::Status s = ValidateBatchSize(receipts.size(), "a delete batch");
      !s.ok()) {
    done(s);
    return;
  }
  DeleteImpl(receipts, nullptr, /*async=*/true, std::move(done));
}

void Queue::DeleteImpl(absl::Span<const std::string> receipts, DeleteHook* hook,
                       bool async, Engine::DeleteCallback done) {
  // What the write's completion needs, kept alive across an async write.
  struct Pending {
    std::vector<std::string> receipts;
    std::vector<absl::Status> results;
    std::vector<Change> changes;
    std::vector<std::pair<Group*, uint64_t>> floors_written;
    uint64_t removed = 0;
    absl::Time now;
    // Told the write's outcome; null when none or nothing was written.
    DeleteHook* hook = nullptr;
  };
  auto p = std::make_shared<Pending>();
  p->results.resize(receipts.size());
  p->now = clock_->Now();
  rocksdb::WriteBatch batch;
  {
    absl::MutexLock lock(&mu_);
    if (absl::Status s = EnterLocked(); !s.ok()) {
      done(s);
      return;
    }
    p->changes =
        ResolveReceiptsLocked(receipts, /*deleting=*/true, &p->results);
    if (!closed_.ok()) {
      done(closed_);
      return;
    }
    if (p->changes.empty()) {
      FillDuplicates(receipts, &p->results);
      done(std::move(p->results));
      return;
    }
    for (const Change& c : p->changes) {
      if (uint64_t f = MaybeWriteFloorLocked(*c.group, p->now, &batch); f > 0) {
        p->floors_written.emplace_back(c.group, f);
      }
    }
    p->removed = MaybeRemoveLocked(p->now, &batch);
    ++writes_in_flight_;
  }
  p->receipts.assign(receipts.begin(), receipts.end());

  absl::flat_hash_map<uint32_t, uint64_t> per_group;
  for (const Change& c : p->changes) {
    const std::string key =
        keys::GroupOffset(id_, c.group->state.id(), c.offset);
    batch.Delete(storage_->leases(), key);
    batch.Put(storage_->deleted(), key, "");
    ++per_group[c.group->state.id()];
  }
  for (const auto& [gid, n] : per_group) {
    Counters delta;
    delta.deleted = n;
    batch.Merge(storage_->meta(), keys::Counters(id_, gid),
                EncodeCounters(delta));
  }

  auto finish = [self = shared_from_this(), p,
                 done = std::move(done)](absl::Status st) {
    if (p->hook != nullptr) p->hook->AfterWrite(st.ok());
    std::vector<std::shared_ptr<QueueWaiter>> wake;
    {
      absl::MutexLock lock(&self->mu_);
      for (const Change& c : p->changes) {
        if (st.ok()) {
          self->OnGoneLocked(*c.group, c.offset, /*deleted=*/true, &wake);
          ++c.group->counters.deleted;
        } else {
          c.group->state.AbortChange(c.offset);
        }
        p->results[c.index] = st;
      }
      for (auto [g, f] : p->floors_written) {
        self->FinishFloorWriteLocked(*g, f, st.ok());
      }
      self->FinishRemoveLocked(p->removed, st.ok());
      if (st.ok()) self->UpdateLogicalFloorLocked(p->now);
      self->ScheduleCheckLocked();
      --self->writes_in_flight_;
      self->changed_.SignalAll();
    }
    WakeAll(wake);
    FillDuplicates(p->receipts, &p->results);
    done(std::move(p->results));
  };

  if (hook != nullptr) {
    std::vector<size_t> indexes;
    indexes.reserve(p->changes.size());
    for (const Change& c : p->changes) indexes.push_back(c.index);
    if (absl::Status st = hook->BeforeWrite(indexes, &batch); !st.ok()) {
      // Nothing was written: AfterWrite is not due.
      finish(st);
      return;
    }
    p->hook = hook;
  }
  if (async) {
    storage_->WriteAsync(std::move(batch), std::move(finish));
  } else {
    finish(storage_->Write(&batch));
  }
}

absl::StatusOr<std::vector<absl::Status>> Queue::ChangeVisibility(
    absl::Span<const VisibilityChange> changes_in) {
  if (absl::Status s =
          ValidateBatchSize(changes_in.size(), "a change-visibility batch");
      !s.ok()) {
    return s;
  }
  std::vector<absl::Status> results(changes_in.size());
  std::vector<std::string> receipts;
  receipts.reserve(changes_in.size());
  for (const VisibilityChange& c : changes_in) {
    receipts.push_back(c.receipt_handle);
  }
  // Entries with a bad timeout get their error and take no part.
  std::vector<std::string> checked = receipts;
  std::vector<bool> timeout_ok(changes_in.size(), true);
  for (size_t i = 0; i < changes_in.size(); ++i) {
    absl::Status s =
        ValidateVisibilityTimeout(changes_in[i].visibility_timeout);
    if (!s.ok()) {
      results[i] = s;
      checked[i].clear();
      timeout_ok[i] = false;
    }
  }

  std::vector<Change> changes;
  const absl::Time now = clock_->Now();
  {
    absl::MutexLock lock(&mu_);
    if (absl::Status s = EnterLocked(); !s.ok()) return s;
    std::vector<absl::Status> resolved(changes_in.size());
    changes = ResolveReceiptsLocked(checked, /*deleting=*/false, &resolved);
    if (!closed_.ok()) return closed_;
    for (size_t i = 0; i < changes_in.size(); ++i) {
      if (timeout_ok[i]) results[i] = resolved[i];
    }
    if (changes.empty()) {
      FillDuplicates(checked, &results);
      return results;
    }
    ++writes_in_flight_;
  }

  rocksdb::WriteBatch batch;
  for (const Change& c : changes) {
    LeaseRecord rec{ToUs(now + changes_in[c.index].visibility_timeout),
                    c.receive_count};
    batch.Put(storage_->leases(),
              keys::GroupOffset(id_, c.group->state.id(), c.offset),
              EncodeLease(rec));
  }
  const absl::Status st = storage_->Write(&batch);

  std::vector<std::shared_ptr<QueueWaiter>> wake;
  {
    absl::MutexLock lock(&mu_);
    for (const Change& c : changes) {
      const absl::Duration t = changes_in[c.index].visibility_timeout;
      if (st.ok()) {
        c.group->state.CommitDeadline(c.offset, now + t);
        if (t == absl::ZeroDuration()) TakeWaiters(*c.group, 1, &wake);
      } else {
        c.group->state.AbortChange(c.offset);
      }
      results[c.index] = st;
    }
    ScheduleCheckLocked();
    --writes_in_flight_;
    changed_.SignalAll();
  }
  WakeAll(wake);
  FillDuplicates(checked, &results);
  return results;
}

absl::StatusOr<uint64_t> Queue::Purge() {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = EnterExclusiveLocked(); !s.ok()) return s;
  const uint64_t end = next_offset_;
  uint64_t purged = 0;
  {
    // Messages the default group has not deleted. Holes the cursor passed
    // are counted as deleted already.
    const GroupState& gs = DefaultGroupLocked().state;
    uint64_t holes_above = 0;
    for (auto it = holes_.lower_bound(gs.delete_floor()); it != holes_.end();
         ++it) {
      if (!gs.IsDeleted(*it)) ++holes_above;
    }
    purged = end - gs.delete_floor() - gs.deleted_above_floor() - holes_above;
  }
  rocksdb::WriteBatch batch;
  storage_->DeleteRange(&batch, storage_->messages(), keys::QueueBegin(id_),
                        keys::Message(id_, end));
  storage_->DeleteRange(&batch, storage_->leases(), keys::QueueBegin(id_),
                        keys::QueueEnd(id_));
  storage_->DeleteRange(&batch, storage_->deleted(), keys::QueueBegin(id_),
                        keys::QueueEnd(id_));
  for (const std::string& prefix :
       {keys::DelayPrefix(id_), keys::TimeIndexPrefix(id_),
        keys::OrderingKeyPrefix(id_), keys::DedupPrefix(id_)}) {
    storage_->DeleteRange(&batch, storage_->index(), prefix,
                          keys::PrefixSuccessor(prefix));
  }
  for (auto& [gid, g] : groups_) {
    GroupRecord rec = RecordOf(g->state);
    rec.delete_floor = rec.cursor_base = end;
    batch.Put(storage_->meta(), keys::Group(id_, gid), EncodeGroup(rec));
  }
  const absl::Status st = storage_->Write(&batch);
  if (st.ok()) {
    for (auto& [gid, g] : groups_) {
      g->state.Reset(end, g->state.generation());
      g->persisted_floor = end;
      g->lanes.clear();
    }
    holes_.clear();
    delayed_.clear();
    delayed_by_time_.clear();
    keyed_.clear();
    time_index_.clear();
    dedup_.clear();
    dedup_order_.clear();
    floor_marks_.clear();
    logical_floor_ = physical_floor_ = end;
  }
  ExitExclusiveLocked();
  if (!st.ok()) return st;
  return purged;
}

void Queue::CountFreshLocked(const GroupState& g, absl::Time now,
                             uint64_t* ready, uint64_t* delayed) {
  const uint64_t c = g.cursor();
  *ready = 0;
  *delayed = 0;
  if (c >= committed_) return;
  uint64_t holes = 0;
  for (auto it = holes_.lower_bound(c); it != holes_.end() && *it < committed_;
       ++it) {
    ++holes;
  }
  for (auto it = delayed_.lower_bound(c);
       it != delayed_.end() && it->first < committed_; ++it) {
    if (it->second > now) ++*delayed;
  }
  *ready = committed_ - c - holes - *delayed;
}

absl::StatusOr<QueueStats> Queue::Stats(absl::string_view group) {
  QueueStats stats;
  const absl::Time now = clock_->Now();
  std::optional<uint64_t> oldest;
  {
    absl::MutexLock lock(&mu_);
    if (absl::Status s = EnterLocked(); !s.ok()) return s;
    absl::StatusOr<Group*> found = FindGroupLocked(group);
    if (!found.ok()) return found.status();
    Group& g = **found;
    g.state.Expire(now);
    uint64_t fresh_ready, fresh_delayed;
    CountFreshLocked(g.state, now, &fresh_ready, &fresh_delayed);
    size_t in_flight, delayed;
    g.state.CountPending(&in_flight, &delayed);
    stats.ready = g.state.ready_count() + fresh_ready;
    stats.in_flight = in_flight;
    stats.delayed = delayed + fresh_delayed;
    stats.sent_total = DefaultGroupLocked().counters.sent;
    stats.received_total = g.counters.received;
    stats.deleted_total = g.counters.deleted;
    stats.next_offset = next_offset_;
    oldest = g.state.FirstReady();
    if (!oldest.has_value() && fresh_ready > 0) {
      for (uint64_t o = g.state.cursor(); o < committed_; ++o) {
        auto d = delayed_.find(o);
        if (holes_.contains(o) || (d != delayed_.end() && d->second > now)) {
          continue;
        }
        oldest = o;
        break;
      }
    }
  }
  if (oldest.has_value()) {
    std::string value;
    rocksdb::Status s =
        storage_->db()->Get(rocksdb::ReadOptions(), storage_->messages(),
                            keys::Message(id_, *oldest), &value);
    MessageRecord rec;
    if (s.ok() && DecodeMessage(value, &rec).ok()) {
      stats.oldest_ready_age =
          std::max(absl::ZeroDuration(), now - FromUs(rec.enqueue_time_us));
    }
  }
  return stats;
}

GroupInfo Queue::InfoLocked(const Group& g) {
  GroupInfo info;
  info.name = g.state.name();
  info.cursor = g.state.cursor();
  info.delete_floor = g.state.delete_floor();
  info.lag = committed_ > info.cursor ? committed_ - info.cursor : 0;
  size_t in_flight, delayed;
  g.state.CountPending(&in_flight, &delayed);
  info.in_flight = in_flight;
  return info;
}

absl::StatusOr<uint64_t> Queue::OffsetForTime(absl::Time t) {
  uint64_t floor, end;
  {
    absl::MutexLock lock(&mu_);
    if (absl::Status s = EnterLocked(); !s.ok()) return s;
    floor = logical_floor_;
    end = committed_;
  }
  if (t > clock_->Now()) {
    return absl::InvalidArgumentError(
        absl::StrCat("time ", absl::FormatTime(t), " is in the future"));
  }
  // The last index entry before `t` bounds the scan from below: every
  // message from its offset on was enqueued at or after its time, and the
  // next entry is at most kTimeIndexStep messages further.
  uint64_t start = floor;
  {
    std::unique_ptr<rocksdb::Iterator> it(
        storage_->db()->NewIterator(rocksdb::ReadOptions(), storage_->index()));
    const int64_t us = ToUs(t);
    it->SeekForPrev(keys::TimeIndex(id_, us > 0 ? us - 1 : 0, UINT64_MAX));
    uint64_t qid, time_us, offset;
    if (it->Valid() &&
        keys::ParseTimeIndex(View(it->key()), &qid, &time_us, &offset) &&
        qid == id_) {
      start = std::max(start, offset);
    }
    if (!it->status().ok()) return FromRocks(it->status(), "time index");
  }
  RangeIterator it(storage_->db(), storage_->messages(),
                   keys::Message(id_, start), keys::Message(id_, end));
  for (; it.Valid(); it.Next()) {
    uint64_t qid, offset;
    MessageRecord rec;
    if (!keys::ParseMessage(it.key(), &qid, &offset)) {
      return absl::DataLossError("corrupted message key");
    }
    if (absl::Status s = DecodeMessage(it.value(), &rec); !s.ok()) return s;
    if (FromUs(rec.enqueue_time_us) >= t) return offset;
  }
  if (absl::Status s = it.status("find offset for time"); !s.ok()) return s;
  return end;
}

absl::StatusOr<uint64_t> Queue::ResolvePosition(const LogPosition& p) {
  if (p.kind == LogPosition::Kind::kTime) return OffsetForTime(p.time);
  absl::MutexLock lock(&mu_);
  if (absl::Status s = EnterLocked(); !s.ok()) return s;
  switch (p.kind) {
    case LogPosition::Kind::kEarliest:
      return logical_floor_;
    case LogPosition::Kind::kLatest:
      return next_offset_;
    default:
      break;
  }
  if (p.offset > next_offset_) {
    return absl::InvalidArgumentError(
        absl::StrCat("offset ", p.offset, " is past the end of queue ", name_,
                     " (next offset ", next_offset_, ")"));
  }
  return std::max(p.offset, logical_floor_);
}

absl::StatusOr<GroupInfo> Queue::CreateGroup(absl::string_view name,
                                             const LogPosition& start) {
  if (absl::Status s = ValidateGroupName(name); !s.ok()) return s;
  absl::StatusOr<uint64_t> offset = ResolvePosition(start);
  if (!offset.ok()) return offset.status();
  absl::MutexLock lock(&mu_);
  if (absl::Status s = EnterExclusiveLocked(); !s.ok()) return s;
  if (group_ids_.contains(name)) {
    ExitExclusiveLocked();
    return absl::AlreadyExistsError(
        absl::StrCat("group ", name, " already exists in queue ", name_));
  }
  // Retention may have moved on since the position was resolved.
  const uint64_t at = std::min(std::max(*offset, logical_floor_), next_offset_);
  const uint32_t gid = next_group_id_;
  GroupState state(gid, std::string(name), 0, at, at);
  rocksdb::WriteBatch batch;
  batch.Put(storage_->meta(), keys::Group(id_, gid),
            EncodeGroup(RecordOf(state)));
  std::string next;
  PutFixed32BE(&next, gid + 1);
  batch.Put(storage_->meta(), keys::NextGroupId(id_), next);
  const absl::Status st = storage_->Write(&batch);
  GroupInfo info;
  if (st.ok()) {
    next_group_id_ = gid + 1;
    auto g = std::make_unique<Group>(std::move(state));
    g->persisted_floor = at;
    info = InfoLocked(*g);
    group_ids_[std::string(name)] = gid;
    groups_[gid] = std::move(g);
  }
  ExitExclusiveLocked();
  if (!st.ok()) return st;
  return info;
}

absl::Status Queue::DeleteGroup(absl::string_view name) {
  std::vector<std::shared_ptr<QueueWaiter>> wake;
  absl::Status st;
  {
    absl::MutexLock lock(&mu_);
    if (absl::Status s = EnterExclusiveLocked(); !s.ok()) return s;
    absl::StatusOr<Group*> found = FindGroupLocked(name);
    if (!found.ok() || name.empty()) {
      ExitExclusiveLocked();
      return found.ok() ? absl::FailedPreconditionError(
                              "the default group cannot be deleted")
                        : found.status();
    }
    const uint32_t gid = (*found)->state.id();
    rocksdb::WriteBatch batch;
    batch.Delete(storage_->meta(), keys::Group(id_, gid));
    batch.Delete(storage_->meta(), keys::Counters(id_, gid));
    const std::string prefix = keys::GroupOffsetPrefix(id_, gid);
    for (rocksdb::ColumnFamilyHandle* cf :
         {storage_->leases(), storage_->deleted()}) {
      storage_->DeleteRange(&batch, cf, prefix, keys::PrefixSuccessor(prefix));
    }
    st = storage_->Write(&batch);
    if (st.ok()) {
      TakeWaiters(**found, (*found)->waiters.size(), &wake);
      group_ids_.erase(group_ids_.find(name));
      groups_.erase(gid);
      UpdateLogicalFloorLocked(clock_->Now());
    }
    ExitExclusiveLocked();
  }
  WakeAll(wake);
  return st;
}

absl::StatusOr<std::vector<GroupInfo>> Queue::ListGroups() {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = EnterLocked(); !s.ok()) return s;
  std::vector<GroupInfo> out;
  for (const auto& [gid, g] : groups_) out.push_back(InfoLocked(*g));
  std::sort(
      out.begin() + 1, out.end(),
      [](const GroupInfo& a, const GroupInfo& b) { return a.name < b.name; });
  return out;
}

absl::StatusOr<GroupInfo> Queue::SeekGroup(absl::string_view name,
                                           const LogPosition& to) {
  absl::StatusOr<uint64_t> offset = ResolvePosition(to);
  if (!offset.ok()) return offset.status();
  std::vector<std::shared_ptr<QueueWaiter>> wake;
  absl::Status st;
  GroupInfo info;
  {
    absl::MutexLock lock(&mu_);
    if (absl::Status s = EnterExclusiveLocked(); !s.ok()) return s;
    absl::StatusOr<Group*> found = FindGroupLocked(name);
    if (!found.ok()) {
      ExitExclusiveLocked();
      return found.status();
    }
    Group& g = **found;
    const uint64_t at =
        std::min(std::max(*offset, logical_floor_), next_offset_);
    const uint32_t gid = g.state.id();
    GroupState moved(gid, g.state.name(), g.state.generation() + 1, at, at);
    rocksdb::WriteBatch batch;
    const std::string prefix = keys::GroupOffsetPrefix(id_, gid);
    for (rocksdb::ColumnFamilyHandle* cf :
         {storage_->leases(), storage_->deleted()}) {
      storage_->DeleteRange(&batch, cf, prefix, keys::PrefixSuccessor(prefix));
    }
    batch.Put(storage_->meta(), keys::Group(id_, gid),
              EncodeGroup(RecordOf(moved)));
    st = storage_->Write(&batch);
    if (st.ok()) {
      g.state.Reset(at, moved.generation());
      g.persisted_floor = at;
      g.lanes.clear();
      info = InfoLocked(g);
      TakeWaiters(g, g.waiters.size(), &wake);
      UpdateLogicalFloorLocked(clock_->Now());
    }
    ExitExclusiveLocked();
  }
  WakeAll(wake);
  if (!st.ok()) return st;
  return info;
}

absl::StatusOr<ReadResult> Queue::Read(const ReadOptions& options) {
  if (options.max_messages < 1 ||
      options.max_messages > Limits::kMaxBatchEntries) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_messages must be 1-", Limits::kMaxBatchEntries,
                     ", got ", options.max_messages));
  }
  if (options.max_bytes == 0 || options.max_bytes > kMaxAnswerBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_bytes must be 1-", kMaxAnswerBytes, ", got ", options.max_bytes));
  }
  absl::StatusOr<uint64_t> from = ResolvePosition(options.from);
  if (!from.ok()) return from.status();
  uint64_t end;
  {
    absl::MutexLock lock(&mu_);
    if (absl::Status s = EnterLocked(); !s.ok()) return s;
    end = committed_;
  }
  ReadResult result;
  result.next_offset = *from;
  size_t bytes = 0;
  RangeIterator it(storage_->db(), storage_->messages(),
                   keys::Message(id_, *from), keys::Message(id_, end));
  for (; it.Valid(); it.Next()) {
    if (static_cast<int>(result.messages.size()) >= options.max_messages) break;
    if (!result.messages.empty() &&
        bytes + it.value().size() > options.max_bytes) {
      break;
    }
    uint64_t qid, offset;
    MessageRecord rec;
    if (!keys::ParseMessage(it.key(), &qid, &offset)) {
      return absl::DataLossError("corrupted message key");
    }
    if (absl::Status s = DecodeMessage(it.value(), &rec); !s.ok()) return s;
    bytes += it.value().size();
    StoredMessage m;
    m.offset = offset;
    m.body = std::move(rec.body);
    m.attributes = std::move(rec.attributes);
    m.enqueue_time = FromUs(rec.enqueue_time_us);
    m.ordering_key = std::move(rec.ordering_key);
    result.messages.push_back(std::move(m));
    result.next_offset = offset + 1;
  }
  if (absl::Status s = it.status("read"); !s.ok()) return s;
  if (result.messages.empty()) result.next_offset = std::max(*from, end);
  return result;
}

absl::Status Queue::ApplyRetention() {
  const absl::Time now = clock_->Now();
  const QueueConfig config = this->config();
  rocksdb::WriteBatch batch;
  uint64_t removed = 0;
  absl::Status st;
  if (config.retention_max_age > absl::ZeroDuration()) {
    // Messages enqueued before the cutoff are removed whatever their state:
    // every group's floor moves past them.
    absl::StatusOr<uint64_t> cutoff =
        OffsetForTime(now - config.retention_max_age);
    if (!cutoff.ok()) return cutoff.status();
    absl::MutexLock lock(&mu_);
    if (*cutoff > logical_floor_) {
      if (absl::Status s = EnterExclusiveLocked(); !s.ok()) return s;
      // Memory moves first: should the write fail, what it removes is gone
      // for readers now and is written with the next floor write.
      for (auto& [gid, g] : groups_) {
        if (g->state.delete_floor() >= *cutoff) continue;
        g->state.DropBelow(*cutoff);
        RebuildLanesLocked(*g, now);
        batch.Put(storage_->meta(), keys::Group(id_, gid),
                  EncodeGroup(RecordOf(g->state)));
        for (rocksdb::ColumnFamilyHandle* cf :
             {storage_->leases(), storage_->deleted()}) {
          storage_->DeleteRange(&batch, cf, keys::GroupOffset(id_, gid, 0),
                                keys::GroupOffset(id_, gid, *cutoff));
        }
      }
      while (!delayed_.empty() && delayed_.begin()->first < *cutoff) {
        EraseDelayedLocked(delayed_.begin()->first);
      }
      logical_floor_ = *cutoff;
      floor_marks_.clear();
      removed = MaybeRemoveLocked(now, &batch);
      st = storage_->Write(&batch);
      if (st.ok()) {
        for (auto& [gid, g] : groups_) {
          g->persisted_floor = std::max(
              g->persisted_floor, std::min(*cutoff, g->state.delete_floor()));
        }
      }
      FinishRemoveLocked(removed, st.ok());
      ExitExclusiveLocked();
      if (!st.ok()) return st;
      batch.Clear();
    }
  }
  // Messages every group deleted long enough ago, and delete floors not
  // written yet.
  std::vector<std::pair<Group*, uint64_t>> floors_written;
  {
    absl::MutexLock lock(&mu_);
    if (absl::Status s = EnterLocked(); !s.ok()) return s;
    // Delays that have passed are no longer tracked: every reader treats a
    // message without one as visible.
    ExpireDelayedLocked(now);
    // Holes below the logical floor matter no more: no cursor goes there.
    holes_.erase(holes_.begin(), holes_.lower_bound(logical_floor_));
    UpdateLogicalFloorLocked(now);
    removed = MaybeRemoveLocked(now, &batch);
    // Dedup ids past the window are forgotten.
    bool expired = false;
    while (!dedup_order_.empty() &&
           dedup_order_.front().first + config.dedup_window <= now) {
      auto it = dedup_.find(dedup_order_.front().second);
      if (it != dedup_.end() && it->second.at == dedup_order_.front().first) {
        dedup_.erase(it);
      }
      dedup_order_.pop_front();
      expired = true;
    }
    if (expired) {
      storage_->DeleteRange(
          &batch, storage_->index(), keys::Dedup(id_, 0, ""),
          keys::Dedup(
              id_, std::max<int64_t>(0, ToUs(now - config.dedup_window)), ""));
    }
    for (auto& [gid, g] : groups_) {
      if (uint64_t f = MaybeWriteFloorLocked(*g, now, &batch); f > 0) {
        floors_written.emplace_back(g.get(), f);
      }
    }
    if (batch.Count() == 0) return absl::OkStatus();
    ++writes_in_flight_;
  }
  st = storage_->Write(&batch);
  absl::MutexLock lock(&mu_);
  FinishRemoveLocked(removed, st.ok());
  for (auto [g, f] : floors_written) FinishFloorWriteLocked(*g, f, st.ok());
  --writes_in_flight_;
  changed_.SignalAll();
  return st;
}

absl::Status Queue::Drop(rocksdb::WriteBatch* batch) {
  std::vector<std::shared_ptr<QueueWaiter>> wake;
  {
    absl::MutexLock lock(&mu_);
    if (absl::Status s = EnterExclusiveLocked(); !s.ok()) return s;
    batch->Delete(storage_->meta(), keys::QueueName(name_));
    batch->Delete(storage_->meta(), keys::Queue(id_));
    batch->Delete(storage_->meta(), keys::NextGroupId(id_));
    storage_->DeleteRange(batch, storage_->meta(), keys::GroupPrefix(id_),
                          keys::PrefixSuccessor(keys::GroupPrefix(id_)));
    storage_->DeleteRange(batch, storage_->meta(), keys::CountersPrefix(id_),
                          keys::PrefixSuccessor(keys::CountersPrefix(id_)));
    for (rocksdb::ColumnFamilyHandle* cf :
         {storage_->messages(), storage_->leases(), storage_->deleted()}) {
      storage_->DeleteRange(batch, cf, keys::QueueBegin(id_),
                            keys::QueueEnd(id_));
    }
    for (const std::string& prefix :
         {keys::DelayPrefix(id_), keys::TimeIndexPrefix(id_),
          keys::OrderingKeyPrefix(id_), keys::DedupPrefix(id_)}) {
      storage_->DeleteRange(batch, storage_->index(), prefix,
                            keys::PrefixSuccessor(prefix));
    }
    const absl::Status st = storage_->Write(batch);
    ExitExclusiveLocked();
    if (!st.ok()) return st;
    closed_ = absl::NotFoundError(absl::StrCat("queue ", name_, " not found"));
    TakeAllWaitersLocked(&wake);
  }
  WakeAll(wake);
  return absl::OkStatus();
}

void Queue::Close() {
  std::vector<std::shared_ptr<QueueWaiter>> wake;
  {
    absl::MutexLock lock(&mu_);
    if (closed_.ok()) {
      closed_ = absl::UnavailableError("the server is shutting down");
    }
    TakeAllWaitersLocked(&wake);
  }
  WakeAll(wake);
}

void Queue::TakeWaiters(Group& g, size_t n,
                        std::vector<std::shared_ptr<QueueWaiter>>* out) {
  while (n > 0 && !g.waiters.empty()) {
    std::shared_ptr<QueueWaiter> w = std::move(g.waiters.front());
    g.waiters.pop_front();
    g.waiters_after_sweep = std::min(g.waiters_after_sweep, g.waiters.size());
    if (w->Parked()) {
      out->push_back(std::move(w));
      --n;
    }
  }
}

void Queue::TakeAllWaitersLocked(
    std::vector<std::shared_ptr<QueueWaiter>>* out) {
  for (auto& [gid, g] : groups_) TakeWaiters(*g, g->waiters.size(), out);
}

void Queue::ScheduleCheckLocked() {
  std::optional<absl::Time> next;
  for (auto& [gid, g] : groups_) {
    // Drop waiters that left (timed out, cancelled) while nothing happened,
    // once the list has doubled since it was last swept: amortized O(1).
    if (g->waiters.size() >= 2 * std::max<size_t>(32, g->waiters_after_sweep)) {
      std::deque<std::shared_ptr<QueueWaiter>> keep;
      for (auto& w : g->waiters) {
        if (w->Parked()) keep.push_back(std::move(w));
      }
      g->waiters.swap(keep);
      g->waiters_after_sweep = g->waiters.size();
    }
    if (g->waiters.empty()) continue;
    std::optional<absl::Time> t = g->state.NextDeadline();
    if (t.has_value() && (!next.has_value() || *t < *next)) next = t;
  }
  if (!next.has_value() || *next >= next_check_) return;
  next_check_ = *next;
  dispatcher_->At(*next, [weak = weak_from_this()] {
    if (std::shared_ptr<Queue> q = weak.lock()) q->CheckDeadlines();
  });
}

void Queue::CheckDeadlines() {
  std::vector<std::shared_ptr<QueueWaiter>> wake;
  {
    absl::MutexLock lock(&mu_);
    next_check_ = absl::InfiniteFuture();
    const absl::Time now = clock_->Now();
    for (auto& [gid, g] : groups_) {
      g->state.Expire(now);
      TakeWaiters(*g, g->state.ready_count(), &wake);
    }
    ScheduleCheckLocked();
  }
  WakeAll(wake);
}

void Queue::WakeAll(const std::vector<std::shared_ptr<QueueWaiter>>& ws) {
  for (const auto& w : ws) w->Wake();
}

}  // namespace weir
