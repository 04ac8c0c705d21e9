#include "engine/engine.h"

#include <algorithm>
#include <atomic>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "engine/receipt.h"
#include "engine/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace weir {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::SizeIs;

using EngineTest = EngineFixture;

TEST_F(EngineTest, OffsetsStrictlyIncreaseAcrossBatchesAndRestarts) {
  Create("q");
  EXPECT_THAT(SendBodies("q", {"a", "b", "c"}), ElementsAre(0, 1, 2));
  EXPECT_THAT(SendBodies("q", {"d"}), ElementsAre(3));
  Reopen();
  EXPECT_THAT(SendBodies("q", {"e", "f"}), ElementsAre(4, 5));
}

TEST_F(EngineTest, OffsetsAreNotReusedAfterEverythingIsDeletedAndReopened) {
  Create("q");
  std::vector<std::string> bodies(1000, "x");
  for (int i = 0; i < 3; ++i) SendBodies("q", bodies);
  for (int i = 0; i < 3; ++i) {
    auto msgs = Recv("q", 1000);
    ASSERT_THAT(msgs, SizeIs(1000));
    std::vector<std::string> receipts;
    for (auto& m : msgs) receipts.push_back(m.receipt_handle);
    clock_.Advance(absl::Seconds(2));  // Lets the floor be written.
    auto r = engine_->Delete("q", receipts);
    ASSERT_TRUE(r.ok());
  }
  Reopen();
  EXPECT_THAT(Recv("q"), IsEmpty());
  EXPECT_THAT(SendBodies("q", {"next"}), ElementsAre(3000));
  EXPECT_EQ(Stats("q").ready, 1u);
}

TEST_F(EngineTest, SendReceiveDeleteRoundTrip) {
  Create("q");
  SendEntry e;
  e.body = std::string("hello\0world", 11);
  e.attributes = {{"type", "greeting"}};
  ASSERT_TRUE(engine_->Send("q", {e}).ok());
  auto msgs = Recv("q", 10);
  ASSERT_THAT(msgs, SizeIs(1));
  EXPECT_EQ(msgs[0].body, e.body);
  EXPECT_EQ(msgs[0].attributes, e.attributes);
  EXPECT_EQ(msgs[0].offset, 0u);
  EXPECT_EQ(msgs[0].receive_count, 1u);
  EXPECT_EQ(msgs[0].enqueue_time, clock_.Now());
  EXPECT_EQ(msgs[0].lease_deadline, clock_.Now() + absl::Seconds(30));
  EXPECT_THAT(Recv("q"), IsEmpty());
  EXPECT_TRUE(DeleteOne("q", msgs[0].receipt_handle).ok());
  // Deleting again is harmless.
  EXPECT_TRUE(DeleteOne("q", msgs[0].receipt_handle).ok());
  clock_.Advance(absl::Hours(1));
  EXPECT_THAT(Recv("q"), IsEmpty());
  QueueStats s = Stats("q");
  EXPECT_EQ(s.sent_total, 1u);
  EXPECT_EQ(s.received_total, 1u);
  EXPECT_EQ(s.deleted_total, 1u);
  EXPECT_EQ(s.ready + s.in_flight + s.delayed, 0u);
}

TEST_F(EngineTest, ReceiveReturnsOldestFirstAndAtMostMax) {
  Create("q");
  SendBodies("q", {"0", "1", "2", "3", "4"});
  auto a = Recv("q", 2);
  ASSERT_THAT(a, SizeIs(2));
  EXPECT_EQ(a[0].body, "0");
  EXPECT_EQ(a[1].body, "1");
  auto b = Recv("q", 10);
  ASSERT_THAT(b, SizeIs(3));
  EXPECT_EQ(b[2].body, "4");
}

TEST_F(EngineTest, ConcurrentReceiversNeverShareALeasedMessage) {
  Create("q");
  constexpr int kMessages = 4000;
  std::vector<std::string> bodies;
  for (int i = 0; i < kMessages; ++i) bodies.push_back(std::to_string(i));
  for (int i = 0; i < kMessages; i += 1000) {
    SendBodies("q", std::vector<std::string>(bodies.begin() + i,
                                             bodies.begin() + i + 1000));
  }
  constexpr int kThreads = 8;
  std::vector<std::vector<uint64_t>> got(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      ReceiveOptions o;
      o.max_messages = 7;
      o.visibility_timeout = absl::Hours(1);
      for (;;) {
        auto r = engine_->Receive("q", o);
        ASSERT_TRUE(r.ok()) << r.status();
        if (r->empty()) return;
        for (auto& m : *r) got[t].push_back(m.offset);
      }
    });
  }
  for (auto& t : threads) t.join();
  std::set<uint64_t> all;
  size_t total = 0;
  for (auto& g : got) {
    total += g.size();
    all.insert(g.begin(), g.end());
  }
  EXPECT_EQ(total, static_cast<size_t>(kMessages));
  EXPECT_EQ(all.size(), static_cast<size_t>(kMessages));
  EXPECT_EQ(Stats("q").in_flight, static_cast<uint64_t>(kMessages));
}

TEST_F(EngineTest, LapsedLeaseRedeliversWithHigherReceiveCount) {
  Create("q");
  SendBodies("q", {"m"});
  auto first = Recv("q", 1, absl::Seconds(10));
  ASSERT_THAT(first, SizeIs(1));
  clock_.Advance(absl::Seconds(9));
  EXPECT_THAT(Recv("q"), IsEmpty());
  clock_.Advance(absl::Seconds(1));
  auto second = Recv("q");
  ASSERT_THAT(second, SizeIs(1));
  EXPECT_EQ(second[0].offset, first[0].offset);
  EXPECT_EQ(second[0].receive_count, 2u);
  EXPECT_NE(second[0].receipt_handle, first[0].receipt_handle);
}

