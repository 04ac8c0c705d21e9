#include "bench/loadgen/proc_stats.h"

#include <unistd.h>

#include <chrono>
#include <vector>

#include "gtest/gtest.h"

namespace weir {
namespace loadgen {
namespace {

TEST(ProcStats, SamplesThisProcess) {
  absl::StatusOr<ProcSample> before = SampleProcess(getpid());
  ASSERT_TRUE(before.ok()) << before.status();
  EXPECT_GT(before->rss_bytes, 0);
  EXPECT_GE(before->peak_rss_bytes, before->rss_bytes);

  // Spend a little CPU and touch 64 MiB; both must show.
  std::vector<char> memory(64 << 20);
  for (size_t i = 0; i < memory.size(); i += 4096) memory[i] = 1;
  const auto start = std::chrono::steady_clock::now();
  volatile uint64_t spin = 0;
  while (std::chrono::steady_clock::now() - start <
         std::chrono::milliseconds(300)) {
    spin = spin + 1;
  }
  absl::StatusOr<ProcSample> after = SampleProcess(getpid());
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_GT(after->cpu_seconds, before->cpu_seconds);
  EXPECT_GE(after->peak_rss_bytes, before->rss_bytes + (60 << 20));
}

TEST(ProcStats, MissingProcessIsNotFound) {
  // Above the kernel's largest pid (4194304), so no process has it.
  absl::StatusOr<ProcSample> sample = SampleProcess(99'999'999);
  EXPECT_EQ(sample.status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace loadgen
}  // namespace weir
