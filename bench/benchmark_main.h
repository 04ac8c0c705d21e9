// A main() for the engine's Google Benchmark binaries that adds a smoke mode:
// with --smoke (or WEIR_BENCH_SMOKE=1) every selected benchmark runs only
// briefly, so a test can check that the harness still works.
#ifndef WEIR_BENCH_BENCHMARK_MAIN_H_
#define WEIR_BENCH_BENCHMARK_MAIN_H_

namespace weir {
namespace bench {

// Initializes Google Benchmark from the command line and runs the selected
// benchmarks. In smoke mode, adds --benchmark_min_time=0.01 and, unless the
// command line names a filter, `smoke_filter` (a regular expression; null or
// empty for all). Returns the process exit status.
int RunBenchmarks(int argc, char** argv, const char* smoke_filter);

}  // namespace bench
}  // namespace weir

#endif  // WEIR_BENCH_BENCHMARK_MAIN_H_
