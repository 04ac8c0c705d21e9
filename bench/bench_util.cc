#include "bench/bench_util.h"

#include <stdlib.h>
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <system_error>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"

namespace weir {
namespace bench {

ScratchDir::ScratchDir(absl::string_view prefix) {
  const char* base = std::getenv("TEST_TMPDIR");
  std::string templ = absl::StrCat(
      base != nullptr && *base != '\0' ? base : "/tmp", "/", prefix, "-XXXXXX");
  if (mkdtemp(templ.data()) == nullptr) {
    std::cerr << "mkdtemp " << templ << ": " << std::strerror(errno) << "\n";
    std::exit(1);
  }
  path_ = std::move(templ);
}

ScratchDir::~ScratchDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
  if (ec) std::cerr << "removing " << path_ << ": " << ec.message() << "\n";
}

void CheckOk(const absl::Status& status, absl::string_view what) {
  if (status.ok()) return;
  std::cerr << what << " failed: " << status << std::endl;
  std::exit(1);
}

void CheckAllOk(const absl::StatusOr<std::vector<absl::Status>>& statuses,
                absl::string_view what) {
  CheckOk(statuses.status(), what);
  for (const absl::Status& s : *statuses) CheckOk(s, what);
}

std::unique_ptr<Engine> OpenEngine(const EngineOptions& options,
                                   const std::string& path) {
  return ValueOrDie(Engine::Open(options, path),
                    absl::StrCat("Engine::Open(", path, ")"));
}

bool TakeSmokeFlag(int* argc, char** argv) {
  bool smoke = false;
  if (const char* env = std::getenv("WEIR_BENCH_SMOKE");
      env != nullptr && std::strcmp(env, "1") == 0) {
    smoke = true;
  }
  int out = 1;
  for (int i = 1; i < *argc; ++i) {
    if (std::strcmp(argv[i], "--smoke") == 0) {
      smoke = true;
    } else {
      argv[out++] = argv[i];
    }
  }
  *argc = out;
  argv[out] = nullptr;
  return smoke;
}

std::string Body(size_t size) {
  std::string body(size, 'x');
  for (size_t i = 0; i < size; ++i) body[i] = 'a' + static_cast<char>(i % 26);
  return body;
}

std::vector<SendEntry> Entries(int count, size_t size) {
  std::vector<SendEntry> entries(count);
  const std::string body = Body(size);
  for (SendEntry& e : entries) e.body = body;
  return entries;
}

std::vector<std::string> Receipts(
    const std::vector<ReceivedMessage>& messages) {
  std::vector<std::string> receipts;
  receipts.reserve(messages.size());
  for (const ReceivedMessage& m : messages) {
    receipts.push_back(m.receipt_handle);
  }
  return receipts;
}

double Percentile(std::vector<double>& samples, double p) {
  if (samples.empty()) return 0;
  std::sort(samples.begin(), samples.end());
  // Nearest rank: the smallest sample with at least p% of samples <= it.
  size_t rank = static_cast<size_t>(std::ceil(p / 100 * samples.size()));
  rank = std::clamp<size_t>(rank, 1, samples.size());
  return samples[rank - 1];
}

namespace {

// A "Name:   1234 kB" line of /proc/self/status, in bytes.
uint64_t ProcStatusBytes(absl::string_view name) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    absl::string_view rest = line;
    if (!absl::ConsumePrefix(&rest, name) || !absl::ConsumePrefix(&rest, ":")) {
      continue;
    }
    rest = absl::StripAsciiWhitespace(rest);
    absl::ConsumeSuffix(&rest, "kB");
    uint64_t kb = 0;
    if (absl::SimpleAtoi(absl::StripAsciiWhitespace(rest), &kb)) {
      return kb * 1024;
    }
  }
  return 0;
}

}  // namespace

uint64_t ResidentBytes() { return ProcStatusBytes("VmRSS"); }
uint64_t PeakResidentBytes() { return ProcStatusBytes("VmHWM"); }

uint64_t DirectoryBytes(const std::string& path) {
  uint64_t total = 0;
  std::error_code ec;
  for (const auto& entry :
       std::filesystem::recursive_directory_iterator(path, ec)) {
    if (entry.is_regular_file(ec)) total += entry.file_size(ec);
  }
  return total;
}

uint64_t DiskUsageBytes(const std::string& path) {
  uint64_t total = 0;
  std::error_code ec;
  // increment(ec) rather than a range-for, whose ++ throws on an error.
  for (std::filesystem::recursive_directory_iterator it(path, ec), end;
       !ec && it != end; it.increment(ec)) {
    struct stat st;
    if (lstat(it->path().c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
      total += static_cast<uint64_t>(st.st_blocks) * 512;
    }
  }
  return total;
}

std::string HumanBytes(uint64_t bytes) {
  if (bytes >= (uint64_t{1} << 30)) {
    return absl::StrFormat("%.2f GiB", bytes / double(uint64_t{1} << 30));
  }
  if (bytes >= (1 << 20)) {
    return absl::StrFormat("%.1f MiB", bytes / double(1 << 20));
  }
  if (bytes >= (1 << 10)) {
    return absl::StrFormat("%.1f KiB", bytes / double(1 << 10));
  }
  return absl::StrCat(bytes, " B");
}

}  // namespace bench
}  // namespace weir
