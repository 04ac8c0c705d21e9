#include "bench/loadgen/histogram.h"

#include <cmath>

#include "gtest/gtest.h"

namespace weir {
namespace loadgen {
namespace {

TEST(Histogram, EmptyReportsZero) {
  Histogram h;
  EXPECT_EQ(h.count(), 0);
  EXPECT_EQ(h.Quantile(0.5), 0);
  EXPECT_EQ(h.Quantile(1), 0);
}

TEST(Histogram, SmallValuesAreExact) {
  Histogram h;
  for (int v = 0; v < 100; ++v) h.Record(v);
  EXPECT_EQ(h.Quantile(0.5), 49);
  EXPECT_EQ(h.Quantile(0.99), 98);
  EXPECT_EQ(h.Quantile(1), 99);
}

TEST(Histogram, QuantilesAreWithinTwoPercent) {
  Histogram h;
  // 1 µs .. 1 s, evenly spaced.
  constexpr int kN = 100'000;
  for (int i = 1; i <= kN; ++i) h.Record(int64_t{10'000} * i);
  for (double q : {0.5, 0.9, 0.99, 0.999}) {
    const double expected = 10'000.0 * q * kN;
    EXPECT_NEAR(h.Quantile(q), expected, expected * 0.02) << q;
  }
  EXPECT_EQ(h.max(), int64_t{10'000} * kN);
}

TEST(Histogram, MergeAddsCounts) {
  Histogram a, b;
  for (int i = 0; i < 10; ++i) a.Record(1'000);
  for (int i = 0; i < 30; ++i) b.Record(1'000'000);
  a.Merge(b);
  EXPECT_EQ(a.count(), 40);
  EXPECT_EQ(a.max(), 1'000'000);
  EXPECT_NEAR(a.Quantile(0.5), 1'000'000, 20'000);
  EXPECT_NEAR(a.Quantile(0.2), 1'000, 20);
}

TEST(Histogram, HugeValuesLandInTheLastBucket) {
  Histogram h;
  h.Record(int64_t{1} << 50);
  h.Record(-5);
  EXPECT_EQ(h.count(), 2);
  EXPECT_EQ(h.max(), int64_t{1} << 50);
  EXPECT_EQ(h.Quantile(0.5), 0);
}

}  // namespace
}  // namespace loadgen
}  // namespace weir
