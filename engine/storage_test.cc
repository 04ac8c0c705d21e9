// Storage: the options it opens RocksDB with.
#include "engine/storage.h"

#include <memory>
#include <string>

#include "engine/key_codec.h"
#include "engine/records.h"
#include "engine/test_util.h"
#include "gtest/gtest.h"
#include "rocksdb/options.h"

namespace weir {
namespace {

TEST(StorageTest, TheMemtableBudgetReachesRocksDB) {
  StorageOptions options;
  options.memtable_budget_bytes = size_t{32} << 20;
  const std::string dir = NewTempDir();
  absl::StatusOr<std::unique_ptr<Storage>> storage =
      Storage::Open(options, dir);
  ASSERT_TRUE(storage.ok()) << storage.status();
  EXPECT_EQ((*storage)->db()->GetDBOptions().db_write_buffer_size,
            size_t{32} << 20);
}

TEST(StorageTest, NoBudgetByDefault) {
  const std::string dir = NewTempDir();
  absl::StatusOr<std::unique_ptr<Storage>> storage =
      Storage::Open(StorageOptions(), dir);
  ASSERT_TRUE(storage.ok()) << storage.status();
  EXPECT_EQ((*storage)->db()->GetDBOptions().db_write_buffer_size, 0u);
}

// The counters' merges are folded every few operands in the write path
// (so no memtable holds a million of one key); the sums stay exact, also
// once flushed and reopened.
TEST(StorageTest, CounterMergesFoldedInTheWritePathStayExact) {
  const std::string dir = NewTempDir();
  const std::string key = keys::Counters(7, 0);
  constexpr int kMerges = 1000;
  {
    absl::StatusOr<std::unique_ptr<Storage>> storage =
        Storage::Open(StorageOptions(), dir);
    ASSERT_TRUE(storage.ok()) << storage.status();
    Storage& st = **storage;
    EXPECT_GT(st.db()->GetOptions(st.meta()).max_successive_merges, 0u);
    Counters one;
    one.sent = 1;
    one.deleted = 2;
    for (int i = 0; i < kMerges; ++i) {
      rocksdb::WriteBatch batch;
      batch.Merge(st.meta(), key, EncodeCounters(one));
      ASSERT_TRUE(st.Write(&batch).ok());
    }
    std::string value;
    ASSERT_TRUE(
        st.db()->Get(rocksdb::ReadOptions(), st.meta(), key, &value).ok());
    Counters got;
    ASSERT_TRUE(DecodeCounters(value, &got).ok());
    EXPECT_EQ(got.sent, uint64_t{kMerges});
    EXPECT_EQ(got.deleted, uint64_t{2 * kMerges});
    ASSERT_TRUE(st.CompactAll().ok());
  }
  absl::StatusOr<std::unique_ptr<Storage>> storage =
      Storage::Open(StorageOptions(), dir);
  ASSERT_TRUE(storage.ok()) << storage.status();
  std::string value;
  ASSERT_TRUE((*storage)
                  ->db()
                  ->Get(rocksdb::ReadOptions(), (*storage)->meta(), key, &value)
                  .ok());
  Counters got;
  ASSERT_TRUE(DecodeCounters(value, &got).ok());
  EXPECT_EQ(got.sent, uint64_t{kMerges});
  EXPECT_EQ(got.deleted, uint64_t{2 * kMerges});
}

}  // namespace
}  // namespace weir
