#include "bench/loadgen/histogram.h"

#include <algorithm>

namespace weir {
namespace loadgen {
namespace {

// Values below 2 * kSub have a bucket each; above, each power of two is
// split into kSub buckets.
constexpr int kSubBits = 6;
constexpr int64_t kSub = int64_t{1} << kSubBits;
// 2^40 ns is about 18 minutes.
constexpr int kMaxMagnitude = 40 - kSubBits;
constexpr int kBuckets = (kMaxMagnitude + 2) * kSub;

int BitWidth(uint64_t v) { return v == 0 ? 0 : 64 - __builtin_clzll(v); }

int BucketOf(int64_t value) {
  if (value < 2 * kSub) return static_cast<int>(std::max<int64_t>(value, 0));
  const int magnitude = BitWidth(static_cast<uint64_t>(value)) - kSubBits - 1;
  if (magnitude > kMaxMagnitude) return kBuckets - 1;
  return static_cast<int>(magnitude * kSub + (value >> magnitude));
}

// The largest value that falls in `bucket`.
int64_t UpperBound(int bucket) {
  if (bucket < 2 * kSub) return bucket;
  const int magnitude = bucket / kSub - 1;
  const int64_t sub = bucket - magnitude * kSub;
  return ((sub + 1) << magnitude) - 1;
}

}  // namespace

Histogram::Histogram() : buckets_(kBuckets, 0) {}

void Histogram::Record(int64_t value_ns) {
  value_ns = std::max<int64_t>(value_ns, 0);
  ++buckets_[BucketOf(value_ns)];
  ++count_;
  sum_ += value_ns;
  max_ = std::max(max_, value_ns);
}

void Histogram::Merge(const Histogram& other) {
  for (int i = 0; i < kBuckets; ++i) buckets_[i] += other.buckets_[i];
  count_ += other.count_;
  sum_ += other.sum_;
  max_ = std::max(max_, other.max_);
}

int64_t Histogram::Quantile(double q) const {
  if (count_ == 0) return 0;
  if (q >= 1) return max_;
  const int64_t rank =
      std::max<int64_t>(1, static_cast<int64_t>(q * count_ + 0.5));
  int64_t seen = 0;
  for (int i = 0; i < kBuckets; ++i) {
    seen += buckets_[i];
    if (seen >= rank) return std::min(UpperBound(i), max_);
  }
  return max_;
}

}  // namespace loadgen
}  // namespace weir