TEST_F(EngineTest, StaleReceiptIsRejectedAndChangesNothing) {
  Create("q");
  SendBodies("q", {"m"});
  auto first = Recv("q", 1, absl::Seconds(10));
  clock_.Advance(absl::Seconds(10));
  auto second = Recv("q", 1, absl::Seconds(60));
  ASSERT_THAT(second, SizeIs(1));
  EXPECT_EQ(DeleteOne("q", first[0].receipt_handle).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(
      ChangeOne("q", first[0].receipt_handle, absl::ZeroDuration()).code(),
      absl::StatusCode::kFailedPrecondition);
  // The current lease is untouched: still invisible, still deletable.
  EXPECT_THAT(Recv("q"), IsEmpty());
  EXPECT_EQ(Stats("q").in_flight, 1u);
  EXPECT_TRUE(DeleteOne("q", second[0].receipt_handle).ok());
}

TEST_F(EngineTest, ReceiptStaysValidAfterLapseUntilLeasedAgain) {
  Create("q");
  SendBodies("q", {"m"});
  auto first = Recv("q", 1, absl::Seconds(10));
  clock_.Advance(absl::Seconds(20));
  EXPECT_TRUE(DeleteOne("q", first[0].receipt_handle).ok());
  EXPECT_THAT(Recv("q"), IsEmpty());
}

TEST_F(EngineTest, ExtendKeepsMessageInvisible) {
  Create("q");
  SendBodies("q", {"m"});
  auto m = Recv("q", 1, absl::Seconds(10));
  clock_.Advance(absl::Seconds(8));
  ASSERT_TRUE(ChangeOne("q", m[0].receipt_handle, absl::Seconds(10)).ok());
  clock_.Advance(absl::Seconds(8));
  EXPECT_THAT(Recv("q"), IsEmpty());
  clock_.Advance(absl::Seconds(2));
  auto again = Recv("q");
  ASSERT_THAT(again, SizeIs(1));
  EXPECT_EQ(again[0].receive_count, 2u);
}

TEST_F(EngineTest, ReleaseMakesMessageVisibleAtOnce) {
  Create("q");
  SendBodies("q", {"m"});
  auto m = Recv("q", 1, absl::Hours(1));
  ASSERT_TRUE(ChangeOne("q", m[0].receipt_handle, absl::ZeroDuration()).ok());
  auto again = Recv("q");
  ASSERT_THAT(again, SizeIs(1));
  EXPECT_EQ(again[0].receive_count, 2u);
}

TEST_F(EngineTest, PositiveTimeoutAfterReleasePostponesRetry) {
  Create("q");
  SendBodies("q", {"m"});
  auto m = Recv("q", 1, absl::Seconds(30));
  ASSERT_TRUE(ChangeOne("q", m[0].receipt_handle, absl::ZeroDuration()).ok());
  ASSERT_TRUE(ChangeOne("q", m[0].receipt_handle, absl::Seconds(5)).ok());
  EXPECT_THAT(Recv("q"), IsEmpty());
  clock_.Advance(absl::Seconds(5));
  ASSERT_THAT(Recv("q"), SizeIs(1));
}

TEST_F(EngineTest, ChangeVisibilityOfDeletedMessageFails) {
  Create("q");
  SendBodies("q", {"m"});
  auto m = Recv("q");
  ASSERT_TRUE(DeleteOne("q", m[0].receipt_handle).ok());
  EXPECT_EQ(ChangeOne("q", m[0].receipt_handle, absl::Seconds(5)).code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(EngineTest, BatchAnswersEntryByEntry) {
  Create("q");
  SendBodies("q", {"a", "b"});
  auto m = Recv("q", 2);
  auto r = engine_->Delete("q", {m[0].receipt_handle, "garbage",
                                 m[1].receipt_handle, m[1].receipt_handle});
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE((*r)[0].ok());
  EXPECT_EQ((*r)[1].code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE((*r)[2].ok());
  EXPECT_TRUE((*r)[3].ok());
  EXPECT_EQ(Stats("q").deleted_total, 2u);
}

// An entry refused for its timeout takes no part in the batch: a later entry
// with the same receipt is applied and answered on its own, and an empty
// receipt is an error, not a no-op.
TEST_F(EngineTest, ChangeVisibilityBatchAnswersEachEntryOnItsOwn) {
  Create("q");
  SendBodies("q", {"a"});
  auto m = Recv("q", 1, absl::Seconds(30));
  ASSERT_EQ(m.size(), 1u);
  const std::string& receipt = m[0].receipt_handle;
  auto r = engine_->ChangeVisibility(
      "q", {VisibilityChange{receipt, absl::Hours(13)},
            VisibilityChange{receipt, absl::Minutes(5)},
            VisibilityChange{"", absl::Minutes(5)},
            VisibilityChange{receipt, absl::Hours(-1)}});
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 4u);
  EXPECT_EQ((*r)[0].code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE((*r)[1].ok()) << (*r)[1];
  EXPECT_EQ((*r)[2].code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*r)[3].code(), absl::StatusCode::kInvalidArgument);
  // The 5 minute extension took effect.
  clock_.Advance(absl::Minutes(1));
  EXPECT_TRUE(Recv("q").empty());
  clock_.Advance(absl::Minutes(4));
  EXPECT_EQ(Recv("q").size(), 1u);
}

std::vector<absl::StatusCode> Codes(const std::vector<absl::Status>& results) {
  std::vector<absl::StatusCode> codes;
  for (const absl::Status& r : results) codes.push_back(r.code());
  return codes;
}

// A stale receipt of a message (its lease lapsed and the message was taken
// again) does not shut the current one out of the same batch, wherever it
// stands in it; two different receipts that are both current cannot exist.
TEST_F(EngineTest, AStaleReceiptDoesNotShutOutTheCurrentOneInABatch) {
  const auto stale_current_current_stale =
      ElementsAre(absl::StatusCode::kFailedPrecondition, absl::StatusCode::kOk,
                  absl::StatusCode::kOk, absl::StatusCode::kFailedPrecondition);
  Create("q");
  SendBodies("q", {"a", "b"});
  auto first = Recv("q", 2, absl::Seconds(5));
  ASSERT_EQ(first.size(), 2u);
  clock_.Advance(absl::Seconds(5));
  auto again = Recv("q", 2, absl::Minutes(5));
  ASSERT_EQ(again.size(), 2u);
  // Stale before current for "a", current before stale for "b".
  auto r = engine_->ChangeVisibility(
      "q", {VisibilityChange{first[0].receipt_handle, absl::ZeroDuration()},
            VisibilityChange{again[0].receipt_handle, absl::ZeroDuration()},
            VisibilityChange{again[1].receipt_handle, absl::ZeroDuration()},
            VisibilityChange{first[1].receipt_handle, absl::ZeroDuration()}});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(Codes(*r), stale_current_current_stale);
  EXPECT_THAT(Recv("q", 2), SizeIs(2));
  // The same for deletes.
  auto third = Recv("q", 2, absl::Seconds(5));
  ASSERT_EQ(third.size(), 0u);
  clock_.Advance(absl::Seconds(30));
  third = Recv("q", 2, absl::Minutes(5));
  ASSERT_EQ(third.size(), 2u);
  auto d =
      engine_->Delete("q", {again[0].receipt_handle, third[0].receipt_handle,
                            third[1].receipt_handle, again[1].receipt_handle});
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_THAT(Codes(*d), stale_current_current_stale);
  EXPECT_EQ(Stats("q").deleted_total, 2u);
}

TEST_F(EngineTest, ReceiptOfAnotherQueueIsRejected) {
  Create("a");
  Create("b");
  SendBodies("a", {"m"});
  SendBodies("b", {"m"});
  auto m = Recv("a");
  EXPECT_EQ(DeleteOne("b", m[0].receipt_handle).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Stats("b").ready, 1u);
}

TEST_F(EngineTest, ForgedReceiptFailsPreconditionAndChangesNothing) {
  Create("q");
  SendBodies("q", {"m", "never-received"});
  auto m = Recv("q");
  absl::StatusOr<Receipt> real = DecodeReceipt(m[0].receipt_handle);
  ASSERT_TRUE(real.ok());
  Receipt forged = *real;
  forged.receive_count = 5;
  EXPECT_EQ(DeleteOne("q", EncodeReceipt(forged)).code(),
            absl::StatusCode::kFailedPrecondition);
  forged = *real;
  forged.offset = 1;  // Exists, but was never leased.
  EXPECT_EQ(DeleteOne("q", EncodeReceipt(forged)).code(),
            absl::StatusCode::kFailedPrecondition);
  forged.offset = 99;  // Does not exist.
  EXPECT_EQ(ChangeOne("q", EncodeReceipt(forged), absl::ZeroDuration()).code(),
            absl::StatusCode::kFailedPrecondition);
  QueueStats s = Stats("q");
  EXPECT_EQ(s.in_flight, 1u);
  EXPECT_EQ(s.ready, 1u);
  EXPECT_EQ(s.deleted_total, 0u);
}

TEST_F(EngineTest, PurgeRemovesEverythingAndOffsetsGoOn) {
  Create("q");
  SendBodies("q", {"a", "b", "c"});
  auto leased = Recv("q");
  auto purged = engine_->PurgeQueue("q");
  ASSERT_TRUE(purged.ok());
  EXPECT_EQ(*purged, 3u);
  EXPECT_THAT(Recv("q"), IsEmpty());
  EXPECT_EQ(DeleteOne("q", leased[0].receipt_handle).code(),
            absl::StatusCode::kOk);  // Already gone: deleting is harmless.
  EXPECT_THAT(SendBodies("q", {"d"}), ElementsAre(3));
  Reopen();
  auto m = Recv("q", 10);
  ASSERT_THAT(m, SizeIs(1));
  EXPECT_EQ(m[0].body, "d");
}

TEST_F(EngineTest, DeleteQueueRemovesItAndItsData) {
  Create("q");
  SendBodies("q", {"a"});
  ASSERT_TRUE(engine_->DeleteQueue("q").ok());
  EXPECT_EQ(engine_->GetQueue("q").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(engine_->DeleteQueue("q").code(), absl::StatusCode::kNotFound);
  Create("q");
  EXPECT_THAT(Recv("q"), IsEmpty());
  EXPECT_THAT(SendBodies("q", {"b"}), ElementsAre(0));
  Reopen();
  auto m = Recv("q", 10);
  ASSERT_THAT(m, SizeIs(1));
  EXPECT_EQ(m[0].body, "b");
}

TEST_F(EngineTest, StatsCountReadyInFlightDelayedAndOldestAge) {
  QueueConfig c;
  Create("q", c);
  SendBodies("q", {"a", "b", "c"});
  clock_.Advance(absl::Seconds(7));
  SendEntry delayed{"d", {}, absl::Minutes(1)};
  ASSERT_TRUE(engine_->Send("q", {delayed}).ok());
  Recv("q");
  QueueStats s = Stats("q");
  EXPECT_EQ(s.ready, 2u);
  EXPECT_EQ(s.in_flight, 1u);
  EXPECT_EQ(s.delayed, 1u);
  EXPECT_EQ(s.oldest_ready_age, absl::Seconds(7));
  EXPECT_EQ(s.sent_total, 4u);
  EXPECT_EQ(s.received_total, 1u);
  EXPECT_EQ(s.next_offset, 4u);
}

TEST_F(EngineTest, DelayedMessageIsInvisibleUntilItsTime) {
  QueueConfig c;
  c.delay = absl::Seconds(20);
  Create("q", c);
  SendBodies("q", {"default-delay"});
  ASSERT_TRUE(
      engine_->Send("q", {SendEntry{"no-delay", {}, absl::ZeroDuration()}})
          .ok());
  auto m = Recv("q", 10);
  ASSERT_THAT(m, SizeIs(1));
  EXPECT_EQ(m[0].body, "no-delay");
  clock_.Advance(absl::Seconds(19));
  EXPECT_THAT(Recv("q"), IsEmpty());
  Reopen();  // The delay survives a restart.
  EXPECT_THAT(Recv("q"), IsEmpty());
  clock_.Advance(absl::Seconds(1));
  auto d = Recv("q");
  ASSERT_THAT(d, SizeIs(1));
  EXPECT_EQ(d[0].body, "default-delay");
  EXPECT_EQ(d[0].receive_count, 1u);
}

TEST_F(EngineTest, LeasesAndReceiveCountsSurviveRestart) {
  Create("q");
  SendBodies("q", {"a", "b", "c"});
  auto a = Recv("q", 1, absl::Seconds(10));  // Lapses, count 1.
  clock_.Advance(absl::Seconds(10));
  auto a2 = Recv("q", 1, absl::Seconds(100));  // count 2, in flight.
  ASSERT_EQ(a2[0].offset, a[0].offset);
  auto b = Recv("q", 1, absl::Seconds(5));
  ASSERT_TRUE(DeleteOne("q", b[0].receipt_handle).ok());
  Reopen();
  // Only "c" is visible; "a" is still leased; "b" is gone.
  auto c = Recv("q", 10, absl::Hours(1));
  ASSERT_THAT(c, SizeIs(1));
  EXPECT_EQ(c[0].body, "c");
  // The old receipt still works after the restart.
  EXPECT_TRUE(ChangeOne("q", a2[0].receipt_handle, absl::Seconds(50)).ok());
  clock_.Advance(absl::Seconds(50));
  auto again = Recv("q", 10);
  ASSERT_THAT(again, SizeIs(1));
  EXPECT_EQ(again[0].body, "a");
  EXPECT_EQ(again[0].receive_count, 3u);
}

TEST_F(EngineTest, CreateIsIdempotentButRefusesAnotherConfig) {
  QueueConfig c;
  c.visibility_timeout = absl::Seconds(45);
  auto first = engine_->CreateQueue("q", c);
  ASSERT_TRUE(first.ok());
  EXPECT_TRUE(first->second);
  auto again = engine_->CreateQueue("q", c);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->second);
  c.visibility_timeout = absl::Seconds(46);
  EXPECT_EQ(engine_->CreateQueue("q", c).status().code(),
            absl::StatusCode::kAlreadyExists);
  Reopen();
  auto info = engine_->GetQueue("q");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->config.visibility_timeout, absl::Seconds(45));
  EXPECT_EQ(info->config.max_message_bytes, 256 << 10);
}

TEST_F(EngineTest, ListQueuesPagesInNameOrder) {
  for (const char* n : {"b", "a", "c", "other"}) Create(n);
  auto page = engine_->ListQueues("", "", 2);
  ASSERT_TRUE(page.ok());
  ASSERT_THAT(*page, SizeIs(2));
  EXPECT_EQ((*page)[0].name, "a");
  EXPECT_EQ((*page)[1].name, "b");
  page = engine_->ListQueues("", "b", 10);
  ASSERT_THAT(*page, SizeIs(2));
  EXPECT_EQ((*page)[0].name, "c");
  page = engine_->ListQueues("o", "", 10);
  ASSERT_THAT(*page, SizeIs(1));
  EXPECT_EQ((*page)[0].name, "other");
}

TEST_F(EngineTest, BadInputIsRejectedAndChangesNothing) {
  using absl::StatusCode;
  for (const std::string& bad :
       {std::string(""), std::string(81, 'a'), std::string("a/b"),
        std::string("caf\xc3\xa9"), std::string("a b"), std::string("..")}) {
    EXPECT_EQ(engine_->CreateQueue(bad, QueueConfig()).status().code(),
              StatusCode::kInvalidArgument)
        << bad;
  }
  QueueConfig bad_config;
  bad_config.visibility_timeout = absl::Hours(13);
  EXPECT_EQ(engine_->CreateQueue("q", bad_config).status().code(),
            StatusCode::kInvalidArgument);
  bad_config = QueueConfig();
  bad_config.max_message_bytes = -1;
  EXPECT_EQ(engine_->CreateQueue("q", bad_config).status().code(),
            StatusCode::kInvalidArgument);
  bad_config = QueueConfig();
  bad_config.delay = absl::Minutes(16);
  EXPECT_EQ(engine_->CreateQueue("q", bad_config).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(engine_->GetQueue("q").status().code(), StatusCode::kNotFound);

  QueueConfig c;
  c.max_message_bytes = 10;
  Create("q", c);
  EXPECT_EQ(engine_->Send("nope", {SendEntry{"x", {}, {}}}).status().code(),
            StatusCode::kNotFound);
  EXPECT_EQ(engine_->Send("q", {}).status().code(),
            StatusCode::kInvalidArgument);
  std::vector<SendEntry> too_many(1001, SendEntry{"x", {}, {}});
  EXPECT_EQ(engine_->Send("q", too_many).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(engine_
                ->Send("q", {SendEntry{"ok", {}, {}},
                             SendEntry{std::string(11, 'x'), {}, {}}})
                .status()
                .code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(engine_->Send("q", {SendEntry{"x", {}, absl::Seconds(-1)}})
                .status()
                .code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(
      engine_->Send("q", {SendEntry{"x", {{"", "v"}}, {}}}).status().code(),
      StatusCode::kInvalidArgument);
  EXPECT_EQ(Stats("q").sent_total, 0u);
  EXPECT_EQ(Stats("q").next_offset, 0u);

  ReceiveOptions o;
  o.max_messages = 0;
  EXPECT_EQ(engine_->Receive("q", o).status().code(),
            StatusCode::kInvalidArgument);
  o.max_messages = 1001;
  EXPECT_EQ(engine_->Receive("q", o).status().code(),
            StatusCode::kInvalidArgument);
  o.max_messages = 1;
  o.visibility_timeout = absl::Seconds(-1);
  EXPECT_EQ(engine_->Receive("q", o).status().code(),
            StatusCode::kInvalidArgument);
  o.visibility_timeout = absl::Hours(12) + absl::Seconds(1);
  EXPECT_EQ(engine_->Receive("q", o).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(engine_->Delete("q", {}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(engine_->ChangeVisibility("q", {}).status().code(),
            StatusCode::kInvalidArgument);

  SendBodies("q", {"m"});
  auto m = Recv("q");
  EXPECT_EQ(ChangeOne("q", m[0].receipt_handle, absl::Hours(13)).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(ChangeOne("q", m[0].receipt_handle, absl::Seconds(-1)).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(Stats("q").in_flight, 1u);
}

TEST_F(EngineTest, LongPollWakesOnSend) {
  Create("q");
  absl::Notification done;
  absl::StatusOr<std::vector<ReceivedMessage>> got;
  ReceiveOptions o;
  engine_->ReceiveAsync("q", o, absl::Seconds(20), [&](auto r) {
    got = std::move(r);
    done.Notify();
  });
  EXPECT_FALSE(done.HasBeenNotified());
  SendBodies("q", {"wake"});
  // The fake clock never moves: only the send can end the wait.
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(60)));
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_THAT(*got, SizeIs(1));
  EXPECT_EQ((*got)[0].body, "wake");
}

// A long poll (Engine::ReceiveAsync) and its answer.
struct Poll {
  absl::Notification done;
  absl::StatusOr<std::vector<ReceivedMessage>> got;

  // Starts it. Its first pass runs on this thread: when nothing is ready,
  // it has parked by the time this returns.
  void Start(Engine& engine, const ReceiveOptions& o,
             absl::Duration wait = absl::Seconds(20)) {
    engine.ReceiveAsync("q", o, wait, [this](auto r) {
      got = std::move(r);
      done.Notify();
    });
  }
  // The answer, waited for generously; fails the test if there is none.
  const std::vector<ReceivedMessage>& Answer() {
    static const std::vector<ReceivedMessage> kNone;
    EXPECT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(60)));
    EXPECT_TRUE(got.ok()) << got.status();
    return got.ok() ? *got : kNone;
  }
};

// A long poll parked when messages are sent has them leased in the send's
// own write: one write (one fsync in sync mode) between the send and the
// consumer instead of two. The lease is as durable as any other.
TEST_F(EngineTest, LongPollTakesASendInTheSendsOwnWrite) {
  Create("q");
  Poll poll;
  ReceiveOptions o;
  o.max_messages = 10;
  o.visibility_timeout = absl::Seconds(40);
  poll.Start(*engine_, o);
  const uint64_t before = engine_->GetStorageStats().writes;
  SendBodies("q", {"a", "b"});
  const std::vector<ReceivedMessage> got = poll.Answer();
  ASSERT_THAT(got, SizeIs(2));
  EXPECT_EQ(engine_->GetStorageStats().writes, before + 1);
  const absl::Time deadline = clock_.Now() + absl::Seconds(40);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(got[i].body, i == 0 ? "a" : "b");
    EXPECT_EQ(got[i].offset, i);
    EXPECT_EQ(got[i].receive_count, 1u);
    EXPECT_EQ(got[i].lease_deadline, deadline);
  }
  QueueStats s = Stats("q");
  EXPECT_EQ(s.in_flight, 2u);
  EXPECT_EQ(s.ready, 0u);
  EXPECT_EQ(s.received_total, 2u);

  Reopen();
  s = Stats("q");
  EXPECT_EQ(s.in_flight, 2u);
  EXPECT_EQ(s.received_total, 2u);
  EXPECT_THAT(Recv("q", 10), IsEmpty());
  EXPECT_TRUE(DeleteOne("q", got[0].receipt_handle).ok());
  clock_.Advance(absl::Seconds(40));
  std::vector<ReceivedMessage> again = Recv("q", 10);
  ASSERT_THAT(again, SizeIs(1));
  EXPECT_EQ(again[0].body, "b");
  EXPECT_EQ(again[0].receive_count, 2u);
  EXPECT_EQ(ChangeOne("q", got[1].receipt_handle, absl::Seconds(1)).code(),
            absl::StatusCode::kFailedPrecondition);
}

// Parked long polls each take what they asked for, in the order they
// parked, in the send's one write; what is left stays ready for the next
// receive.
TEST_F(EngineTest, SendHandsEachParkedLongPollItsShare) {
  Create("q");
  Poll polls[2];
  ReceiveOptions o;
  o.max_messages = 2;
  for (Poll& p : polls) p.Start(*engine_, o);
  const uint64_t before = engine_->GetStorageStats().writes;
  SendBodies("q", {"a", "b", "c", "d", "e"});
  std::vector<std::string> bodies;
  for (Poll& p : polls) {
    const std::vector<ReceivedMessage>& got = p.Answer();
    ASSERT_THAT(got, SizeIs(2));
    for (const ReceivedMessage& m : got) bodies.push_back(m.body);
  }
  EXPECT_EQ(engine_->GetStorageStats().writes, before + 1);
  EXPECT_THAT(bodies, ElementsAre("a", "b", "c", "d"));
  std::vector<ReceivedMessage> rest = Recv("q", 10);
  ASSERT_THAT(rest, SizeIs(1));
  EXPECT_EQ(rest[0].body, "e");
  EXPECT_EQ(Stats("q").in_flight, 5u);
}

// Each group's parked long poll gets its own lease of the same message, in
// the one write of the send.
TEST_F(EngineTest, SendHandsOffToEveryGroupInOneWrite) {
  Create("q");
  ASSERT_TRUE(engine_->CreateGroup("q", "g", LogPosition::Latest()).ok());
  Poll polls[2];
  const char* groups[2] = {"", "g"};
  for (int i = 0; i < 2; ++i) {
    ReceiveOptions o;
    o.group = groups[i];
    polls[i].Start(*engine_, o);
  }
  const uint64_t before = engine_->GetStorageStats().writes;
  SendBodies("q", {"m"});
  std::string receipt_g;
  for (Poll& p : polls) {
    const std::vector<ReceivedMessage>& got = p.Answer();
    ASSERT_THAT(got, SizeIs(1));
    EXPECT_EQ(got[0].body, "m");
    receipt_g = got[0].receipt_handle;  // The last is group g's.
  }
  EXPECT_EQ(engine_->GetStorageStats().writes, before + 1);
  EXPECT_TRUE(DeleteOne("q", receipt_g).ok());
  EXPECT_EQ(Stats("q", "g").in_flight, 0u);
  EXPECT_EQ(Stats("q").in_flight, 1u);
}

// Messages that must wait (a send delay, an ordering key) are not handed
// over by the send; the parked receive is woken when their time comes.
TEST_F(EngineTest, DelayedAndKeyedMessagesAreNotHandedOff) {
  Create("q");
  ReceiveOptions o;
  o.max_messages = 10;
  Poll delayed_poll;
  delayed_poll.Start(*engine_, o);
  SendEntry delayed{"later", {}, {}};
  delayed.delay = absl::Seconds(5);
  ASSERT_TRUE(engine_->Send("q", {delayed}).ok());
  EXPECT_FALSE(delayed_poll.done.HasBeenNotified());
  clock_.Advance(absl::Seconds(5));
  const std::vector<ReceivedMessage>& later = delayed_poll.Answer();
  ASSERT_THAT(later, SizeIs(1));
  EXPECT_EQ(later[0].body, "later");

  // A parked receive of ten gets one message of a key at a time.
  Poll keyed_poll;
  keyed_poll.Start(*engine_, o);
  SendEntry first{"k1", {}, {}};
  first.ordering_key = "k";
  SendEntry second{"k2", {}, {}};
  second.ordering_key = "k";
  ASSERT_TRUE(engine_->Send("q", {first, second}).ok());
  const std::vector<ReceivedMessage>& keyed = keyed_poll.Answer();
  ASSERT_THAT(keyed, SizeIs(1));
  EXPECT_EQ(keyed[0].body, "k1");
  EXPECT_THAT(Recv("q", 10), IsEmpty());
}

// Many senders and long polls at once, so that sends are handed off while
// others are in flight: every message reaches exactly one consumer, and
// every receipt deletes. The fake clock never moves, so no lease lapses.
TEST_F(EngineTest, ConcurrentSendsAndLongPollsDeliverEachMessageOnce) {
  Create("q");
  constexpr int kSenders = 4;
  constexpr int kPerSender = 250;
  constexpr int kConsumers = 4;
  absl::Mutex mu;
  std::vector<std::string> bodies;
  int bad_deletes = 0;
  std::vector<std::thread> consumers;
  for (int c = 0; c < kConsumers; ++c) {
    consumers.emplace_back([&] {
      for (;;) {
        Poll poll;
        poll.Start(*engine_, ReceiveOptions());
        poll.done.WaitForNotification();
        if (!poll.got.ok()) {
          ADD_FAILURE() << poll.got.status();
          return;
        }
        bool stop = false;
        for (const ReceivedMessage& m : *poll.got) {
          const bool deleted = DeleteOne("q", m.receipt_handle).ok();
          absl::MutexLock lock(&mu);
          if (!deleted) ++bad_deletes;
          if (m.body == "stop") {
            stop = true;
          } else {
            bodies.push_back(m.body);
          }
        }
        if (stop) return;
      }
    });
  }
  std::vector<std::thread> senders;
  for (int t = 0; t < kSenders; ++t) {
    senders.emplace_back([&, t] {
      for (int i = 0; i < kPerSender; ++i) {
        SendBodies("q", {absl::StrCat(t, "-", i)});
      }
    });
  }
  for (std::thread& t : senders) t.join();
  bool all_arrived;
  {
    absl::MutexLock lock(&mu);
    auto all = [&] { return bodies.size() >= kSenders * kPerSender; };
    all_arrived =
        mu.AwaitWithTimeout(absl::Condition(&all), absl::Seconds(120));
  }
  EXPECT_TRUE(all_arrived) << "not every message reached a consumer";
  // One "stop" for each consumer, which takes one message at a time (also
  // when some message went missing, so that the threads end either way).
  for (int c = 0; c < kConsumers; ++c) SendBodies("q", {"stop"});
  for (std::thread& t : consumers) t.join();
  absl::MutexLock lock(&mu);
  EXPECT_EQ(bad_deletes, 0);
  std::set<std::string> unique(bodies.begin(), bodies.end());
  EXPECT_EQ(bodies.size(), static_cast<size_t>(kSenders * kPerSender));
  EXPECT_EQ(unique.size(), static_cast<size_t>(kSenders * kPerSender));
  const QueueStats st = Stats("q");
  EXPECT_EQ(st.in_flight, 0u);
  EXPECT_EQ(st.ready, 0u);
  EXPECT_EQ(st.received_total, st.sent_total);
}

// Tests that hold one blocking write of the engine once RocksDB has it and
// before its effects are published (EngineOptions::
// after_blocking_write_for_test), while other calls go on.
class EngineWriteHoldTest : public EngineFixture {
 protected:
  void SetUp() override {
    after_blocking_write_ = [this] {
      if (hold_next_.exchange(false)) {
        held_.Notify();
        release_.WaitForNotification();
      }
    };
    EngineFixture::SetUp();
  }
  // The engine's hook refers to this fixture's members: closed before they
  // are destroyed.
  void TearDown() override { engine_.reset(); }

  // Holds the next blocking write until ReleaseHeld.
  void HoldNextWrite() { hold_next_ = true; }
  // Whether a write was held, waited for generously.
  bool WaitUntilHeld() {
    return held_.WaitForNotificationWithTimeout(absl::Seconds(60));
  }
  void ReleaseHeld() { release_.Notify(); }

 private:
  std::atomic<bool> hold_next_{false};
  absl::Notification held_;
  absl::Notification release_;
};

// A handoff waits for every offset below it to be published: a send whose
// write is done while an earlier send's is still in flight hands its
// message over only once the earlier one has finished.
TEST_F(EngineWriteHoldTest, HandoffWaitsForAnEarlierSendStillInFlight) {
  Create("q");
  Poll first;
  Poll second;
  first.Start(*engine_, ReceiveOptions());
  second.Start(*engine_, ReceiveOptions());
  const uint64_t before = engine_->GetStorageStats().writes;
  HoldNextWrite();
  // Offset 0, claimed by `first`; held after its write.
  std::thread earlier([&] { SendBodies("q", {"a"}); });
  const bool was_held = WaitUntilHeld();
  if (was_held) {
    // Offset 1, claimed by `second`: its write is done, but offset 0 is
    // not yet published, so `second` must not have it yet.
    SendBodies("q", {"b"});
    EXPECT_FALSE(second.done.HasBeenNotified());
    EXPECT_FALSE(first.done.HasBeenNotified());
  }
  ReleaseHeld();
  earlier.join();
  ASSERT_TRUE(was_held);
  const std::vector<ReceivedMessage>& a = first.Answer();
  const std::vector<ReceivedMessage>& b = second.Answer();
  ASSERT_THAT(a, SizeIs(1));
  ASSERT_THAT(b, SizeIs(1));
  EXPECT_EQ(a[0].body, "a");
  EXPECT_EQ(a[0].offset, 0u);
  EXPECT_EQ(b[0].body, "b");
  EXPECT_EQ(b[0].offset, 1u);
  EXPECT_EQ(engine_->GetStorageStats().writes, before + 2);
  EXPECT_TRUE(DeleteOne("q", b[0].receipt_handle).ok());
  EXPECT_TRUE(DeleteOne("q", a[0].receipt_handle).ok());
  EXPECT_EQ(Stats("q").in_flight, 0u);
}

// A long poll cancelled after a send claimed it, while the send's write is
// still going: the send's write leased the message to it, so the poll ends
// CANCELLED and the message is released for others at once.
TEST_F(EngineWriteHoldTest,
       LongPollCancelledDuringItsHandoffReleasesTheMessage) {
  Create("q");
  absl::Notification done;
  absl::Status status;
  ReceiveOptions o;
  o.visibility_timeout = absl::Hours(1);
  std::shared_ptr<ReceiveWaiter> waiter =
      engine_->ReceiveAsync("q", o, absl::Seconds(20), [&](auto r) {
        status = r.status();
        done.Notify();
      });
  ASSERT_NE(waiter, nullptr);
  HoldNextWrite();
  std::thread sender([&] { SendBodies("q", {"m"}); });
  const bool was_held = WaitUntilHeld();
  waiter->Cancel();
  // Claimed by the send: the cancel waits for the handoff.
  EXPECT_FALSE(done.HasBeenNotified());
  ReleaseHeld();
  sender.join();
  ASSERT_TRUE(was_held);
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(60)));
  EXPECT_EQ(status.code(), absl::StatusCode::kCancelled);
  std::vector<ReceivedMessage> again = Recv("q");
  ASSERT_THAT(again, SizeIs(1));
  EXPECT_EQ(again[0].body, "m");
  EXPECT_EQ(again[0].receive_count, 2u);  // The handoff's lease counted.
}

TEST_F(EngineTest, LongPollWakesOnLapsedLease) {
  Create("q");
  SendBodies("q", {"m"});
  Recv("q", 1, absl::Seconds(5));
  absl::Notification done;
  absl::StatusOr<std::vector<ReceivedMessage>> got;
  engine_->ReceiveAsync("q", ReceiveOptions(), absl::Seconds(20), [&](auto r) {
    got = std::move(r);
    done.Notify();
  });
  clock_.Advance(absl::Seconds(5));
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(60)));
  ASSERT_TRUE(got.ok());
  ASSERT_THAT(*got, SizeIs(1));
  EXPECT_EQ((*got)[0].receive_count, 2u);
}

TEST_F(EngineTest, LongPollEndsEmptyWhenTheWaitIsOver) {
  Create("q");
  absl::Notification done;
  absl::StatusOr<std::vector<ReceivedMessage>> got;
  engine_->ReceiveAsync("q", ReceiveOptions(), absl::Seconds(3), [&](auto r) {
    got = std::move(r);
    done.Notify();
  });
  clock_.Advance(absl::Seconds(3));
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(60)));
  ASSERT_TRUE(got.ok());
  EXPECT_THAT(*got, IsEmpty());
}

