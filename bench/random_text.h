// Random printable message bodies for the gRPC benchmarks and the load
// generator (no engine, no Google Benchmark: they drive a server).
#ifndef WEIR_BENCH_RANDOM_TEXT_H_
#define WEIR_BENCH_RANDOM_TEXT_H_

#include <cstddef>
#include <cstdint>
#include <string>

namespace weir {
namespace bench {

// `size` bytes of random printable text from `seed`, so that bodies differ
// and compression in a system under test does not flatter it.
std::string RandomText(size_t size, uint64_t seed);

}  // namespace bench
}  // namespace weir

#endif  // WEIR_BENCH_RANDOM_TEXT_H_
