#include "bench/random_text.h"

#include <random>

namespace weir {
namespace bench {

std::string RandomText(size_t size, uint64_t seed) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<size_t> pick(0, sizeof(kAlphabet) - 2);
  std::string text(size, ' ');
  for (char& c : text) c = kAlphabet[pick(rng)];
  return text;
}

}  // namespace bench
}  // namespace weir
