#include "engine/storage.h"

#include "absl/strings/str_cat.h"
#include "engine/coding.h"
#include "engine/key_codec.h"
#include "rocksdb/filter_policy.h"
#include "rocksdb/merge_operator.h"
#include "rocksdb/table.h"
#include "rocksdb/utilities/table_properties_collectors.h"

namespace weir {
namespace {

// Adds fixed-width big-endian uint64 vectors field by field (Counters).
class AddUint64sOperator : public rocksdb::AssociativeMergeOperator {
 public:
  bool Merge(const rocksdb::Slice& /*key*/, const rocksdb::Slice* existing,
             const rocksdb::Slice& value, std::string* new_value,
             rocksdb::Logger* /*logger*/) const override {
    if (value.size() % 8 != 0) return false;
    if (existing == nullptr) {
      new_value->assign(value.data(), value.size());
      return true;
    }
    if (existing->size() != value.size()) return false;
    new_value->clear();
    for (size_t i = 0; i < value.size(); i += 8) {
      PutFixed64BE(new_value, DecodeFixed64BE(existing->data() + i) +
                                  DecodeFixed64BE(value.data() + i));
    }
    return true;
  }
  const char* Name() const override { return "weir.AddUint64s"; }
};

rocksdb::ColumnFamilyOptions BaseCfOptions() {
  rocksdb::ColumnFamilyOptions cf;
  rocksdb::BlockBasedTableOptions table;
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  table.whole_key_filtering = true;
  cf.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  cf.compression = rocksdb::kNoCompression;
  return cf;
}

// Column families whose keys are deleted in bulk (consumed messages and
// their lease records) are compacted when a file fills with tombstones, so
// iterators and disk usage do not suffer from deleted data.
rocksdb::ColumnFamilyOptions QueueLogCfOptions() {
  rocksdb::ColumnFamilyOptions cf = BaseCfOptions();
  cf.table_properties_collector_factories.push_back(
      rocksdb::NewCompactOnDeletionCollectorFactory(
          /*sliding_window_size=*/4096, /*deletion_trigger=*/1024,
          /*deletion_ratio=*/0.5));
  return cf;
}

// Copies the records of one batch into another (WriteBatch has no public
// append). Only what Weir writes is handled; anything else fails the copy.
class BatchCopier : public rocksdb::WriteBatch::Handler {
 public:
  BatchCopier(rocksdb::WriteBatch* to,
              const std::vector<rocksdb::ColumnFamilyHandle*>& handles)
      : to_(to), handles_(handles) {}

  rocksdb::Status PutCF(uint32_t cf, const rocksdb::Slice& key,
                        const rocksdb::Slice& value) override {
    rocksdb::ColumnFamilyHandle* h = Find(cf);
    return h == nullptr ? Unknown() : to_->Put(h, key, value);
  }
  rocksdb::Status DeleteCF(uint32_t cf, const rocksdb::Slice& key) override {
    rocksdb::ColumnFamilyHandle* h = Find(cf);
    return h == nullptr ? Unknown() : to_->Delete(h, key);
  }
  rocksdb::Status SingleDeleteCF(uint32_t cf,
                                 const rocksdb::Slice& key) override {
    rocksdb::ColumnFamilyHandle* h = Find(cf);
    return h == nullptr ? Unknown() : to_->SingleDelete(h, key);
  }
  rocksdb::Status DeleteRangeCF(uint32_t cf, const rocksdb::Slice& begin,
                                const rocksdb::Slice& end) override {
    rocksdb::ColumnFamilyHandle* h = Find(cf);
    return h == nullptr ? Unknown() : to_->DeleteRange(h, begin, end);
  }
  rocksdb::Status MergeCF(uint32_t cf, const rocksdb::Slice& key,
                          const rocksdb::Slice& value) override {
    rocksdb::ColumnFamilyHandle* h = Find(cf);
    return h == nullptr ? Unknown() : to_->Merge(h, key, value);
  }

 private:
  rocksdb::ColumnFamilyHandle* Find(uint32_t id) const {
    for (rocksdb::ColumnFamilyHandle* h : handles_) {
      if (h->GetID() == id) return h;
    }
    return nullptr;
  }
  static rocksdb::Status Unknown() {
    return rocksdb::Status::InvalidArgument("unknown column family");
  }