// ReceiveAsync hands its leases' write to the storage's commit thread and
// answers from there: what it handed out is still leased after a restart.
TEST_F(EngineTest, LongPollLeasesSurviveAReopen) {
  Create("q");
  SendBodies("q", {"a", "b"});
  absl::Notification done;
  absl::StatusOr<std::vector<ReceivedMessage>> got;
  ReceiveOptions o;
  o.max_messages = 10;
  engine_->ReceiveAsync("q", o, absl::ZeroDuration(), [&](auto r) {
    got = std::move(r);
    done.Notify();
  });
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(60)));
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_THAT(*got, SizeIs(2));
  Reopen();
  EXPECT_EQ(Stats("q").in_flight, 2u);
  EXPECT_THAT(Recv("q"), IsEmpty());
  clock_.Advance(QueueConfig().visibility_timeout);
  auto again = Recv("q", 10);
  ASSERT_THAT(again, SizeIs(2));
  EXPECT_EQ(again[0].receive_count, 2u);
}

// A pass that only moves a message to the dead-letter queue finds nothing
// to deliver, but frees the next message of its ordering key: the long poll
// looks again and delivers it, even with no time left to wait.
TEST_F(EngineTest, LongPollDeliversWhatADeadLetterFreed) {
  Create("dlq");
  QueueConfig c;
  c.max_receives = 1;
  c.dead_letter_queue = "dlq";
  Create("q", c);
  SendEntry poison{"poison", {}, {}, "k", ""};
  SendEntry next{"next", {}, {}, "k", ""};
  ASSERT_TRUE(engine_->Send("q", {poison, next}).ok());
  ASSERT_THAT(Recv("q", 10, absl::Seconds(10)), SizeIs(1));
  clock_.Advance(absl::Seconds(10));

  absl::Notification done;
  absl::StatusOr<std::vector<ReceivedMessage>> got;
  engine_->ReceiveAsync("q", ReceiveOptions(), absl::ZeroDuration(),
                        [&](auto r) {
                          got = std::move(r);
                          done.Notify();
                        });
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(60)));
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_THAT(*got, SizeIs(1));
  EXPECT_EQ((*got)[0].body, "next");
  auto dead = Recv("dlq", 10);
  ASSERT_THAT(dead, SizeIs(1));
  EXPECT_EQ(dead[0].body, "poison");
}

