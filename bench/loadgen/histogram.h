// A latency histogram with logarithmic buckets: every value from 0 to about
// 18 minutes (in nanoseconds) lands in a bucket whose width is at most 1/64
// of its lower bound, so quantiles are within 1.6% of the true value while
// the histogram stays a fixed 2,304 counters.

#ifndef WEIR_BENCH_LOADGEN_HISTOGRAM_H_
#define WEIR_BENCH_LOADGEN_HISTOGRAM_H_

#include <cstdint>
#include <vector>

namespace weir {
namespace loadgen {

// Not thread-safe: each thread records into its own Histogram, and the
// results are merged with Merge once the threads are done.
class Histogram {
 public:
  Histogram();

  // Records one value (nanoseconds). Negative values count as 0; values
  // beyond the largest bucket count in the largest bucket.
  void Record(int64_t value_ns);
  // Adds every count of `other` to this histogram.
  void Merge(const Histogram& other);

  int64_t count() const { return count_; }
  int64_t max() const { return max_; }
  double mean() const { return count_ == 0 ? 0 : double(sum_) / count_; }
  // The smallest bucket bound with at least `q` (0..1) of the values at or
  // below it; the exact maximum for q = 1; 0 when empty.
  int64_t Quantile(double q) const;

 private:
  std::vector<int64_t> buckets_;
  int64_t count_ = 0;
  int64_t sum_ = 0;
  int64_t max_ = 0;
};

}  // namespace loadgen
}  // namespace weir

#endif  // WEIR_BENCH_LOADGEN_HISTOGRAM_H_