  rocksdb::WriteBatch* const to_;
  const std::vector<rocksdb::ColumnFamilyHandle*>& handles_;
};

// Merge operands of one key a memtable holds in a row before a write folds
// them into a value.
constexpr size_t kMaxSuccessiveMerges = 16;

// Most bytes of batches merged into one write.
constexpr size_t kMaxMergedBytes = 16 << 20;

}  // namespace

absl::Status FromRocks(const rocksdb::Status& s, const char* what) {
  if (s.ok()) return absl::OkStatus();
  const std::string msg = absl::StrCat(what, ": ", s.ToString());
  if (s.IsNoSpace() || s.subcode() == rocksdb::Status::kSpaceLimit) {
    return absl::ResourceExhaustedError(
        absl::StrCat(msg,
                     " (storage is full; writes resume once space is "
                     "freed)"));
  }
  if (s.IsCorruption()) return absl::DataLossError(msg);
  if (s.IsNotFound()) return absl::NotFoundError(msg);
  if (s.IsInvalidArgument()) return absl::InvalidArgumentError(msg);
  if (s.IsBusy() || s.IsTryAgain() || s.IsTimedOut()) {
    return absl::UnavailableError(msg);
  }
  if (s.IsIOError()) return absl::UnavailableError(msg);
  return absl::InternalError(msg);
}

absl::StatusOr<std::unique_ptr<Storage>> Storage::Open(
    const StorageOptions& options, const std::string& path) {
  rocksdb::DBOptions db_options;
  db_options.create_if_missing = options.create_if_missing;
  db_options.create_missing_column_families = true;
  if (options.env != nullptr) db_options.env = options.env;
  db_options.max_background_jobs = 2;
  // One write group leader writes the WAL and every memtable insert of its
  // group, and wakes each follower once. Pipelined writes and concurrent
  // memtable inserts wake followers several times per write: on two cores,
  // eight concurrent senders then ran at a fifth of one sender's rate
  // (bench/send_bench BM_SendConcurrent; docs/benchmarks.md).
  db_options.enable_pipelined_write = false;
  db_options.allow_concurrent_memtable_write = false;
  db_options.db_write_buffer_size = options.memtable_budget_bytes;
  db_options.keep_log_file_num = 4;
  db_options.max_total_wal_size = 256 << 20;
  db_options.wal_recovery_mode = rocksdb::WALRecoveryMode::kPointInTimeRecovery;

  rocksdb::ColumnFamilyOptions meta = BaseCfOptions();
  meta.merge_operator = std::make_shared<AddUint64sOperator>();
  // Every send and receive merges into its queue's counters. Without a
  // bound, a memtable holds a million operands of one key, and the flush
  // that folds them allocates for all of them at once (about 160 MiB that
  // the process then keeps); past this many in a row the write folds them.
  meta.max_successive_merges = kMaxSuccessiveMerges;
  std::vector<rocksdb::ColumnFamilyDescriptor> cfs = {
      {rocksdb::kDefaultColumnFamilyName, BaseCfOptions()},
      {kMetaCf, meta},
      {kMessagesCf, QueueLogCfOptions()},
      {kLeasesCf, QueueLogCfOptions()},
      {kDeletedCf, QueueLogCfOptions()},
      {kIndexCf, QueueLogCfOptions()},
  };

  std::unique_ptr<Storage> storage(new Storage);
  rocksdb::Status s = rocksdb::DB::Open(db_options, path, cfs,
                                        &storage->handles_, &storage->db_);
  if (!s.ok()) return FromRocks(s, "open database");
  storage->write_options_.sync = options.sync;
  storage->after_write_for_test_ = options.after_write_for_test;
  storage->commit_thread_ =
      std::thread([raw = storage.get()] { raw->CommitLoop(); });
  if (!options.sync && options.wal_sync_interval > absl::ZeroDuration()) {
    storage->wal_sync_thread_ =
        std::thread([s = storage.get(), interval = options.wal_sync_interval] {
          s->SyncWalLoop(interval);
        });
  }
  return storage;
}

void Storage::SyncWalLoop(absl::Duration interval) {
  for (;;) {
    {
      // Waits on real time, not the engine's Clock: this paces the disk,
      // and promises callers nothing beyond the documented bound.
      absl::MutexLock lock(&wal_sync_mu_);
      wal_sync_mu_.AwaitWithTimeout(absl::Condition(&stopping_), interval);
      if (stopping_) return;
    }
    // An empty write with sync set fsyncs every log written so far. Not
    // DB::SyncWAL: that one reaches the log file even after a write to it
    // has failed, which Debian's RocksDB (built with assertions) aborts on;
    // a write is refused first while the database is stopped by the error.
    // A failure here is one every writer sees; this thread only tries again
    // next time.
    rocksdb::WriteOptions synced;
    synced.sync = true;
    rocksdb::WriteBatch empty;
    db_->Write(synced, &empty).PermitUncheckedError();
  }
}

Storage::~Storage() {
  if (wal_sync_thread_.joinable()) {
    {
      absl::MutexLock lock(&wal_sync_mu_);
      stopping_ = true;
    }
    wal_sync_thread_.join();
  }
  if (commit_thread_.joinable()) {
    {
      absl::MutexLock lock(&commit_mu_);
      commit_stop_ = true;
    }
    commit_thread_.join();
  }
  if (db_ == nullptr) return;
  for (auto* h : handles_) db_->DestroyColumnFamilyHandle(h);
  db_->Close();
  delete db_;
}

absl::Status Storage::Write(rocksdb::WriteBatch* batch) {
  absl::Status s = Commit(batch);
  if (s.ok()) batches_written_.fetch_add(1, std::memory_order_relaxed);
  if (after_write_for_test_) after_write_for_test_();
  return s;
}

absl::Status Storage::Commit(rocksdb::WriteBatch* batch) {
  absl::Status s = FromRocks(db_->Write(write_options_, batch), "write");
  if (s.ok() && range_deletes_due_.load(std::memory_order_relaxed)) {
    MaybeFlushRangeDeletes();
  }
  return s;
}

void Storage::WriteAsync(rocksdb::WriteBatch batch,
                         std::function<void(absl::Status)> done) {
  absl::MutexLock lock(&commit_mu_);
  commit_queue_.push_back(PendingWrite{std::move(batch), std::move(done)});
}

void Storage::DrainAsyncWrites() {
  absl::MutexLock lock(&commit_mu_);
  auto drained = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(commit_mu_) {
    return commit_queue_.empty() && !committing_;
  };
  commit_mu_.Await(absl::Condition(&drained));
}

void Storage::CommitLoop() {
  for (;;) {
    std::vector<PendingWrite> group;
    {
      absl::MutexLock lock(&commit_mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(commit_mu_) {
        return !commit_queue_.empty() || commit_stop_;
      };
      committing_ = false;
      commit_mu_.Await(absl::Condition(&ready));
      if (commit_queue_.empty()) return;  // Stopping, and drained.
      committing_ = true;
      size_t bytes = 0;
      while (
          !commit_queue_.empty() &&
          (group.empty() || bytes + commit_queue_.front().batch.GetDataSize() <=
                                kMaxMergedBytes)) {
        bytes += commit_queue_.front().batch.GetDataSize();
        group.push_back(std::move(commit_queue_.front()));
        commit_queue_.pop_front();
      }
    }
    absl::Status s;
    if (group.size() == 1) {
      s = Commit(&group[0].batch);
    } else {
      rocksdb::WriteBatch merged;
      BatchCopier copier(&merged, handles_);
      for (PendingWrite& w : group) {
        if (rocksdb::Status c = w.batch.Iterate(&copier); !c.ok()) {
          s = FromRocks(c, "merge writes");
          break;
        }
      }
      if (s.ok()) s = Commit(&merged);
    }
    if (s.ok()) {
      batches_written_.fetch_add(group.size(), std::memory_order_relaxed);
    }
    for (PendingWrite& w : group) w.done(s);
  }
}

void Storage::DeleteRange(rocksdb::WriteBatch* batch,
                          rocksdb::ColumnFamilyHandle* cf,
                          const std::string& begin, const std::string& end) {
  batch->DeleteRange(cf, begin, end);
  for (size_t i = 0; i < handles_.size() && i < range_deletes_.size(); ++i) {
    if (handles_[i] != cf) continue;
    if (range_deletes_[i].fetch_add(1, std::memory_order_relaxed) + 1 >=
        kRangeDeletesPerFlush) {
      range_deletes_due_.store(true, std::memory_order_relaxed);
    }
    return;
  }
}

void Storage::MaybeFlushRangeDeletes() {
  range_deletes_due_.store(false, std::memory_order_relaxed);
  for (size_t i = 0; i < handles_.size() && i < range_deletes_.size(); ++i) {
    int n = range_deletes_[i].load(std::memory_order_relaxed);
    if (n < kRangeDeletesPerFlush ||
        !range_deletes_[i].compare_exchange_strong(n, 0)) {
      continue;
    }
    rocksdb::FlushOptions flush;
    flush.wait = false;
    flush.allow_write_stall = true;
    // A failed flush only leaves the tombstones where they are (slower
    // reads); the data is safe in the WAL either way.
    db_->Flush(flush, handles_[i]).PermitUncheckedError();
  }
}

absl::Status Storage::CompactAll() {
  rocksdb::FlushOptions flush;
  flush.wait = true;
  if (absl::Status s = FromRocks(db_->Flush(flush, handles_), "flush");
      !s.ok()) {
    return s;
  }
  rocksdb::CompactRangeOptions compact;
  compact.bottommost_level_compaction =
      rocksdb::BottommostLevelCompaction::kForce;
  for (rocksdb::ColumnFamilyHandle* h : handles_) {
    if (absl::Status s = FromRocks(
            db_->CompactRange(compact, h, nullptr, nullptr), "compact");
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

void Storage::SizeBytes(uint64_t* sst, uint64_t* memtables) {
  *sst = 0;
  *memtables = 0;
  for (rocksdb::ColumnFamilyHandle* h : handles_) {
    uint64_t v = 0;
    if (db_->GetIntProperty(h, "rocksdb.total-sst-files-size", &v)) *sst += v;
    if (db_->GetIntProperty(h, "rocksdb.size-all-mem-tables", &v)) {
      *memtables += v;
    }
  }
}

}  // namespace weir
