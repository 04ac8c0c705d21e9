// Helpers shared by the engine benchmarks: scratch directories, smoke mode,
// fatal error checks, latency percentiles and process memory.
//
// Benchmarks treat every engine error as fatal (the process exits non-zero),
// so a smoke run that passes means every call succeeded.
#ifndef WEIR_BENCH_BENCH_UTIL_H_
#define WEIR_BENCH_BENCH_UTIL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/engine.h"

namespace weir {
namespace bench {

// A new, empty directory under $TEST_TMPDIR (or /tmp), removed with
// everything in it when the object is destroyed. Exits on failure.
class ScratchDir {
 public:
  explicit ScratchDir(absl::string_view prefix = "weir-bench");
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Prints `what` and the status to stderr and exits with status 1 unless
// `status` is OK.
void CheckOk(const absl::Status& status, absl::string_view what);

template <typename T>
T ValueOrDie(absl::StatusOr<T> value, absl::string_view what) {
  CheckOk(value.status(), what);
  return *std::move(value);
}

// Checks every per-entry status of a Delete or ChangeVisibility answer.
void CheckAllOk(const absl::StatusOr<std::vector<absl::Status>>& statuses,
                absl::string_view what);

// Opens an engine on `path`; exits on failure.
std::unique_ptr<Engine> OpenEngine(const EngineOptions& options,
                                   const std::string& path);

// Whether the run is a smoke run: `--smoke` on the command line (removed
// from argv) or WEIR_BENCH_SMOKE=1 in the environment.
bool TakeSmokeFlag(int* argc, char** argv);

// A body of `size` bytes of printable filler.
std::string Body(size_t size);

// `entries` copies of one message of `size` bytes, ready for Send.
std::vector<SendEntry> Entries(int count, size_t size);

// Receipts of `messages`, for Delete.
std::vector<std::string> Receipts(const std::vector<ReceivedMessage>& messages);

// The p-th percentile (0..100) of `samples` (nearest rank); sorts them.
double Percentile(std::vector<double>& samples, double p);

// Resident set size and its peak, in bytes, from /proc/self/status; 0 when
// unavailable.
uint64_t ResidentBytes();
uint64_t PeakResidentBytes();

// Total size of the regular files under `path`.
uint64_t DirectoryBytes(const std::string& path);

// Disk space the regular files under `path` occupy (st_blocks * 512), what
// `du` reports: preallocated space counts, holes do not. Files that vanish
// during the walk (RocksDB deletes obsolete ones at any time) are skipped.
uint64_t DiskUsageBytes(const std::string& path);

// "12.3 MiB" and the like.
std::string HumanBytes(uint64_t bytes);

}  // namespace bench
}  // namespace weir

#endif  // WEIR_BENCH_BENCH_UTIL_H_
