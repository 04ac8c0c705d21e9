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

// A Receive answer stops growing past this many body and attribute bytes
// (but always carries at least one message).
constexpr size_t kMaxReceiveBytes = 8 << 20;
// How often the delete floor (and the range deletes it allows) is written:
// after this many offsets, or after kFloorWriteInterval.
constexpr uint64_t kFloorWriteStep = 1024;
constexpr absl::Duration kFloorWriteInterval = absl::Seconds(1);
// A Receive looks at most this many offsets beyond what it returns (delayed
// messages it skips, holes).
constexpr int kMaxExtraScan = 1024;

int64_t ToUs(absl::Time t) { return absl::ToUnixMicros(t); }
absl::Time FromUs(int64_t us) { return absl::FromUnixMicros(us); }

size_t MessageBytes(const std::string& body, const Attributes& attributes) {
  size_t n = body.size();
  for (const auto& [k, v] : attributes) n += k.size() + v.size();
  return n;
}

// The key range of one group's records in the leases/deleted families.
std::string GroupBegin(uint64_t qid, uint32_t gid, uint64_t offset) {
  return keys::GroupOffset(qid, gid, offset);
}
std::string GroupEnd(uint64_t qid, uint32_t gid) {
  return keys::PrefixSuccessor(keys::GroupOffset(qid, gid, 0).substr(0, 12));
}

std::string DelayPrefix(uint64_t qid) {
  return keys::Delay(qid, 0, 0).substr(0, 9);
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

}  // namespace

Queue::Queue(Storage* storage, Clock* clock, Dispatcher* dispatcher,
             const QueueRecord& record)
    : storage_(storage),
      clock_(clock),
      dispatcher_(dispatcher),
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

QueueInfo Queue::info() const {
  return QueueInfo{name_, config_, create_time_};
}

absl::Status Queue::Load() {
  rocksdb::DB* db = storage_->db();
  absl::MutexLock lock(&mu_);

  // Groups.
  {
    const std::string begin = keys::GroupPrefix(id_);
    const std::string end = keys::PrefixSuccessor(begin);
    rocksdb::Slice upper(end);
    rocksdb::ReadOptions ro;
    ro.iterate_upper_bound = &upper;
    std::unique_ptr<rocksdb::Iterator> it(
        db->NewIterator(ro, storage_->meta()));
    for (it->Seek(begin); it->Valid(); it->Next()) {
      GroupRecord rec;
      absl::Status s = DecodeGroup(
          absl::string_view(it->value().data(), it->value().size()), &rec);
      if (!s.ok()) return s;
      auto g = std::make_unique<Group>(GroupState(
          rec.id, rec.name, rec.generation, rec.delete_floor, rec.cursor_base));
      g->persisted_floor = rec.delete_floor;
      groups_[rec.id] = std::move(g);
    }
    if (!it->status().ok()) return FromRocks(it->status(), "load groups");
  }
  if (groups_.find(0) == groups_.end()) {
    groups_[0] = std::make_unique<Group>(GroupState(0, "", 0, 0, 0));
  }

  // The next offset: after the last stored message, and never below what a
  // group has already passed (the last messages may have been removed).
  uint64_t next = 0;
  {
    std::unique_ptr<rocksdb::Iterator> it(
        db->NewIterator(rocksdb::ReadOptions(), storage_->messages()));
    it->SeekForPrev(keys::QueueEnd(id_));
    uint64_t qid, offset;
    if (it->Valid() &&
        keys::ParseMessage(
            absl::string_view(it->key().data(), it->key().size()), &qid,
            &offset) &&
        qid == id_) {
      next = offset + 1;
    }
    if (!it->status().ok()) return FromRocks(it->status(), "load offsets");
  }

  // Leases and deletions, from each group's floor up.
  for (auto& [gid, g] : groups_) {
    for (int pass = 0; pass < 2; ++pass) {
      rocksdb::ColumnFamilyHandle* cf =
          pass == 0 ? storage_->leases() : storage_->deleted();
      const std::string begin = GroupBegin(id_, gid, g->state.delete_floor());
      const std::string end = GroupEnd(id_, gid);
      rocksdb::Slice upper(end);
      rocksdb::ReadOptions ro;
      ro.iterate_upper_bound = &upper;
      std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(ro, cf));
      for (it->Seek(begin); it->Valid(); it->Next()) {
        uint64_t qid, offset;
        uint32_t kgid;
        if (!keys::ParseGroupOffset(
                absl::string_view(it->key().data(), it->key().size()), &qid,
                &kgid, &offset)) {
          return absl::DataLossError("corrupted lease key");
        }
        if (pass == 0) {
          LeaseRecord lease;
          absl::Status s = DecodeLease(
              absl::string_view(it->value().data(), it->value().size()),
              &lease);
          if (!s.ok()) return s;
          g->state.RestoreLease(offset, FromUs(lease.deadline_us),
                                lease.receive_count);
        } else {
          g->state.RestoreDeleted(offset);
        }
      }
      if (!it->status().ok()) return FromRocks(it->status(), "load leases");
    }
    next = std::max(next, g->state.cursor());

    std::string counters;
    rocksdb::Status s = db->Get(rocksdb::ReadOptions(), storage_->meta(),
                                keys::Counters(id_, gid), &counters);
    if (s.ok()) {
      absl::Status ds = DecodeCounters(counters, &g->counters);
      if (!ds.ok()) return ds;
    } else if (!s.IsNotFound()) {
      return FromRocks(s, "load counters");
    }
  }
  next_offset_ = committed_ = next;

  // Messages still held back by a send delay.
  {
    const absl::Time now = clock_->Now();
    const std::string end = keys::PrefixSuccessor(DelayPrefix(id_));
    rocksdb::Slice upper(end);
    rocksdb::ReadOptions ro;
    ro.iterate_upper_bound = &upper;
    std::unique_ptr<rocksdb::Iterator> it(
        db->NewIterator(ro, storage_->index()));
    for (it->Seek(keys::Delay(id_, ToUs(now), 0)); it->Valid(); it->Next()) {
      uint64_t qid, visible_us, offset;
      if (!keys::ParseDelay(
              absl::string_view(it->key().data(), it->key().size()), &qid,
              &visible_us, &offset)) {
        return absl::DataLossError("corrupted delay index key");
      }
      delayed_[offset] = FromUs(static_cast<int64_t>(visible_us));
    }
    if (!it->status().ok()) return FromRocks(it->status(), "load delays");
  }
  return absl::OkStatus();
}

