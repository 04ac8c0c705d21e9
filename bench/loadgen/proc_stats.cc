#include "bench/loadgen/proc_stats.h"

#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace weir {
namespace loadgen {
namespace {

bool ReadFile(const std::string& path, std::string* out) {
  std::ifstream in(path);
  if (!in) return false;
  std::stringstream buffer;
  buffer << in.rdbuf();
  *out = buffer.str();
  return true;
}

// The value of "Key:   123 kB" in /proc/PID/status, in bytes.
int64_t StatusKilobytes(const std::string& status, absl::string_view key) {
  for (absl::string_view line : absl::StrSplit(status, '\n')) {
    if (!absl::ConsumePrefix(&line, key)) continue;
    if (!absl::ConsumePrefix(&line, ":")) continue;
    line = absl::StripAsciiWhitespace(line);
    absl::ConsumeSuffix(&line, " kB");
    int64_t kb = 0;
    if (absl::SimpleAtoi(line, &kb)) return kb * 1024;
  }
  return 0;
}

}  // namespace

absl::StatusOr<ProcSample> SampleProcess(pid_t pid) {
  const std::string dir = absl::StrCat("/proc/", pid);
  std::string stat, status;
  if (!ReadFile(dir + "/stat", &stat) || !ReadFile(dir + "/status", &status)) {
    return absl::NotFoundError(absl::StrCat("no process ", pid, " in /proc"));
  }
  // The command name (field 2) may hold spaces; fields after it are plain.
  const size_t paren = stat.rfind(')');
  if (paren == std::string::npos) {
    return absl::InternalError(absl::StrCat("cannot parse ", dir, "/stat"));
  }
  std::vector<std::string> fields =
      absl::StrSplit(stat.substr(paren + 2), ' ', absl::SkipEmpty());
  // After the name: state is field 3, utime field 14, stime field 15.
  int64_t utime = 0, stime = 0;
  if (fields.size() < 13 || !absl::SimpleAtoi(fields[11], &utime) ||
      !absl::SimpleAtoi(fields[12], &stime)) {
    return absl::InternalError(absl::StrCat("cannot parse ", dir, "/stat"));
  }
  ProcSample sample;
  sample.cpu_seconds = double(utime + stime) / sysconf(_SC_CLK_TCK);
  sample.rss_bytes = StatusKilobytes(status, "VmRSS");
  sample.peak_rss_bytes = StatusKilobytes(status, "VmHWM");
  return sample;
}

}  // namespace loadgen
}  // namespace weir
