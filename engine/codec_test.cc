#include <string>

#include "engine/coding.h"
#include "engine/key_codec.h"
#include "engine/receipt.h"
#include "engine/records.h"
#include "gtest/gtest.h"

namespace weir {
namespace {

TEST(KeyCodec, MessageKeysSortByOffset) {
  EXPECT_LT(keys::Message(1, 255), keys::Message(1, 256));
  EXPECT_LT(keys::Message(1, UINT64_MAX), keys::Message(2, 0));
  uint64_t qid, offset;
  ASSERT_TRUE(keys::ParseMessage(keys::Message(7, 1234567), &qid, &offset));
  EXPECT_EQ(qid, 7u);
  EXPECT_EQ(offset, 1234567u);
  EXPECT_FALSE(keys::ParseMessage("short", &qid, &offset));
}

TEST(KeyCodec, GroupOffsetRoundTrips) {
  uint64_t qid, offset;
  uint32_t gid;
  ASSERT_TRUE(
      keys::ParseGroupOffset(keys::GroupOffset(3, 9, 42), &qid, &gid, &offset));
  EXPECT_EQ(qid, 3u);
  EXPECT_EQ(gid, 9u);
  EXPECT_EQ(offset, 42u);
  EXPECT_LT(keys::GroupOffset(3, 9, UINT64_MAX), keys::GroupOffset(3, 10, 0));
}

TEST(KeyCodec, DelayKeysSortByTime) {
  EXPECT_LT(keys::Delay(1, 100, 999), keys::Delay(1, 101, 0));
  uint64_t qid, t, offset;
  ASSERT_TRUE(keys::ParseDelay(keys::Delay(1, 100, 5), &qid, &t, &offset));
  EXPECT_EQ(t, 100u);
  EXPECT_EQ(offset, 5u);
}

TEST(KeyCodec, PrefixSuccessorIsAboveEveryExtension) {
  const std::string p = keys::QueueBegin(5);
  const std::string end = keys::PrefixSuccessor(p);
  EXPECT_LT(keys::Message(5, UINT64_MAX), end);
  EXPECT_LE(end, keys::Message(6, 0));
  EXPECT_EQ(keys::PrefixSuccessor(std::string("a\xff", 2)), "b");
}

TEST(Records, MessageRoundTrips) {
  MessageRecord m;
  m.enqueue_time_us = 1700000000123456;
  m.visible_at_us = 1700000000999999;
  m.attributes = {{"k", "v"}, {"empty", ""}};
  m.body = std::string("bin\0ary", 7);
  MessageRecord out;
  ASSERT_TRUE(DecodeMessage(EncodeMessage(m), &out).ok());
  EXPECT_EQ(out.enqueue_time_us, m.enqueue_time_us);
  EXPECT_EQ(out.visible_at_us, m.visible_at_us);
  EXPECT_EQ(out.attributes, m.attributes);
  EXPECT_EQ(out.body, m.body);
}

TEST(Records, TruncatedRecordsAreReportedNotCrashedOn) {
  MessageRecord m;
  m.attributes = {{"key", "value"}};
  m.body = "body";
  const std::string enc = EncodeMessage(m);
  for (size_t n = 0; n < enc.size() - m.body.size(); ++n) {
    MessageRecord out;
    EXPECT_EQ(DecodeMessage(enc.substr(0, n), &out).code(),
              absl::StatusCode::kDataLoss)
        << n;
  }
  LeaseRecord l;
  EXPECT_FALSE(DecodeLease("\x01\x02", &l).ok());
  QueueRecord q;
  EXPECT_FALSE(DecodeQueue("\xff\xff\xff", &q).ok());
  Counters c;
  EXPECT_FALSE(DecodeCounters("1234", &c).ok());
}

TEST(Records, QueueAndGroupRoundTrip) {
  QueueRecord q;
  q.id = 12;
  q.name = "orders";
  q.create_time_us = 55;
  q.config.visibility_timeout = absl::Seconds(45);
  q.config.max_message_bytes = 1000;
  q.config.delay = absl::Seconds(3);
  QueueRecord qo;
  ASSERT_TRUE(DecodeQueue(EncodeQueue(q), &qo).ok());
  EXPECT_EQ(qo.id, 12u);
  EXPECT_EQ(qo.name, "orders");
  EXPECT_EQ(qo.create_time_us, 55);
  EXPECT_EQ(qo.config, q.config);

  GroupRecord g;
  g.id = 4;
  g.name = "billing";
  g.delete_floor = 1000;
  g.cursor_base = 2000;
  g.generation = 3;
  GroupRecord go;
  ASSERT_TRUE(DecodeGroup(EncodeGroup(g), &go).ok());
  EXPECT_EQ(go.name, "billing");
  EXPECT_EQ(go.delete_floor, 1000u);
  EXPECT_EQ(go.cursor_base, 2000u);
  EXPECT_EQ(go.generation, 3u);
}

TEST(Receipt, RoundTrips) {
  Receipt r{1, 2, 3, 4, 5};
  absl::StatusOr<Receipt> out = DecodeReceipt(EncodeReceipt(r));
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(*out, r);
  EXPECT_LE(EncodeReceipt(r).size(), kMaxReceiptLength);
}

TEST(Receipt, GarbageAndAlteredHandlesAreInvalidArgument) {
  EXPECT_EQ(DecodeReceipt("").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DecodeReceipt("not a receipt!").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DecodeReceipt(std::string(10000, 'A')).status().code(),
            absl::StatusCode::kInvalidArgument);
  const std::string good = EncodeReceipt(Receipt{1, 0, 0, 77, 1});
  for (size_t i = 0; i < good.size(); ++i) {
    std::string bad = good;
    bad[i] = bad[i] == 'A' ? 'B' : 'A';
    EXPECT_FALSE(DecodeReceipt(bad).ok()) << i;
  }
}

TEST(Coding, VarintRejectsOverflowAndTruncation) {
  std::string s;
  PutVarint64(&s, UINT64_MAX);
  uint64_t v;
  ByteReader ok(s);
  ASSERT_TRUE(ok.GetVarint64(&v));
  EXPECT_EQ(v, UINT64_MAX);
  ByteReader truncated(absl::string_view(s).substr(0, s.size() - 1));
  EXPECT_FALSE(truncated.GetVarint64(&v));
  const std::string too_long(11, '\xff');
  ByteReader overflow(too_long);
  EXPECT_FALSE(overflow.GetVarint64(&v));
}

}  // namespace
}  // namespace weir