absl::Status Queue::EnterLocked() {
  while (exclusive_) changed_.Wait(&mu_);
  return closed_;
}

Queue::Group* Queue::FindGroupLocked(uint32_t gid) {
  auto it = groups_.find(gid);
  return it == groups_.end() ? nullptr : it->second.get();
}

Queue::Group& Queue::DefaultGroupLocked() { return *groups_.at(0); }

absl::StatusOr<std::vector<uint64_t>> Queue::Send(
    absl::Span<const SendEntry> entries) {
  if (absl::Status s = ValidateBatchSize(entries.size(), "a send batch");
      !s.ok()) {
    return s;
  }
  for (size_t i = 0; i < entries.size(); ++i) {
    const SendEntry& e = entries[i];
    const size_t bytes = MessageBytes(e.body, e.attributes);
    if (bytes > static_cast<size_t>(config_.max_message_bytes)) {
      return absl::InvalidArgumentError(
          absl::StrCat("entry ", i, ": message of ", bytes,
                       " bytes exceeds the queue's max_message_bytes ",
                       config_.max_message_bytes));
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
  }

  const absl::Time now = clock_->Now();
  const size_t n = entries.size();
  std::vector<std::string> values(n);
  std::vector<absl::Time> visible_at(n, absl::InfinitePast());
  for (size_t i = 0; i < n; ++i) {
    const absl::Duration delay = entries[i].delay.value_or(config_.delay);
    MessageRecord rec;
    rec.enqueue_time_us = ToUs(now);
    if (delay > absl::ZeroDuration()) {
      visible_at[i] = now + delay;
      rec.visible_at_us = ToUs(visible_at[i]);
    }
    rec.attributes = entries[i].attributes;
    rec.body = entries[i].body;
    values[i] = EncodeMessage(rec);
  }

  uint64_t first;
  {
    absl::MutexLock lock(&mu_);
    if (absl::Status s = EnterLocked(); !s.ok()) return s;
    first = next_offset_;
    next_offset_ += n;
    pending_sends_[first] = {first + n, false};
    for (size_t i = 0; i < n; ++i) {
      if (visible_at[i] > now) delayed_[first + i] = visible_at[i];
    }
    ++writes_in_flight_;
  }

  rocksdb::WriteBatch batch;
  for (size_t i = 0; i < n; ++i) {
    batch.Put(storage_->messages(), keys::Message(id_, first + i), values[i]);
    if (visible_at[i] > now) {
      batch.Put(storage_->index(),
                keys::Delay(id_, ToUs(visible_at[i]), first + i), "");
    }
  }
  Counters delta;
  delta.sent = n;
  batch.Merge(storage_->meta(), keys::Counters(id_, 0), EncodeCounters(delta));
  const absl::Status st = storage_->Write(&batch);

  std::vector<std::shared_ptr<QueueWaiter>> wake;
  {
    absl::MutexLock lock(&mu_);
    pending_sends_[first].second = true;
    if (!st.ok()) {
      for (uint64_t o = first; o < first + n; ++o) {
        holes_.insert(o);
        delayed_.erase(o);
      }
    } else {
      DefaultGroupLocked().counters.sent += n;
    }
    const uint64_t before = committed_;
    while (!pending_sends_.empty() && pending_sends_.begin()->second.second) {
      committed_ = pending_sends_.begin()->second.first;
      pending_sends_.erase(pending_sends_.begin());
    }
    if (committed_ > before) wake = TakeWaitersLocked(committed_ - before);
    --writes_in_flight_;
    changed_.SignalAll();
  }
  WakeAll(wake);
  if (!st.ok()) return st;
  std::vector<uint64_t> offsets(n);
  for (size_t i = 0; i < n; ++i) offsets[i] = first + i;
  return offsets;
}

absl::StatusOr<std::vector<ReceivedMessage>> Queue::Receive(
    const ReceiveOptions& options, std::shared_ptr<QueueWaiter> waiter,
    bool* parked) {
  *parked = false;
  if (options.max_messages < 1 ||
      options.max_messages > Limits::kMaxBatchEntries) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_messages must be 1-", Limits::kMaxBatchEntries,
                     ", got ", options.max_messages));
  }
  const absl::Duration timeout =
      options.visibility_timeout.value_or(config_.visibility_timeout);
  if (absl::Status s = ValidateVisibilityTimeout(timeout); !s.ok()) return s;

  struct Pick {
    uint64_t offset;
    GroupState::Lease lease;
    GroupState::Undo undo;
    bool delay_only;
    enum { kKeep, kGone, kAbort } fate = kKeep;
  };
  std::vector<Pick> picks;
  const absl::Time now = clock_->Now();
  const absl::Time deadline = now + timeout;
  Group* group;
  uint32_t generation;
  {
    absl::MutexLock lock(&mu_);
    if (absl::Status s = EnterLocked(); !s.ok()) return s;
    group = &DefaultGroupLocked();
    GroupState& gs = group->state;
    generation = gs.generation();
    gs.Expire(now);
    int taken = 0;
    int scanned = 0;
    while (taken < options.max_messages &&
           scanned++ < options.max_messages + kMaxExtraScan) {
      if (std::optional<uint64_t> r = gs.FirstReady()) {
        auto [lease, undo] = gs.BeginLease(*r, deadline, false);
        picks.push_back({*r, lease, undo, false});
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
      if (auto d = delayed_.find(c); d != delayed_.end()) {
        if (d->second > now) {
          auto [lease, undo] = gs.BeginLease(c, d->second, true);
          picks.push_back({c, lease, undo, true});
          continue;
        }
        delayed_.erase(d);
      }
      auto [lease, undo] = gs.BeginLease(c, deadline, false);
      picks.push_back({c, lease, undo, false});
      ++taken;
    }
    if (taken == 0 && waiter != nullptr && waiter->OnPark()) {
      waiters_.push_back(std::move(waiter));
      *parked = true;
      ScheduleCheckLocked();
    }
    if (picks.empty()) return std::vector<ReceivedMessage>();
    ++writes_in_flight_;
  }

  // Read the bodies (immutable once written) without the lock.
  std::vector<std::string> key_bufs;
  std::vector<size_t> read_index;
  for (size_t i = 0; i < picks.size(); ++i) {
    if (picks[i].delay_only) continue;
    key_bufs.push_back(keys::Message(id_, picks[i].offset));
    read_index.push_back(i);
  }
  std::vector<rocksdb::Slice> read_keys(key_bufs.begin(), key_bufs.end());
  std::vector<std::string> values;
  std::vector<rocksdb::ColumnFamilyHandle*> cfs(read_keys.size(),
                                                storage_->messages());
  std::vector<rocksdb::Status> read_status =
      storage_->db()->MultiGet(rocksdb::ReadOptions(), cfs, read_keys, &values);

  absl::Status st;
  std::vector<ReceivedMessage> out;
  out.reserve(read_index.size());
  size_t bytes = 0;
  for (size_t k = 0; k < read_index.size() && st.ok(); ++k) {
    Pick& p = picks[read_index[k]];
    if (read_status[k].IsNotFound()) {
      p.fate = Pick::kGone;
      continue;
    }
    if (!read_status[k].ok()) {
      st = FromRocks(read_status[k], "read message");
      break;
    }
    if (!out.empty() && bytes + values[k].size() > kMaxReceiveBytes) {
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
    bytes += values[k].size();
    ReceivedMessage m;
    m.offset = p.offset;
    m.body = std::move(rec.body);
    m.attributes = std::move(rec.attributes);
    m.enqueue_time = FromUs(rec.enqueue_time_us);
    m.receive_count = p.lease.receive_count;
    m.lease_deadline = p.lease.deadline;
    m.receipt_handle = EncodeReceipt(Receipt{id_, group->state.id(), generation,
                                             p.offset, p.lease.receive_count});
    out.push_back(std::move(m));
  }

  if (st.ok()) {
    rocksdb::WriteBatch batch;
    for (const Pick& p : picks) {
      if (p.fate != Pick::kKeep) continue;
      LeaseRecord rec{ToUs(p.lease.deadline), p.lease.receive_count};
      batch.Put(storage_->leases(),
                keys::GroupOffset(id_, group->state.id(), p.offset),
                EncodeLease(rec));
    }
    if (!out.empty()) {
      Counters delta;
      delta.received = out.size();
      batch.Merge(storage_->meta(), keys::Counters(id_, group->state.id()),
                  EncodeCounters(delta));
    }
    if (batch.Count() > 0) st = storage_->Write(&batch);
  }

  std::vector<std::shared_ptr<QueueWaiter>> wake;
  {
    absl::MutexLock lock(&mu_);
    GroupState& gs = group->state;
    size_t returned = 0;
    for (const Pick& p : picks) {
      if (p.fate == Pick::kGone) {
        gs.MarkGone(p.offset);
      } else if (p.fate == Pick::kAbort || !st.ok()) {
        gs.AbortLease(p.offset, p.undo);
        ++returned;
      } else {
        gs.CommitLease(p.offset);
      }
    }
    if (st.ok()) group->counters.received += out.size();
    if (returned > 0) wake = TakeWaitersLocked(returned);
    ScheduleCheckLocked();
    --writes_in_flight_;
    changed_.SignalAll();
  }
  WakeAll(wake);
  if (!st.ok()) return st;
  return out;
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
void FillDuplicates(absl::Span<const std::string> receipts,
                    std::vector<absl::Status>* results) {
  absl::flat_hash_map<absl::string_view, size_t> first;
  for (size_t i = 0; i < receipts.size(); ++i) {
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
  GroupRecord rec;
  rec.id = g.state.id();
  rec.name = g.state.name();
  rec.delete_floor = floor;
  rec.cursor_base = floor;
  rec.generation = g.state.generation();
  batch->Put(storage_->meta(), keys::Group(id_, rec.id), EncodeGroup(rec));
  batch->DeleteRange(storage_->deleted(),
                     keys::GroupOffset(id_, rec.id, g.persisted_floor),
                     keys::GroupOffset(id_, rec.id, floor));
  // Messages below every group's floor are gone for good.
  uint64_t min_floor = floor;
  for (const auto& [gid, other] : groups_) {
    min_floor = std::min(min_floor, other->state.delete_floor());
  }
  batch->DeleteRange(storage_->messages(), keys::Message(id_, 0),
                     keys::Message(id_, min_floor));
  // Delay index entries in the past are no longer needed.
  batch->DeleteRange(storage_->index(), keys::Delay(id_, 0, 0),
                     keys::Delay(id_, ToUs(now), 0));
  g.floor_write_in_flight = true;
  g.last_floor_write = now;
  return floor;
}

void Queue::FinishFloorWriteLocked(Group& g, uint64_t floor, bool ok) {
  if (floor == 0) return;
  g.floor_write_in_flight = false;
  if (ok) g.persisted_floor = std::max(g.persisted_floor, floor);
}

absl::StatusOr<std::vector<absl::Status>> Queue::Delete(
    absl::Span<const std::string> receipts) {
  if (absl::Status s = ValidateBatchSize(receipts.size(), "a delete batch");
      !s.ok()) {
    return s;
  }
  std::vector<absl::Status> results(receipts.size());
  std::vector<Change> changes;
  rocksdb::WriteBatch batch;
  uint64_t floor_written = 0;
  {
    absl::MutexLock lock(&mu_);
    if (absl::Status s = EnterLocked(); !s.ok()) return s;
    changes = ResolveReceiptsLocked(receipts, /*deleting=*/true, &results);
    if (changes.empty()) {
      FillDuplicates(receipts, &results);
      return results;
    }
    floor_written =
        MaybeWriteFloorLocked(DefaultGroupLocked(), clock_->Now(), &batch);
    ++writes_in_flight_;
  }

  absl::flat_hash_map<uint32_t, uint64_t> per_group;
  for (const Change& c : changes) {
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
  const absl::Status st = storage_->Write(&batch);

  {
    absl::MutexLock lock(&mu_);
    for (const Change& c : changes) {
      if (st.ok()) {
        c.group->state.CommitDelete(c.offset);
        ++c.group->counters.deleted;
      } else {
        c.group->state.AbortChange(c.offset);
      }
      results[c.index] = st;
    }
    FinishFloorWriteLocked(DefaultGroupLocked(), floor_written, st.ok());
    ScheduleCheckLocked();
    --writes_in_flight_;
    changed_.SignalAll();
  }
  FillDuplicates(receipts, &results);
  return results;
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
  for (size_t i = 0; i < changes_in.size(); ++i) {
    absl::Status s =
        ValidateVisibilityTimeout(changes_in[i].visibility_timeout);
    if (!s.ok()) {
      results[i] = s;
      checked[i].clear();
    }
  }

  std::vector<Change> changes;
  const absl::Time now = clock_->Now();
  {
    absl::MutexLock lock(&mu_);
    if (absl::Status s = EnterLocked(); !s.ok()) return s;
    std::vector<absl::Status> resolved(changes_in.size());
    changes = ResolveReceiptsLocked(checked, /*deleting=*/false, &resolved);
    for (size_t i = 0; i < changes_in.size(); ++i) {
      if (!checked[i].empty()) results[i] = resolved[i];
    }
    if (changes.empty()) {
      FillDuplicates(receipts, &results);
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
    size_t released = 0;
    for (const Change& c : changes) {
      const absl::Duration t = changes_in[c.index].visibility_timeout;
      if (st.ok()) {
        c.group->state.CommitDeadline(c.offset, now + t);
        if (t == absl::ZeroDuration()) ++released;
      } else {
        c.group->state.AbortChange(c.offset);
      }
      results[c.index] = st;
    }
    if (released > 0) wake = TakeWaitersLocked(released);
    ScheduleCheckLocked();
    --writes_in_flight_;
    changed_.SignalAll();
  }
  WakeAll(wake);
  FillDuplicates(receipts, &results);
  return results;
}

absl::StatusOr<uint64_t> Queue::Purge() {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = EnterLocked(); !s.ok()) return s;
  exclusive_ = true;
  while (writes_in_flight_ > 0) changed_.Wait(&mu_);

  const uint64_t end = next_offset_;
  uint64_t purged = 0;
  {
    const GroupState& gs = DefaultGroupLocked().state;
    const uint64_t holes_above =
        std::distance(holes_.lower_bound(gs.delete_floor()), holes_.end());
    purged = end - gs.delete_floor() - gs.deleted_above_floor() - holes_above;
  }
  rocksdb::WriteBatch batch;
  batch.DeleteRange(storage_->messages(), keys::QueueBegin(id_),
                    keys::Message(id_, end));
  batch.DeleteRange(storage_->leases(), keys::QueueBegin(id_),
                    keys::QueueEnd(id_));
  batch.DeleteRange(storage_->deleted(), keys::QueueBegin(id_),
                    keys::QueueEnd(id_));
  batch.DeleteRange(storage_->index(), DelayPrefix(id_),
                    keys::PrefixSuccessor(DelayPrefix(id_)));
  for (const auto& [gid, g] : groups_) {
    GroupRecord rec;
    rec.id = gid;
    rec.name = g->state.name();
    rec.delete_floor = end;
    rec.cursor_base = end;
    rec.generation = g->state.generation();
    batch.Put(storage_->meta(), keys::Group(id_, gid), EncodeGroup(rec));
  }
  const absl::Status st = storage_->Write(&batch);
  if (st.ok()) {
    for (auto& [gid, g] : groups_) {
      g->state.Reset(end);
      g->persisted_floor = end;
    }
    holes_.clear();
    delayed_.clear();
  }
  exclusive_ = false;
  changed_.SignalAll();
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
  for (const auto& [offset, visible] : delayed_) {
    if (offset >= c && offset < committed_ && visible > now) ++*delayed;
  }
  *ready = committed_ - c - holes - *delayed;
}

absl::StatusOr<QueueStats> Queue::Stats() {
  QueueStats stats;
  const absl::Time now = clock_->Now();
  std::optional<uint64_t> oldest;
  {
    absl::MutexLock lock(&mu_);
    if (absl::Status s = EnterLocked(); !s.ok()) return s;
    Group& g = DefaultGroupLocked();
    g.state.Expire(now);
    uint64_t fresh_ready, fresh_delayed;
    CountFreshLocked(g.state, now, &fresh_ready, &fresh_delayed);
    size_t in_flight, delayed;
    g.state.CountPending(&in_flight, &delayed);
    stats.ready = g.state.ready_count() + fresh_ready;
    stats.in_flight = in_flight;
    stats.delayed = delayed + fresh_delayed;
    stats.sent_total = g.counters.sent;
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

absl::Status Queue::Drop(rocksdb::WriteBatch* batch) {
  std::vector<std::shared_ptr<QueueWaiter>> wake;
  {
    absl::MutexLock lock(&mu_);
    if (absl::Status s = EnterLocked(); !s.ok()) return s;
    exclusive_ = true;
    while (writes_in_flight_ > 0) changed_.Wait(&mu_);
    batch->Delete(storage_->meta(), keys::QueueName(name_));
    batch->Delete(storage_->meta(), keys::Queue(id_));
    batch->DeleteRange(storage_->meta(), keys::GroupPrefix(id_),
                       keys::PrefixSuccessor(keys::GroupPrefix(id_)));
    batch->DeleteRange(storage_->meta(), keys::CountersPrefix(id_),
                       keys::PrefixSuccessor(keys::CountersPrefix(id_)));
    for (rocksdb::ColumnFamilyHandle* cf :
         {storage_->messages(), storage_->leases(), storage_->deleted()}) {
      batch->DeleteRange(cf, keys::QueueBegin(id_), keys::QueueEnd(id_));
    }
    batch->DeleteRange(storage_->index(), DelayPrefix(id_),
                       keys::PrefixSuccessor(DelayPrefix(id_)));
    const absl::Status st = storage_->Write(batch);
    exclusive_ = false;
    changed_.SignalAll();
    if (!st.ok()) return st;
    closed_ = absl::NotFoundError(absl::StrCat("queue ", name_, " not found"));
    wake = TakeWaitersLocked(waiters_.size());
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
    wake = TakeWaitersLocked(waiters_.size());
  }
  WakeAll(wake);
}

std::vector<std::shared_ptr<QueueWaiter>> Queue::TakeWaitersLocked(size_t n) {
  std::vector<std::shared_ptr<QueueWaiter>> out;
  while (n > 0 && !waiters_.empty()) {
    std::shared_ptr<QueueWaiter> w = std::move(waiters_.front());
    waiters_.pop_front();
    if (w->Parked()) {
      out.push_back(std::move(w));
      --n;
    }
  }
  return out;
}

void Queue::ScheduleCheckLocked() {
  // Drop waiters that left (timed out, cancelled) while nothing happened.
  if (waiters_.size() >= 64) {
    size_t parked = 0;
    for (const auto& w : waiters_) parked += w->Parked() ? 1 : 0;
    if (parked * 2 < waiters_.size()) {
      std::deque<std::shared_ptr<QueueWaiter>> keep;
      for (auto& w : waiters_) {
        if (w->Parked()) keep.push_back(std::move(w));
      }
      waiters_.swap(keep);
    }
  }
  if (waiters_.empty()) return;
  std::optional<absl::Time> next;
  for (const auto& [gid, g] : groups_) {
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
    size_t ready = 0;
    for (auto& [gid, g] : groups_) {
      g->state.Expire(now);
      ready += g->state.ready_count();
    }
    if (ready > 0) wake = TakeWaitersLocked(ready);
    ScheduleCheckLocked();
  }
  WakeAll(wake);
}

void Queue::WakeAll(const std::vector<std::shared_ptr<QueueWaiter>>& ws) {
  for (const auto& w : ws) w->Wake();
}

}  // namespace weir
