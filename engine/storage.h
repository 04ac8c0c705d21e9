// The RocksDB database behind an Engine: its column families (see
// key_codec.h), tuning, and the mapping of RocksDB errors to absl::Status.
#ifndef WEIR_ENGINE_STORAGE_H_
#define WEIR_ENGINE_STORAGE_H_

#include <array>
#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "rocksdb/db.h"
#include "rocksdb/write_batch.h"

namespace weir {

struct StorageOptions {
  bool sync = true;
  // Without `sync`: how often a background thread fsyncs the write-ahead
  // log, which bounds what a power cut can take away. Zero: never (RocksDB
  // then syncs it only when it switches to a new log file).
  absl::Duration wal_sync_interval = absl::ZeroDuration();
  bool create_if_missing = true;
  // What the memtables of every column family may hold together (RocksDB's
  // db_write_buffer_size); past it the largest is flushed early. Zero: no
  // budget across column families (each may hold two 64 MiB memtables).
  size_t memtable_budget_bytes = 0;
  rocksdb::Env* env = nullptr;  // Not owned. Null: the default Env.
  // Tests only: runs on the caller's thread after each Write's RocksDB
  // write returns, before Write does. Lets a test hold one writer there
  // while others go on. Empty in production.
  std::function<void()> after_write_for_test;
};

// Owns the open database and its column family handles. Thread-safe.
class Storage {
 public:
  static absl::StatusOr<std::unique_ptr<Storage>> Open(
      const StorageOptions& options, const std::string& path);
  ~Storage();

  rocksdb::DB* db() const { return db_; }
  rocksdb::ColumnFamilyHandle* meta() const { return handles_[1]; }
  rocksdb::ColumnFamilyHandle* messages() const { return handles_[2]; }
  rocksdb::ColumnFamilyHandle* leases() const { return handles_[3]; }
  rocksdb::ColumnFamilyHandle* deleted() const { return handles_[4]; }
  rocksdb::ColumnFamilyHandle* index() const { return handles_[5]; }

  // Applies `batch` atomically with the configured durability. Concurrent
  // calls are committed together (one WAL write and fsync for the group).
  // Afterwards, flushes (without waiting) the memtable of a column family
  // that has gathered kRangeDeletesPerFlush range deletions.
  absl::Status Write(rocksdb::WriteBatch* batch);

  // Like Write, without blocking the caller: `batch` is applied by the
  // storage's commit thread, which merges every batch queued meanwhile into
  // one write (one WAL record and fsync for all of them), then runs each
  // `done` with the outcome, in queue order, on that thread. A merged write
  // that fails fails every batch in it, none of which is applied. `done`
  // must be quick and must not call Write or WriteAsync and wait.
  void WriteAsync(rocksdb::WriteBatch batch,
                  std::function<void(absl::Status)> done);
  // Waits until every batch given to WriteAsync so far has been written and
  // its `done` has returned.
  void DrainAsyncWrites();

  // Adds the deletion of [begin, end) in `cf` to `batch`, and counts it.
  // Every read of a memtable fragments all of its range tombstones again
  // after a new one arrives, so a memtable that gathers thousands of them
  // (a queue trickling one message a second removes a range a second, and
  // its memtable may not fill for hours) makes every read slow. Flushing
  // moves them into a table file, where they are fragmented once.
  void DeleteRange(rocksdb::WriteBatch* batch, rocksdb::ColumnFamilyHandle* cf,
                   const std::string& begin, const std::string& end);

  static constexpr int kRangeDeletesPerFlush = 256;

  // Flushes memtables and compacts every column family to the bottom level,
  // dropping deleted data. Blocks until done.
  absl::Status CompactAll();
  // Bytes in SST files and in memtables, over all column families.
  void SizeBytes(uint64_t* sst, uint64_t* memtables);
  // Batches written by Write and WriteAsync since open (WriteAsync may
  // merge several into one RocksDB write; each counts).
  uint64_t batches_written() const {
    return batches_written_.load(std::memory_order_relaxed);
  }

 private:
  Storage() = default;

  // One RocksDB write: Write, without counting a batch.
  absl::Status Commit(rocksdb::WriteBatch* batch);
  // Flushes the column families that have gathered enough range deletes.
  void MaybeFlushRangeDeletes();
  void CommitLoop();

  struct PendingWrite {
    rocksdb::WriteBatch batch;
    std::function<void(absl::Status)> done;
  };
  // Runs on wal_sync_thread_: fsyncs the write-ahead log every `interval`
  // until the destructor says stop.
  void SyncWalLoop(absl::Duration interval);

  rocksdb::DB* db_ = nullptr;
  // [0] is RocksDB's default column family; the rest as named above.
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  rocksdb::WriteOptions write_options_;
  std::function<void()> after_write_for_test_;
  // Range deletes added per column family (by position in handles_) since
  // its last flush; range_deletes_due_ is set once one reaches the limit.
  std::array<std::atomic<int>, 6> range_deletes_{};
  std::atomic<bool> range_deletes_due_{false};
  std::atomic<uint64_t> batches_written_{0};

  absl::Mutex commit_mu_;
  std::deque<PendingWrite> commit_queue_ ABSL_GUARDED_BY(commit_mu_);
  bool commit_stop_ ABSL_GUARDED_BY(commit_mu_) = false;
  // A group taken off the queue is being written or its callbacks run.
  bool committing_ ABSL_GUARDED_BY(commit_mu_) = false;
  // Started by Open; joined (after draining the queue) by the destructor.
  std::thread commit_thread_;
  absl::Mutex wal_sync_mu_;
  bool stopping_ ABSL_GUARDED_BY(wal_sync_mu_) = false;
  std::thread wal_sync_thread_;
};

// Maps a RocksDB status to an absl::Status with the same meaning: no space
// is RESOURCE_EXHAUSTED, other I/O errors UNAVAILABLE, corruption DATA_LOSS.
absl::Status FromRocks(const rocksdb::Status& s, const char* what);

}  // namespace weir

#endif  // WEIR_ENGINE_STORAGE_H_
