// Helpers for tests that make random choices: settings from the environment
// and a seeded generator, so that a failing run can be replayed.
#ifndef WEIR_TESTS_TEST_RANDOM_H_
#define WEIR_TESTS_TEST_RANDOM_H_

#include <cstdint>
#include <cstdlib>
#include <random>
#include <vector>

#include "absl/strings/numbers.h"

namespace weir::test {

// The integer in environment variable `name`, or `fallback` when it is
// unset or not a number.
inline int64_t EnvInt(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  int64_t out = 0;
  return v != nullptr && absl::SimpleAtoi(v, &out) ? out : fallback;
}

// A seed from environment variable `name` (a replay), or a fresh one.
inline uint32_t SeedFrom(const char* name) {
  return static_cast<uint32_t>(EnvInt(name, std::random_device()()));
}

// Random choices from one seed. Not thread-safe.
class TestRandom {
 public:
  explicit TestRandom(uint32_t seed) : rng_(seed) {}

  // True with probability `p`.
  bool Chance(double p) { return std::bernoulli_distribution(p)(rng_); }
  // An integer in [lo, hi].
  int Between(int lo, int hi) {
    return std::uniform_int_distribution<int>(lo, hi)(rng_);
  }
  // One of `options` (not empty).
  template <typename T>
  const T& Pick(const std::vector<T>& options) {
    return options[std::uniform_int_distribution<size_t>(
        0, options.size() - 1)(rng_)];
  }

 private:
  std::mt19937 rng_;
};

}  // namespace weir::test

#endif  // WEIR_TESTS_TEST_RANDOM_H_
