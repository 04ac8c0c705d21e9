// Helpers shared by the engine's tests.
#ifndef WEIR_ENGINE_TEST_UTIL_H_
#define WEIR_ENGINE_TEST_UTIL_H_

#include <cstdlib>
#include <string>

#include "gtest/gtest.h"

namespace weir {

// A new, empty directory under the test's temporary directory.
inline std::string NewTempDir() {
  const char* base = std::getenv("TEST_TMPDIR");
  std::string templ =
      std::string(base != nullptr ? base : "/tmp") + "/weir-test-XXXXXX";
  char* dir = mkdtemp(templ.data());
  EXPECT_NE(dir, nullptr);
  return templ;
}

}  // namespace weir

#endif  // WEIR_ENGINE_TEST_UTIL_H_