TEST_F(EngineTest, CancelledLongPollTakesNothing) {
  Create("q");
  absl::Notification done;
  absl::Status status;
  auto waiter = engine_->ReceiveAsync("q", ReceiveOptions(), absl::Seconds(20),
                                      [&](auto r) {
                                        status = r.status();
                                        done.Notify();
                                      });
  ASSERT_NE(waiter, nullptr);
  waiter->Cancel();
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(60)));
  EXPECT_EQ(status.code(), absl::StatusCode::kCancelled);
  SendBodies("q", {"m"});
  EXPECT_THAT(Recv("q"), SizeIs(1));
}

TEST_F(EngineTest, ManyWaitersEachGetADistinctMessage) {
  Create("q");
  constexpr int kWaiters = 50;
  std::atomic<int> finished{0};
  std::vector<std::string> bodies(kWaiters);
  absl::Mutex mu;
  std::multiset<uint64_t> offsets;
  absl::Notification all;
  for (int i = 0; i < kWaiters; ++i) {
    engine_->ReceiveAsync("q", ReceiveOptions(), absl::Seconds(20),
                          [&](auto r) {
                            ASSERT_TRUE(r.ok());
                            {
                              absl::MutexLock l(&mu);
                              for (auto& m : *r) offsets.insert(m.offset);
                            }
                            if (++finished == kWaiters) all.Notify();
                          });
  }
  for (int i = 0; i < kWaiters; ++i) SendBodies("q", {std::to_string(i)});
  ASSERT_TRUE(all.WaitForNotificationWithTimeout(absl::Seconds(60)));
  absl::MutexLock l(&mu);
  EXPECT_EQ(offsets.size(), static_cast<size_t>(kWaiters));
  EXPECT_EQ(std::set<uint64_t>(offsets.begin(), offsets.end()).size(),
            static_cast<size_t>(kWaiters));
}

