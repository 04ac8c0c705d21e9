#include "tests/power_cut_fs.h"

#include <filesystem>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace weir::test {
namespace {

rocksdb::IOStatus PoweredOff() {
  return rocksdb::IOStatus::IOError("power cut (test)");
}

class TrackedFile : public rocksdb::FSWritableFileOwnerWrapper {
 public:
  TrackedFile(PowerCutFileSystem* fs, std::string fname,
              std::unique_ptr<rocksdb::FSWritableFile> target)
      : FSWritableFileOwnerWrapper(std::move(target)),
        fs_(fs),
        fname_(std::move(fname)) {}

  rocksdb::IOStatus Append(const rocksdb::Slice& data,
                           const rocksdb::IOOptions& options,
                           rocksdb::IODebugContext* dbg) override {
    if (rocksdb::IOStatus e = fs_->WriteError(); !e.ok()) return e;
    rocksdb::IOStatus s = target()->Append(data, options, dbg);
    if (s.ok()) fs_->Appended(fname_, data.size());
    return s;
  }
  rocksdb::IOStatus Append(const rocksdb::Slice& data,
                           const rocksdb::IOOptions& options,
                           const rocksdb::DataVerificationInfo& info,
                           rocksdb::IODebugContext* dbg) override {
    if (rocksdb::IOStatus e = fs_->WriteError(); !e.ok()) return e;
    rocksdb::IOStatus s = target()->Append(data, options, info, dbg);
    if (s.ok()) fs_->Appended(fname_, data.size());
    return s;
  }
  rocksdb::IOStatus PositionedAppend(const rocksdb::Slice&, uint64_t,
                                     const rocksdb::IOOptions&,
                                     rocksdb::IODebugContext*) override {
    return rocksdb::IOStatus::NotSupported("PowerCutFileSystem");
  }
  rocksdb::IOStatus PositionedAppend(const rocksdb::Slice&, uint64_t,
                                     const rocksdb::IOOptions&,
                                     const rocksdb::DataVerificationInfo&,
                                     rocksdb::IODebugContext*) override {
    return rocksdb::IOStatus::NotSupported("PowerCutFileSystem");
  }
  rocksdb::IOStatus Truncate(uint64_t size, const rocksdb::IOOptions& options,
                             rocksdb::IODebugContext* dbg) override {
    if (fs_->cut()) return PoweredOff();
    rocksdb::IOStatus s = target()->Truncate(size, options, dbg);
    if (s.ok()) fs_->Truncated(fname_, size);
    return s;
  }
  rocksdb::IOStatus Flush(const rocksdb::IOOptions& options,
                          rocksdb::IODebugContext* dbg) override {
    if (rocksdb::IOStatus e = fs_->WriteError(); !e.ok()) return e;
    return target()->Flush(options, dbg);
  }
  rocksdb::IOStatus Sync(const rocksdb::IOOptions& options,
                         rocksdb::IODebugContext* dbg) override {
    if (rocksdb::IOStatus e = fs_->WriteError(); !e.ok()) return e;
    // Only what was written before the sync began is sure to be on disk.
    const absl::Time started = absl::Now();
    const uint64_t covered = fs_->Written(fname_);
    rocksdb::IOStatus s = target()->Sync(options, dbg);
    if (s.ok()) fs_->Synced(fname_, covered, started);
    return s;
  }
  rocksdb::IOStatus Fsync(const rocksdb::IOOptions& options,
                          rocksdb::IODebugContext* dbg) override {
    if (rocksdb::IOStatus e = fs_->WriteError(); !e.ok()) return e;
    // Only what was written before the sync began is sure to be on disk.
    const absl::Time started = absl::Now();
    const uint64_t covered = fs_->Written(fname_);
    rocksdb::IOStatus s = target()->Fsync(options, dbg);
    if (s.ok()) fs_->Synced(fname_, covered, started);
    return s;
  }
  // A range sync flushes pages but promises nothing on a power cut: not
  // counted as synced.
  rocksdb::IOStatus RangeSync(uint64_t offset, uint64_t nbytes,
                              const rocksdb::IOOptions& options,
                              rocksdb::IODebugContext* dbg) override {
    if (fs_->cut()) return PoweredOff();
    return target()->RangeSync(offset, nbytes, options, dbg);
  }
  rocksdb::IOStatus Close(const rocksdb::IOOptions& options,
                          rocksdb::IODebugContext* dbg) override {
    // Closing writes nothing of its own once the power is off.
    if (fs_->cut()) return PoweredOff();
    return target()->Close(options, dbg);
  }

 private:
  PowerCutFileSystem* const fs_;
  const std::string fname_;
};

}  // namespace

PowerCutFileSystem::PowerCutFileSystem()
    : FileSystemWrapper(rocksdb::FileSystem::Default()) {}

rocksdb::IOStatus PowerCutFileSystem::GetFreeSpace(
    const std::string& path, const rocksdb::IOOptions& options,
    uint64_t* free_space, rocksdb::IODebugContext* dbg) {
  if (full_.load()) {
    *free_space = 0;
    return rocksdb::IOStatus::OK();
  }
  return target()->GetFreeSpace(path, options, free_space, dbg);
}

rocksdb::IOStatus PowerCutFileSystem::WriteError() const {
  rocksdb::IOStatus e;
  if (cut()) {
    e = PoweredOff();
  } else if (full_.load()) {
    e = rocksdb::IOStatus::NoSpace("disk full (test)");
  } else if (io_errors_.load()) {
    e = rocksdb::IOStatus::IOError("failing (test)");
  }
  if (!e.ok()) {
    absl::MutexLock lock(&refused_mu_);
    ++refused_;
  }
  return e;
}

