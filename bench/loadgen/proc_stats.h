// CPU time and memory of another process on the same machine, read from
// Linux's /proc/PID/stat and /proc/PID/status: how much a server under test
// spent while the load generator drove it.

#ifndef WEIR_BENCH_LOADGEN_PROC_STATS_H_
#define WEIR_BENCH_LOADGEN_PROC_STATS_H_

#include <sys/types.h>

#include <cstdint>

#include "absl/status/statusor.h"

namespace weir {
namespace loadgen {

struct ProcSample {
  // User plus system CPU time of every thread so far, in seconds.
  double cpu_seconds = 0;
  // Resident set now, and its peak since the process started (VmHWM), bytes.
  int64_t rss_bytes = 0;
  int64_t peak_rss_bytes = 0;
};

// Reads the counters of process `pid`. Fails with NOT_FOUND when the process
// does not exist (or /proc is not mounted). Thread-safe.
absl::StatusOr<ProcSample> SampleProcess(pid_t pid);

}  // namespace loadgen
}  // namespace weir

#endif  // WEIR_BENCH_LOADGEN_PROC_STATS_H_
