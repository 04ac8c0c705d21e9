// A RocksDB FileSystem for power-cut tests: it passes everything through to
// the real file system while remembering, per file, how much of it was
// synced. PowerCut() makes every later write fail (nothing more is
// acknowledged), and LoseUnsynced() then cuts every file back to what was
// synced, as a machine that lost power would find it.
#ifndef WEIR_TESTS_POWER_CUT_FS_H_
#define WEIR_TESTS_POWER_CUT_FS_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "rocksdb/env.h"
#include "rocksdb/file_system.h"

namespace weir::test {

// Thread-safe. Files RocksDB opens for writing are tracked from creation;
// files that existed before are left alone. Directory entries are taken as
// durable (only file contents are lost).
class PowerCutFileSystem : public rocksdb::FileSystemWrapper {
 public:
  PowerCutFileSystem();

  const char* Name() const override { return "PowerCutFileSystem"; }

  rocksdb::IOStatus NewWritableFile(
      const std::string& fname, const rocksdb::FileOptions& options,
      std::unique_ptr<rocksdb::FSWritableFile>* result,
      rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus ReopenWritableFile(
      const std::string& fname, const rocksdb::FileOptions& options,
      std::unique_ptr<rocksdb::FSWritableFile>* result,
      rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus ReuseWritableFile(
      const std::string& fname, const std::string& old_fname,
      const rocksdb::FileOptions& options,
      std::unique_ptr<rocksdb::FSWritableFile>* result,
      rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus RenameFile(const std::string& src, const std::string& dst,
                               const rocksdb::IOOptions& options,
                               rocksdb::IODebugContext* dbg) override;
  // While the disk is full (SetDiskFull), no free space; otherwise the real
  // disk's. RocksDB's recovery from a full disk waits for free space.
  rocksdb::IOStatus GetFreeSpace(const std::string& path,
                                 const rocksdb::IOOptions& options,
                                 uint64_t* free_space,
                                 rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus DeleteFile(const std::string& fname,
                               const rocksdb::IOOptions& options,
                               rocksdb::IODebugContext* dbg) override;

  // From now on every write, sync and file creation fails with an I/O error.
  void PowerCut() { cut_.store(true); }
  // While set, writes fail as on a full disk, or with an I/O error; unlike
  // a cut, this can end.
  void SetDiskFull(bool full) { full_.store(full); }
  void SetIoErrors(bool failing) { io_errors_.store(failing); }
  // The error a write gets now, or OK. Counts each error it returns.
  rocksdb::IOStatus WriteError() const;
  // How many errors WriteError has returned: appends, flushes and syncs of
  // tracked files that failed.
  uint64_t refused_writes() const;
  // Waits up to `timeout` until refused_writes() exceeds `count`; whether
  // it did.
  bool AwaitRefusedWritesAbove(uint64_t count, absl::Duration timeout) const;
  bool cut() const { return cut_.load(); }

  // Truncates every tracked file to the bytes it had synced. Call after the
  // database is closed, before it is opened again (with any Env).
  absl::Status LoseUnsynced();

  // When the latest successful sync of a write-ahead log file (*.log)
  // began: everything written to the log before then survives a cut.
  // InfinitePast() if none.
  absl::Time LastWalSyncStart();

  // Called by the tracked files. A sync that began when the file had
  // `covered` bytes makes those durable, not what was appended meanwhile.
  void Appended(const std::string& fname, uint64_t bytes);
  uint64_t Written(const std::string& fname);
  void Synced(const std::string& fname, uint64_t covered, absl::Time started);
  void Truncated(const std::string& fname, uint64_t size);

 private:
  struct Sizes {
    uint64_t written = 0;
    uint64_t synced = 0;
  };

  rocksdb::IOStatus Track(const std::string& fname, uint64_t existing,
                          rocksdb::IOStatus s,
                          std::unique_ptr<rocksdb::FSWritableFile>* result);

  std::atomic<bool> cut_{false};
  std::atomic<bool> full_{false};
  std::atomic<bool> io_errors_{false};
  mutable absl::Mutex refused_mu_;
  mutable uint64_t refused_ ABSL_GUARDED_BY(refused_mu_) = 0;
  absl::Mutex mu_;
  std::map<std::string, Sizes> files_ ABSL_GUARDED_BY(mu_);
  absl::Time last_wal_sync_start_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

}  // namespace weir::test

#endif  // WEIR_TESTS_POWER_CUT_FS_H_
