#include "bench/benchmark_main.h"

#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "bench/bench_util.h"
#include "benchmark/benchmark.h"

namespace weir {
namespace bench {

int RunBenchmarks(int argc, char** argv, const char* smoke_filter) {
  const bool smoke = TakeSmokeFlag(&argc, argv);
  // Storage for the arguments benchmark::Initialize sees; it may reorder
  // and remove the pointers but never frees them.
  std::vector<std::string> extra;
  if (smoke) {
    extra.push_back("--benchmark_min_time=0.01");
    bool has_filter = false;
    for (int i = 1; i < argc; ++i) {
      has_filter |= absl::StartsWith(argv[i], "--benchmark_filter");
    }
    if (!has_filter && smoke_filter != nullptr && *smoke_filter != '\0') {
      extra.push_back(absl::StrCat("--benchmark_filter=", smoke_filter));
    }
  }
  std::vector<char*> args(argv, argv + argc);
  for (std::string& e : extra) args.push_back(e.data());
  args.push_back(nullptr);
  int n = static_cast<int>(args.size()) - 1;

  benchmark::Initialize(&n, args.data());
  if (benchmark::ReportUnrecognizedArguments(n, args.data())) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace bench
}  // namespace weir