TEST_F(EngineTest, DeletingQueueEndsItsLongPolls) {
  Create("q");
  absl::Notification done;
  absl::Status status;
  engine_->ReceiveAsync("q", ReceiveOptions(), absl::Seconds(20), [&](auto r) {
    status = r.status();
    done.Notify();
  });
  ASSERT_TRUE(engine_->DeleteQueue("q").ok());
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(60)));
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
}

TEST_F(EngineTest, SyncDurabilityWorksWithConcurrentSenders) {
  engine_.reset();
  EngineOptions options;
  options.clock = &clock_;
  options.durability = Durability::kSync;
  auto e = Engine::Open(options, dir_);
  ASSERT_TRUE(e.ok());
  engine_ = std::move(*e);
  Create("q");
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 50; ++i) {
        ASSERT_TRUE(engine_->Send("q", {SendEntry{"x", {}, {}}}).ok());
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(Stats("q").sent_total, 400u);
  EXPECT_EQ(Stats("q").ready, 400u);
}

// --- DeleteAndReceiveAsync. ---

// One DeleteAndReceiveAsync call and its answer.
struct DeleteAndPoll {
  absl::Notification done;
  absl::StatusOr<DeleteAndReceiveResult> got;
  std::shared_ptr<ReceiveWaiter> waiter;