uint64_t PowerCutFileSystem::refused_writes() const {
  absl::MutexLock lock(&refused_mu_);
  return refused_;
}

bool PowerCutFileSystem::AwaitRefusedWritesAbove(uint64_t count,
                                                 absl::Duration timeout) const {
  absl::MutexLock lock(&refused_mu_);
  auto above = [this, count]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(refused_mu_) {
    return refused_ > count;
  };
  return refused_mu_.AwaitWithTimeout(absl::Condition(&above), timeout);
}

rocksdb::IOStatus PowerCutFileSystem::Track(
    const std::string& fname, uint64_t existing, rocksdb::IOStatus s,
    std::unique_ptr<rocksdb::FSWritableFile>* result) {
  if (!s.ok()) return s;
  {
    absl::MutexLock lock(&mu_);
    Sizes& sizes = files_[fname];
    sizes.written = existing;
    sizes.synced = std::min(sizes.synced, existing);
    if (existing > 0 && sizes.synced == 0) sizes.synced = existing;
  }
  *result = std::make_unique<TrackedFile>(this, fname, std::move(*result));
  return s;
}

rocksdb::IOStatus PowerCutFileSystem::NewWritableFile(
    const std::string& fname, const rocksdb::FileOptions& options,
    std::unique_ptr<rocksdb::FSWritableFile>* result,
    rocksdb::IODebugContext* dbg) {
  if (cut()) return PoweredOff();
  {
    // A new file starts empty: nothing of it is synced.
    absl::MutexLock lock(&mu_);
    files_[fname] = Sizes{};
  }
  return Track(fname, 0, target()->NewWritableFile(fname, options, result, dbg),
               result);
}

rocksdb::IOStatus PowerCutFileSystem::ReopenWritableFile(
    const std::string& fname, const rocksdb::FileOptions& options,
    std::unique_ptr<rocksdb::FSWritableFile>* result,
    rocksdb::IODebugContext* dbg) {
  if (cut()) return PoweredOff();
  std::error_code ec;
  const uint64_t size = std::filesystem::file_size(fname, ec);
  return Track(fname, ec ? 0 : size,
               target()->ReopenWritableFile(fname, options, result, dbg),
               result);
}

rocksdb::IOStatus PowerCutFileSystem::ReuseWritableFile(
    const std::string& fname, const std::string& old_fname,
    const rocksdb::FileOptions& options,
    std::unique_ptr<rocksdb::FSWritableFile>* result,
    rocksdb::IODebugContext* dbg) {
  if (cut()) return PoweredOff();
  {
    absl::MutexLock lock(&mu_);
    files_.erase(old_fname);
    files_[fname] = Sizes{};
  }
  return Track(
      fname, 0,
      target()->ReuseWritableFile(fname, old_fname, options, result, dbg),
      result);
}

rocksdb::IOStatus PowerCutFileSystem::RenameFile(
    const std::string& src, const std::string& dst,
    const rocksdb::IOOptions& options, rocksdb::IODebugContext* dbg) {
  if (cut()) return PoweredOff();
  rocksdb::IOStatus s = target()->RenameFile(src, dst, options, dbg);
  if (s.ok()) {
    absl::MutexLock lock(&mu_);
    auto it = files_.find(src);
    if (it != files_.end()) {
      files_[dst] = it->second;
      files_.erase(src);
    } else {
      files_.erase(dst);
    }
  }
  return s;
}

rocksdb::IOStatus PowerCutFileSystem::DeleteFile(
    const std::string& fname, const rocksdb::IOOptions& options,
    rocksdb::IODebugContext* dbg) {
  if (cut()) return PoweredOff();
  rocksdb::IOStatus s = target()->DeleteFile(fname, options, dbg);
  if (s.ok()) {
    absl::MutexLock lock(&mu_);
    files_.erase(fname);
  }
  return s;
}

void PowerCutFileSystem::Appended(const std::string& fname, uint64_t bytes) {
  absl::MutexLock lock(&mu_);
  files_[fname].written += bytes;
}

uint64_t PowerCutFileSystem::Written(const std::string& fname) {
  absl::MutexLock lock(&mu_);
  return files_[fname].written;
}

void PowerCutFileSystem::Synced(const std::string& fname, uint64_t covered,
                                absl::Time started) {
  absl::MutexLock lock(&mu_);
  Sizes& sizes = files_[fname];
  sizes.synced = std::max(sizes.synced, std::min(covered, sizes.written));
  if (absl::EndsWith(fname, ".log") && started > last_wal_sync_start_) {
    last_wal_sync_start_ = started;
  }
}

absl::Time PowerCutFileSystem::LastWalSyncStart() {
  absl::MutexLock lock(&mu_);
  return last_wal_sync_start_;
}

void PowerCutFileSystem::Truncated(const std::string& fname, uint64_t size) {
  absl::MutexLock lock(&mu_);
  Sizes& sizes = files_[fname];
  sizes.written = size;
  sizes.synced = std::min(sizes.synced, size);
}

absl::Status PowerCutFileSystem::LoseUnsynced() {
  absl::MutexLock lock(&mu_);
  for (const auto& [fname, sizes] : files_) {
    std::error_code ec;
    const uint64_t size = std::filesystem::file_size(fname, ec);
    if (ec) continue;  // Gone already.
    if (size > sizes.synced) {
      std::filesystem::resize_file(fname, sizes.synced, ec);
      if (ec) {
        return absl::InternalError(
            absl::StrCat("truncating ", fname, ": ", ec.message()));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace weir::test
