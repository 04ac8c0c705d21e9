// Storage: the options it opens RocksDB with.
#include "engine/storage.h"

#include <cstdlib>
#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "rocksdb/options.h"

namespace weir {
namespace {

std::string NewDir() {
  const char* tmp = std::getenv("TEST_TMPDIR");
  std::string dir =
      std::string(tmp != nullptr ? tmp : "/tmp") + "/storage-test-XXXXXX";
  return mkdtemp(dir.data()) != nullptr ? dir : std::string();
}

TEST(StorageTest, TheMemtableBudgetReachesRocksDB) {
  StorageOptions options;
  options.memtable_budget_bytes = size_t{32} << 20;
  const std::string dir = NewDir();
  ASSERT_FALSE(dir.empty());
  absl::StatusOr<std::unique_ptr<Storage>> storage =
      Storage::Open(options, dir);
  ASSERT_TRUE(storage.ok()) << storage.status();
  EXPECT_EQ((*storage)->db()->GetDBOptions().db_write_buffer_size,
            size_t{32} << 20);
}

TEST(StorageTest, NoBudgetByDefault) {
  const std::string dir = NewDir();
  ASSERT_FALSE(dir.empty());
  absl::StatusOr<std::unique_ptr<Storage>> storage =
      Storage::Open(StorageOptions(), dir);
  ASSERT_TRUE(storage.ok()) << storage.status();
  EXPECT_EQ((*storage)->db()->GetDBOptions().db_write_buffer_size, 0u);
}

}  // namespace
}  // namespace weir