  void Start(Engine& engine, const std::vector<std::string>& receipts,
             const ReceiveOptions& o = ReceiveOptions(),
             absl::Duration wait = absl::ZeroDuration(),
             const std::string& queue = "q") {
    waiter =
        engine.DeleteAndReceiveAsync(queue, receipts, o, wait, [this](auto r) {
          got = std::move(r);
          done.Notify();
        });
  }
  // The call's outcome, waited for generously.
  absl::Status Wait() {
    if (!done.WaitForNotificationWithTimeout(absl::Seconds(60))) {
      return absl::DeadlineExceededError("no answer within 60 s");
    }
    return got.status();
  }
};

std::vector<std::string> Receipts(const std::vector<ReceivedMessage>& m) {
  std::vector<std::string> out;
  for (const ReceivedMessage& r : m) out.push_back(r.receipt_handle);
  return out;
}

TEST_F(EngineTest, DeleteAndReceiveDeletesTheLastBatchAndLeasesTheNext) {
  Create("q");
  SendBodies("q", {"a", "b", "c", "d"});
  const std::vector<ReceivedMessage> first = Recv("q", 2);
  ASSERT_THAT(first, SizeIs(2));
  DeleteAndPoll call;
  ReceiveOptions o;
  o.max_messages = 10;
  o.visibility_timeout = absl::Seconds(40);
  call.Start(*engine_, Receipts(first), o);
  ASSERT_TRUE(call.Wait().ok()) << call.got.status();
  EXPECT_THAT(call.got->deletes,
              ElementsAre(absl::OkStatus(), absl::OkStatus()));
  ASSERT_THAT(call.got->messages, SizeIs(2));
  EXPECT_EQ(call.got->messages[0].body, "c");
  EXPECT_EQ(call.got->messages[1].body, "d");
  EXPECT_EQ(call.got->messages[0].lease_deadline,
            clock_.Now() + absl::Seconds(40));
  QueueStats s = Stats("q");
  EXPECT_EQ(s.deleted_total, 2u);
  EXPECT_EQ(s.in_flight, 2u);
  EXPECT_EQ(s.ready, 0u);
  // What was deleted never comes back; what was leased does, once lapsed.
  clock_.Advance(absl::Minutes(5));
  const std::vector<ReceivedMessage> again = Recv("q", 10);
  ASSERT_THAT(again, SizeIs(2));
  EXPECT_EQ(again[0].body, "c");
  EXPECT_EQ(again[1].body, "d");
}

// Each receipt gets its own outcome, as from Delete, and the receive goes
// ahead whatever they are.
TEST_F(EngineTest, DeleteAndReceiveAnswersEachReceipt) {
  Create("q");
  SendBodies("q", {"a", "b", "c"});
  const std::vector<ReceivedMessage> a = Recv("q", 1, absl::Seconds(5));
  ASSERT_THAT(a, SizeIs(1));
  clock_.Advance(absl::Seconds(5));
  // `a` lapsed and is leased again: its first receipt is stale.
  const std::vector<ReceivedMessage> a2 = Recv("q", 1);
  ASSERT_THAT(a2, SizeIs(1));
  ASSERT_EQ(a2[0].offset, a[0].offset);
  const std::vector<ReceivedMessage> b = Recv("q", 1);
  ASSERT_THAT(b, SizeIs(1));
  DeleteAndPoll call;
  call.Start(*engine_, {a[0].receipt_handle, "not a receipt",
                        b[0].receipt_handle, b[0].receipt_handle});
  ASSERT_TRUE(call.Wait().ok()) << call.got.status();
  ASSERT_THAT(call.got->deletes, SizeIs(4));
  EXPECT_EQ(call.got->deletes[0].code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(call.got->deletes[1].code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(call.got->deletes[2].ok());
  EXPECT_TRUE(call.got->deletes[3].ok());
  ASSERT_THAT(call.got->messages, SizeIs(1));
  EXPECT_EQ(call.got->messages[0].body, "c");
  QueueStats s = Stats("q");
  EXPECT_EQ(s.deleted_total, 1u);
  EXPECT_EQ(s.in_flight, 2u);  // a (second lease) and c.
}

TEST_F(EngineTest, DeleteAndReceiveWithNoReceiptsIsAReceive) {
  Create("q");
  SendBodies("q", {"a"});
  DeleteAndPoll call;
  call.Start(*engine_, {});
  ASSERT_TRUE(call.Wait().ok()) << call.got.status();
  EXPECT_THAT(call.got->deletes, IsEmpty());
  ASSERT_THAT(call.got->messages, SizeIs(1));
  EXPECT_EQ(call.got->messages[0].body, "a");
}

// A call refused for its receive options (or its size) deletes nothing.
TEST_F(EngineTest, DeleteAndReceiveRefusedUpFrontDeletesNothing) {
  Create("q");
  SendBodies("q", {"a", "b"});
  const std::vector<ReceivedMessage> a = Recv("q", 1);
  ASSERT_THAT(a, SizeIs(1));
  const std::vector<std::string> receipts = Receipts(a);
  struct Case {
    const char* what;
    std::string queue = "q";
    ReceiveOptions options;
    absl::Duration wait = absl::ZeroDuration();
    size_t copies = 1;
    absl::StatusCode code;
  };
  std::vector<Case> cases(7);
  cases[0].what = "max_messages 0";
  cases[0].options.max_messages = 0;
  cases[0].code = absl::StatusCode::kInvalidArgument;
  cases[1].what = "max_messages 1001";
  cases[1].options.max_messages = 1001;
  cases[1].code = absl::StatusCode::kInvalidArgument;
  cases[2].what = "negative visibility timeout";
  cases[2].options.visibility_timeout = absl::Seconds(-1);
  cases[2].code = absl::StatusCode::kInvalidArgument;
  cases[3].what = "unknown group";
  cases[3].options.group = "nobody";
  cases[3].code = absl::StatusCode::kNotFound;
  cases[4].what = "wait over 20 s";
  cases[4].wait = absl::Seconds(21);
  cases[4].code = absl::StatusCode::kInvalidArgument;
  cases[5].what = "1001 receipts";
  cases[5].copies = 1001;
  cases[5].code = absl::StatusCode::kInvalidArgument;
  cases[6].what = "unknown queue";
  cases[6].queue = "nope";
  cases[6].code = absl::StatusCode::kNotFound;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    std::vector<std::string> many;
    for (size_t i = 0; i < c.copies; ++i) many.push_back(receipts[0]);
    DeleteAndPoll call;
    call.Start(*engine_, many, c.options, c.wait, c.queue);
    EXPECT_EQ(call.Wait().code(), c.code) << call.got.status();
    EXPECT_EQ(call.waiter, nullptr);
    QueueStats s = Stats("q");
    EXPECT_EQ(s.deleted_total, 0u);
    EXPECT_EQ(s.in_flight, 1u);
    EXPECT_EQ(s.ready, 1u);
  }
  EXPECT_TRUE(DeleteOne("q", receipts[0]).ok());
}

// Long polls that delete the only message first, so that nothing is ready.
class DeleteAndLongPollTest : public EngineFixture {
 protected:
  // Creates "q" with one message, leases it, and starts `call` deleting it
  // and waiting up to 20 s for the next.
  void StartOnTheOnlyMessage(DeleteAndPoll& call) {
    Create("q");
    SendBodies("q", {"a"});
    const std::vector<ReceivedMessage> a = Recv("q", 1);
    ASSERT_THAT(a, SizeIs(1));
    call.Start(*engine_, Receipts(a), ReceiveOptions(), absl::Seconds(20));
  }
};

// With nothing ready the call long-polls; a send ends the wait, and the
// deletes are answered with it.
TEST_F(DeleteAndLongPollTest, ASendEndsTheWait) {
  DeleteAndPoll call;
  ASSERT_NO_FATAL_FAILURE(StartOnTheOnlyMessage(call));
  // The fake clock never moves: only the send can end the wait.
  SendBodies("q", {"b"});
  ASSERT_TRUE(call.Wait().ok()) << call.got.status();
  EXPECT_THAT(call.got->deletes, ElementsAre(absl::OkStatus()));
  ASSERT_THAT(call.got->messages, SizeIs(1));
  EXPECT_EQ(call.got->messages[0].body, "b");
  EXPECT_EQ(Stats("q").deleted_total, 1u);
}

// Cancelling ends the call with CANCELLED; the deletes stay applied and
// nothing stays leased to the call.
TEST_F(DeleteAndLongPollTest, CancellingKeepsTheDeletesAndLeasesNothing) {
  DeleteAndPoll call;
  ASSERT_NO_FATAL_FAILURE(StartOnTheOnlyMessage(call));
  ASSERT_NE(call.waiter, nullptr);
  call.waiter->Cancel();
  EXPECT_EQ(call.Wait().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(Stats("q").deleted_total, 1u);
  SendBodies("q", {"b"});
  const std::vector<ReceivedMessage> b = Recv("q", 10);
  ASSERT_THAT(b, SizeIs(1));
  EXPECT_EQ(b[0].body, "b");
}

TEST_F(DeleteAndLongPollTest, DeletingTheQueueEndsTheWait) {
  DeleteAndPoll call;
  ASSERT_NO_FATAL_FAILURE(StartOnTheOnlyMessage(call));
  // Whether the deletes' write is still in flight or not, deleting the
  // queue ends the call.
  ASSERT_TRUE(engine_->DeleteQueue("q").ok());
  const absl::StatusCode code = call.Wait().code();
  EXPECT_TRUE(code == absl::StatusCode::kNotFound ||
              code == absl::StatusCode::kUnavailable)
      << call.got.status();
}

// The deletes are as durable as Delete's: a reopened engine still has them.
TEST_F(EngineTest, DeleteAndReceiveDeletesSurviveAReopen) {
  Create("q");
  SendBodies("q", {"a", "b"});
  const std::vector<ReceivedMessage> a = Recv("q", 1, absl::Seconds(5));
  ASSERT_THAT(a, SizeIs(1));
  DeleteAndPoll call;
  call.Start(*engine_, Receipts(a), ReceiveOptions());
  ASSERT_TRUE(call.Wait().ok()) << call.got.status();
  ASSERT_THAT(call.got->messages, SizeIs(1));
  Reopen();
  clock_.Advance(absl::Minutes(1));
  const std::vector<ReceivedMessage> left = Recv("q", 10);
  ASSERT_THAT(left, SizeIs(1));
  EXPECT_EQ(left[0].body, "b");
  EXPECT_EQ(left[0].receive_count, 2u);
}

// --- SendAsync. ---

class SendAsyncTest : public EngineFixture {
 protected:
  absl::StatusOr<std::vector<uint64_t>> SendAndWait(
      const std::string& q, std::vector<SendEntry> entries) {
    absl::Notification done;
    absl::StatusOr<std::vector<uint64_t>> result;
    engine_->SendAsync(q, entries,
                       [&](absl::StatusOr<std::vector<uint64_t>> r) {
                         result = std::move(r);
                         done.Notify();
                       });
    EXPECT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(60)));
    return result;
  }
};

TEST_F(SendAsyncTest, ConcurrentSendsAreCommittedTogetherWithDistinctOffsets) {
  Create("q");
  constexpr int kSends = 2000;
  absl::Mutex mu;
  std::vector<uint64_t> offsets;
  int done = 0;
  for (int i = 0; i < kSends; ++i) {
    engine_->SendAsync("q", {SendEntry{absl::StrCat("m", i), {}, {}}},
                       [&](absl::StatusOr<std::vector<uint64_t>> r) {
                         absl::MutexLock lock(&mu);
                         EXPECT_TRUE(r.ok()) << r.status();
                         if (r.ok())
                           offsets.insert(offsets.end(), r->begin(), r->end());
                         ++done;
                       });
  }
  {
    absl::MutexLock lock(&mu);
    auto all = [&] { return done == kSends; };
    ASSERT_TRUE(mu.AwaitWithTimeout(absl::Condition(&all), absl::Seconds(60)));
  }
  std::sort(offsets.begin(), offsets.end());
  ASSERT_EQ(offsets.size(), static_cast<size_t>(kSends));
  for (int i = 0; i < kSends; ++i) EXPECT_EQ(offsets[i], i);
  // Each offset holds the body it was sent with, also after a restart.
  Reopen();
  ReadOptions o;
  o.max_messages = 1000;
  std::set<std::string> bodies;
  uint64_t next = 0;
  while (next < kSends) {
    o.from = LogPosition::Offset(next);
    auto r = engine_->Read("q", o);
    ASSERT_TRUE(r.ok()) << r.status();
    for (const StoredMessage& m : r->messages) bodies.insert(m.body);
    next = r->next_offset;
  }
  EXPECT_EQ(bodies.size(), static_cast<size_t>(kSends));
  EXPECT_EQ(Stats("q").ready, static_cast<uint64_t>(kSends));
}

TEST_F(SendAsyncTest, AnswersLikeSend) {
  Create("q");
  EXPECT_EQ(SendAndWait("nope", {SendEntry{"x", {}, {}}}).status().code(),
            absl::StatusCode::kNotFound);
  SendEntry too_late{"x", {}, {}};
  too_late.delay = absl::Hours(1);
  EXPECT_EQ(SendAndWait("q", {too_late}).status().code(),
            absl::StatusCode::kInvalidArgument);
  SendEntry once{"first", {}, {}};
  once.dedup_id = "id";
  auto first = SendAndWait("q", {once, SendEntry{"other", {}, {}}});
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_THAT(*first, ElementsAre(0, 1));
  once.body = "again";
  auto again = SendAndWait("q", {once});
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_THAT(*again, ElementsAre(0));
  EXPECT_EQ(Stats("q").sent_total, 2u);
}

TEST_F(SendAsyncTest, ConcurrentDuplicatesGetTheFirstOffset) {
  Create("q");
  constexpr int kSends = 200;
  absl::Mutex mu;
  std::set<uint64_t> offsets;
  int done = 0;
  for (int i = 0; i < kSends; ++i) {
    SendEntry e{absl::StrCat("m", i), {}, {}};
    e.dedup_id = "same";
    engine_->SendAsync("q", {e}, [&](absl::StatusOr<std::vector<uint64_t>> r) {
      absl::MutexLock lock(&mu);
      EXPECT_TRUE(r.ok()) << r.status();
      if (r.ok()) offsets.insert(r->begin(), r->end());
      ++done;
    });
  }
  absl::MutexLock lock(&mu);
  auto all = [&] { return done == kSends; };
  ASSERT_TRUE(mu.AwaitWithTimeout(absl::Condition(&all), absl::Seconds(60)));
  EXPECT_THAT(offsets, ElementsAre(0));
  EXPECT_EQ(Stats("q").sent_total, 1u);
}

}  // namespace
}  // namespace weir
