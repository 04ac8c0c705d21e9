// Delivery policies: dead-letter queues and redrive, delayed messages and
// retry with back-off, ordering keys, deduplication.
#include <algorithm>
#include <cstdlib>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "engine/engine.h"
#include "engine/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace weir {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::Pair;
using ::testing::SizeIs;
using ::testing::UnorderedElementsAre;

std::map<std::string, std::string> AttrMap(const Attributes& a) {
  return std::map<std::string, std::string>(a.begin(), a.end());
}

class PoliciesTest : public EngineFixture {
 protected:
  absl::StatusOr<std::vector<uint64_t>> SendOne(const std::string& q,
                                                SendEntry e) {
    return engine_->Send(q, {std::move(e)});
  }

  SendEntry Keyed(const std::string& body, const std::string& key) {
    SendEntry e;
    e.body = body;
    e.ordering_key = key;
    return e;
  }

  std::vector<std::string> Bodies(const std::vector<ReceivedMessage>& ms) {
    std::vector<std::string> out;
    for (const auto& m : ms) out.push_back(m.body);
    return out;
  }

  void CreateWithDlq(const std::string& q, const std::string& dlq,
                     int max_receives) {
    Create(dlq);
    QueueConfig c;
    c.max_receives = max_receives;
    c.dead_letter_queue = dlq;
    Create(q, c);
  }

  // Receives one message and lets its 10 s lease lapse.
  std::vector<ReceivedMessage> ReceiveAndLapse(const std::string& q,
                                               const std::string& group = "") {
    auto got = Recv(q, 10, absl::Seconds(10), group);
    clock_.Advance(absl::Seconds(10));
    return got;
  }
};

// --- Dead-letter queues. ---

TEST_F(PoliciesTest, PoisonMessageGoesToDlqAfterExactlyMaxReceives) {
  CreateWithDlq("orders", "orders-dlq", 3);
  SendOne("orders", SendEntry{"poison", {{"k", "v"}}, {}});
  for (uint32_t i = 1; i <= 3; ++i) {
    auto got = ReceiveAndLapse("orders");
    ASSERT_THAT(got, SizeIs(1)) << "delivery " << i;
    EXPECT_EQ(got[0].receive_count, i);
  }
  // The fourth delivery would exceed max_receives: it is dead-lettered.
  EXPECT_THAT(Recv("orders", 10), IsEmpty());
  QueueStats src = Stats("orders");
  EXPECT_EQ(src.ready, 0u);
  EXPECT_EQ(src.in_flight, 0u);

  auto dead = Recv("orders-dlq", 10);
  ASSERT_THAT(dead, SizeIs(1));
  EXPECT_EQ(dead[0].body, "poison");
  EXPECT_EQ(dead[0].receive_count, 1u);
  EXPECT_THAT(
      AttrMap(dead[0].attributes),
      UnorderedElementsAre(Pair("k", "v"), Pair("weir.source_queue", "orders"),
                           Pair("weir.source_offset", "0"),
                           Pair("weir.source_group", ""),
                           Pair("weir.receive_count", "3")));
}

TEST_F(PoliciesTest, RestartBetweenDeliveriesDoesNotResetReceiveCount) {
  CreateWithDlq("orders", "orders-dlq", 2);
  SendBodies("orders", {"poison", "fine"});
  auto first = ReceiveAndLapse("orders");
  ASSERT_THAT(first, SizeIs(2));
  Reopen();
  auto second = ReceiveAndLapse("orders");
  ASSERT_THAT(second, SizeIs(2));
  EXPECT_EQ(second[0].receive_count, 2u);
  // "fine" is processed this time; "poison" is not.
  ASSERT_TRUE(DeleteOne("orders", second[1].receipt_handle).ok());
  Reopen();
  EXPECT_THAT(Recv("orders", 10), IsEmpty());
  auto dead = Recv("orders-dlq", 10);
  ASSERT_THAT(dead, SizeIs(1));
  EXPECT_EQ(dead[0].body, "poison");
  EXPECT_EQ(AttrMap(dead[0].attributes)["weir.receive_count"], "2");
  // Across a restart too, the message is in exactly one of the two queues.
  Reopen();
  EXPECT_THAT(Recv("orders", 10), IsEmpty());
  EXPECT_EQ(Stats("orders-dlq").sent_total, 1u);
}

TEST_F(PoliciesTest, DeadLetteringIsPerGroup) {
  CreateWithDlq("events", "events-dlq", 1);
  ASSERT_TRUE(
      engine_->CreateGroup("events", "audit", LogPosition::Earliest()).ok());
  SendBodies("events", {"e"});
  // The default group processes it; the audit group keeps failing.
  auto got = Recv("events");
  ASSERT_THAT(got, SizeIs(1));
  ASSERT_TRUE(DeleteOne("events", got[0].receipt_handle).ok());
  ASSERT_THAT(ReceiveAndLapse("events", "audit"), SizeIs(1));
  EXPECT_THAT(Recv("events", 1, absl::Seconds(10), "audit"), IsEmpty());
  auto dead = Recv("events-dlq", 10);
  ASSERT_THAT(dead, SizeIs(1));
  EXPECT_EQ(AttrMap(dead[0].attributes)["weir.source_group"], "audit");
}

TEST_F(PoliciesTest, RedriveMovesMessagesBackToTheirSource) {
  CreateWithDlq("orders", "orders-dlq", 1);
  SendOne("orders", Keyed("a", "customer-7"));
  SendOne("orders", SendEntry{"b", {{"trace", "t1"}}, {}});
  ASSERT_THAT(ReceiveAndLapse("orders"), SizeIs(2));
  EXPECT_THAT(Recv("orders", 10), IsEmpty());
  EXPECT_EQ(Stats("orders-dlq").ready, 2u);

  auto moved = engine_->Redrive("orders-dlq", "", 100);
  ASSERT_TRUE(moved.ok()) << moved.status();
  EXPECT_EQ(*moved, 2u);
  EXPECT_EQ(Stats("orders-dlq").ready, 0u);
  EXPECT_THAT(Recv("orders-dlq", 10), IsEmpty());

  auto back = Recv("orders", 10);
  ASSERT_THAT(back, SizeIs(2));
  std::map<std::string, ReceivedMessage> by_body;
  for (auto& m : back) by_body[m.body] = m;
  EXPECT_EQ(by_body["a"].ordering_key, "customer-7");
  EXPECT_THAT(AttrMap(by_body["a"].attributes), IsEmpty());
  EXPECT_THAT(AttrMap(by_body["b"].attributes),
              UnorderedElementsAre(Pair("trace", "t1")));
  // They are new messages: new offsets, counted from the first receive.
  EXPECT_GE(by_body["a"].offset, 2u);
  EXPECT_EQ(by_body["a"].receive_count, 1u);
}

// Dead letters from A into D and a redrive from D into A each hold a write
// on one queue while appending to the other; exclusive changes (group
// creation and deletion) on both queues wait for writes in flight. None of
// this may wait in a circle.
TEST_F(PoliciesTest, DeadLettersRedrivesAndGroupChangesNeverDeadlock) {
  CreateWithDlq("a", "d", 1);
  constexpr int kRounds = 2000;
  absl::Mutex mu;
  int finished = 0;
  auto run = [&](std::function<void(int)> step) {
    return std::thread([&, step] {
      for (int i = 0; i < kRounds; ++i) step(i);
      absl::MutexLock lock(&mu);
      ++finished;
    });
  };
  std::vector<std::thread> threads;
  threads.push_back(run([&](int) {
    ASSERT_TRUE(engine_->Send("a", {SendEntry{"m", {}, {}}}).ok());
    ReceiveOptions o;
    o.max_messages = 10;
    o.visibility_timeout = absl::ZeroDuration();  // Lapses at once.
    ASSERT_TRUE(engine_->Receive("a", o).ok());
    ASSERT_TRUE(engine_->Receive("a", o).ok());  // Dead-letters into d.
  }));
  threads.push_back(
      run([&](int) { ASSERT_TRUE(engine_->Redrive("d", "", 100).ok()); }));
  for (const char* q : {"a", "d"}) {
    threads.push_back(run([&, q](int i) {
      const std::string g = absl::StrCat("g", i);
      ASSERT_TRUE(engine_->CreateGroup(q, g, LogPosition::Latest()).ok());
      ASSERT_TRUE(engine_->DeleteGroup(q, g).ok());
    }));
  }
  {
    absl::MutexLock lock(&mu);
    const bool done =
        mu.AwaitWithTimeout(absl::Condition(
                                +[](int* n) { return *n == 4; }, &finished),
                            absl::Seconds(120));
    if (!done) {
      ADD_FAILURE() << "deadlocked: " << finished << " of 4 threads finished";
      std::abort();
    }
  }
  for (std::thread& t : threads) t.join();
  // Every message is in exactly one of the two queues.
  EXPECT_EQ(Stats("a").ready + Stats("d").ready, kRounds);
}

TEST_F(PoliciesTest, RedriveToAnotherQueueRespectsMaxMessages) {
  CreateWithDlq("orders", "orders-dlq", 1);
  Create("replay");
  SendBodies("orders", {"a", "b", "c"});
  ReceiveAndLapse("orders");
  EXPECT_THAT(Recv("orders", 10), IsEmpty());
  auto moved = engine_->Redrive("orders-dlq", "replay", 2);
  ASSERT_TRUE(moved.ok()) << moved.status();
  EXPECT_EQ(*moved, 2u);
  EXPECT_THAT(Bodies(Recv("replay", 10)), ElementsAre("a", "b"));
  EXPECT_THAT(Bodies(Recv("orders-dlq", 10)), ElementsAre("c"));
}

TEST_F(PoliciesTest, RedriveRefusesBadInput) {
  CreateWithDlq("orders", "orders-dlq", 1);
  Create("plain");
  EXPECT_EQ(engine_->Redrive("plain", "", 10).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(engine_->Redrive("nope", "", 10).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(engine_->Redrive("orders-dlq", "nope", 10).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(engine_->Redrive("orders-dlq", "orders-dlq", 10).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine_->Redrive("orders-dlq", "", 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto none = engine_->Redrive("orders-dlq", "", 10);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(*none, 0u);
}

TEST_F(PoliciesTest, DeadLetterQueueConfigIsChecked) {
  Create("dlq");
  QueueConfig c;
  c.max_receives = 3;
  c.dead_letter_queue = "missing";
  EXPECT_EQ(engine_->CreateQueue("q", c).status().code(),
            absl::StatusCode::kInvalidArgument);
  c.dead_letter_queue = "q";
  EXPECT_EQ(engine_->CreateQueue("q", c).status().code(),
            absl::StatusCode::kInvalidArgument);
  c.dead_letter_queue = "";
  EXPECT_EQ(engine_->CreateQueue("q", c).status().code(),
            absl::StatusCode::kInvalidArgument);
  c.max_receives = 0;
  c.dead_letter_queue = "dlq";
  EXPECT_EQ(engine_->CreateQueue("q", c).status().code(),
            absl::StatusCode::kInvalidArgument);
  c.max_receives = -1;
  EXPECT_EQ(engine_->CreateQueue("q", c).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine_->GetQueue("q").status().code(),
            absl::StatusCode::kNotFound);

  c.max_receives = 5;
  ASSERT_TRUE(engine_->CreateQueue("q", c).ok());
  // The configuration survives a restart.
  Reopen();
  auto info = engine_->GetQueue("q");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->config.max_receives, 5);
  EXPECT_EQ(info->config.dead_letter_queue, "dlq");
  // A queue in use as a dead-letter queue cannot be deleted.
  EXPECT_EQ(engine_->DeleteQueue("dlq").code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(engine_->GetQueue("dlq").ok());
  ASSERT_TRUE(engine_->DeleteQueue("q").ok());
  EXPECT_TRUE(engine_->DeleteQueue("dlq").ok());
}

// --- Delay and retry with back-off. ---

TEST_F(PoliciesTest, DelayedMessageIsReceivedRightAtItsTime) {
  Create("q");
  SendEntry e;
  e.body = "later";
  e.delay = absl::Seconds(10);
  ASSERT_TRUE(SendOne("q", e).ok());
  SendBodies("q", {"now"});
  EXPECT_THAT(Bodies(Recv("q", 10)), ElementsAre("now"));
  EXPECT_EQ(Stats("q").delayed, 1u);
  clock_.Advance(absl::Seconds(10) - absl::Milliseconds(1));
  EXPECT_THAT(Recv("q", 10), IsEmpty());
  clock_.Advance(absl::Milliseconds(1));
  auto got = Recv("q", 10);
  EXPECT_THAT(Bodies(got), ElementsAre("later"));
  ASSERT_THAT(got, SizeIs(1));
  EXPECT_EQ(got[0].receive_count, 1u);
}

TEST_F(PoliciesTest, QueueDefaultDelayAndRestartKeepMessagesHidden) {
  QueueConfig c;
  c.delay = absl::Minutes(2);
  Create("q", c);
  SendBodies("q", {"a"});
  SendEntry now;
  now.body = "b";
  now.delay = absl::ZeroDuration();  // Overrides the queue's delay.
  ASSERT_TRUE(SendOne("q", now).ok());
  EXPECT_THAT(Bodies(Recv("q", 10, absl::Hours(1))), ElementsAre("b"));
  Reopen();
  clock_.Advance(absl::Minutes(1));
  EXPECT_THAT(Recv("q", 10), IsEmpty());
  Reopen();
  clock_.Advance(absl::Minutes(1));
  EXPECT_THAT(Bodies(Recv("q", 10)), ElementsAre("a"));
}

TEST_F(PoliciesTest, DelayOutOfRangeIsRefused) {
  Create("q");
  SendEntry e;
  e.body = "x";
  e.delay = absl::Milliseconds(-1);
  EXPECT_EQ(SendOne("q", e).status().code(),
            absl::StatusCode::kInvalidArgument);
  e.delay = absl::Minutes(15) + absl::Milliseconds(1);
  EXPECT_EQ(SendOne("q", e).status().code(),
            absl::StatusCode::kInvalidArgument);
  e.delay = absl::Minutes(15);
  EXPECT_TRUE(SendOne("q", e).ok());
  EXPECT_EQ(Stats("q").sent_total, 1u);
}

TEST_F(PoliciesTest, ManyDelayedMessagesDoNotHideAReadyOne) {
  Create("q");
  std::vector<SendEntry> delayed;
  for (int i = 0; i < 1000; ++i) {
    SendEntry e;
    e.body = absl::StrCat("d", i);
    e.delay = absl::Minutes(5);
    delayed.push_back(e);
  }
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(engine_->Send("q", delayed).ok());
  SendBodies("q", {"ready"});
  EXPECT_THAT(Bodies(Recv("q", 1)), ElementsAre("ready"));
  clock_.Advance(absl::Minutes(5));
  EXPECT_THAT(Recv("q", 1000), SizeIs(1000));
}

TEST_F(PoliciesTest, ChangeVisibilityAfterAFailureRetriesWithBackOff) {
  Create("q");
  SendBodies("q", {"job"});
  absl::Duration backoff = absl::Seconds(1);
  for (uint32_t attempt = 1; attempt <= 4; ++attempt) {
    auto got = Recv("q", 1, absl::Minutes(5));
    ASSERT_THAT(got, SizeIs(1)) << "attempt " << attempt;
    EXPECT_EQ(got[0].receive_count, attempt);
    // The handler failed: retry after an exponentially growing back-off.
    ASSERT_TRUE(ChangeOne("q", got[0].receipt_handle, backoff).ok());
    EXPECT_EQ(Stats("q").in_flight, 1u);
    clock_.Advance(backoff - absl::Milliseconds(1));
    EXPECT_THAT(Recv("q", 1), IsEmpty());
    clock_.Advance(absl::Milliseconds(1));
    backoff *= 2;
  }
  auto last = Recv("q", 1);
  ASSERT_THAT(last, SizeIs(1));
  EXPECT_TRUE(DeleteOne("q", last[0].receipt_handle).ok());
}

// --- Ordering keys. ---

TEST_F(PoliciesTest, SameKeyIsDeliveredInOrderOneAtATime) {
  Create("q");
  ASSERT_TRUE(SendOne("q", Keyed("a1", "a")).ok());
  ASSERT_TRUE(SendOne("q", Keyed("a2", "a")).ok());
  ASSERT_TRUE(SendOne("q", Keyed("b1", "b")).ok());
  SendBodies("q", {"free"});
  ASSERT_TRUE(SendOne("q", Keyed("a3", "a")).ok());
  auto got = Recv("q", 10);
  // Other keys and unkeyed messages are not held back by "a".
  EXPECT_THAT(Bodies(got), ElementsAre("a1", "b1", "free"));
  EXPECT_EQ(got[0].ordering_key, "a");
  EXPECT_THAT(Recv("q", 10), IsEmpty());
  ASSERT_TRUE(DeleteOne("q", got[0].receipt_handle).ok());
  auto next = Recv("q", 10);
  EXPECT_THAT(Bodies(next), ElementsAre("a2"));
  ASSERT_TRUE(DeleteOne("q", next[0].receipt_handle).ok());
  EXPECT_THAT(Bodies(Recv("q", 10)), ElementsAre("a3"));
}

TEST_F(PoliciesTest, LapsedKeyedLeaseRedeliversThatMessageFirst) {
  Create("q");
  ASSERT_TRUE(SendOne("q", Keyed("k1", "k")).ok());
  ASSERT_TRUE(SendOne("q", Keyed("k2", "k")).ok());
  auto first = Recv("q", 10, absl::Seconds(5));
  EXPECT_THAT(Bodies(first), ElementsAre("k1"));
  clock_.Advance(absl::Seconds(5));
  auto again = Recv("q", 10, absl::Seconds(5));
  ASSERT_THAT(Bodies(again), ElementsAre("k1"));
  EXPECT_EQ(again[0].receive_count, 2u);
  // Releasing it (a nack) also keeps its place.
  ASSERT_TRUE(
      ChangeOne("q", again[0].receipt_handle, absl::ZeroDuration()).ok());
  auto third = Recv("q", 10);
  ASSERT_THAT(Bodies(third), ElementsAre("k1"));
  ASSERT_TRUE(DeleteOne("q", third[0].receipt_handle).ok());
  EXPECT_THAT(Bodies(Recv("q", 10)), ElementsAre("k2"));
}

TEST_F(PoliciesTest, OrderingSurvivesRestart) {
  Create("q");
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(SendOne("q", Keyed(absl::StrCat("k", i), "k")).ok());
  }
  auto got = Recv("q", 10, absl::Minutes(1));
  ASSERT_THAT(Bodies(got), ElementsAre("k0"));
  ASSERT_TRUE(DeleteOne("q", got[0].receipt_handle).ok());
  got = Recv("q", 10, absl::Minutes(1));
  ASSERT_THAT(Bodies(got), ElementsAre("k1"));
  Reopen();
  // k1 is still leased: nothing of its key may go.
  EXPECT_THAT(Recv("q", 10), IsEmpty());
  clock_.Advance(absl::Minutes(1));
  got = Recv("q", 10);
  ASSERT_THAT(Bodies(got), ElementsAre("k1"));
  ASSERT_TRUE(DeleteOne("q", got[0].receipt_handle).ok());
  Reopen();
  for (int i = 2; i < 5; ++i) {
    got = Recv("q", 10);
    ASSERT_THAT(Bodies(got), ElementsAre(absl::StrCat("k", i)));
    ASSERT_TRUE(DeleteOne("q", got[0].receipt_handle).ok());
  }
}

TEST_F(PoliciesTest, DelayedMessageOfAKeyWaitsForItsTimeWhenItsTurnComes) {
  Create("q");
  ASSERT_TRUE(SendOne("q", Keyed("first", "k")).ok());
  SendEntry later = Keyed("second", "k");
  later.delay = absl::Seconds(30);
  ASSERT_TRUE(SendOne("q", later).ok());
  auto got = Recv("q", 10);
  ASSERT_THAT(Bodies(got), ElementsAre("first"));
  ASSERT_TRUE(DeleteOne("q", got[0].receipt_handle).ok());
  EXPECT_THAT(Recv("q", 10), IsEmpty());
  Reopen();
  EXPECT_THAT(Recv("q", 10), IsEmpty());
  clock_.Advance(absl::Seconds(30));
  EXPECT_THAT(Bodies(Recv("q", 10)), ElementsAre("second"));
}

TEST_F(PoliciesTest, DeadLetteredKeyedMessageLetsTheNextOneGo) {
  CreateWithDlq("q", "dlq", 1);
  ASSERT_TRUE(SendOne("q", Keyed("bad", "k")).ok());
  ASSERT_TRUE(SendOne("q", Keyed("good", "k")).ok());
  ASSERT_THAT(Bodies(ReceiveAndLapse("q")), ElementsAre("bad"));
  EXPECT_THAT(Bodies(Recv("q", 10)), ElementsAre("good"));
  auto dead = Recv("dlq", 10);
  ASSERT_THAT(dead, SizeIs(1));
  EXPECT_EQ(AttrMap(dead[0].attributes)["weir.ordering_key"], "k");
}

// 20 keys x 500 messages, 8 concurrent consumers that sometimes release a
// message instead of processing it (as when a lease lapses): every key's
// messages are processed in offset order, exactly once, and keys progress
// side by side.
TEST_F(PoliciesTest, ConcurrentConsumersKeepEveryKeyInOrder) {
  Create("q");
  constexpr int kKeys = 20;
  constexpr int kPerKey = 500;
  std::vector<SendEntry> batch;
  for (int i = 0; i < kPerKey; ++i) {
    for (int k = 0; k < kKeys; ++k) {
      batch.push_back(Keyed(absl::StrCat(k, ":", i), absl::StrCat("key", k)));
      if (batch.size() == 1000) {
        ASSERT_TRUE(engine_->Send("q", batch).ok());
        batch.clear();
      }
    }
  }
  absl::Mutex mu;
  std::map<std::string, std::vector<uint64_t>> processed;  // key -> offsets
  std::set<uint64_t> leased;
  int max_keys_in_flight = 0;
  bool overlap = false;
  std::vector<std::thread> consumers;
  for (int t = 0; t < 8; ++t) {
    consumers.emplace_back([&, t] {
      uint64_t n = 0;
      for (;;) {
        ReceiveOptions o;
        o.max_messages = 5;
        o.visibility_timeout = absl::Hours(1);
        auto got = engine_->Receive("q", o);
        ASSERT_TRUE(got.ok()) << got.status();
        if (got->empty()) {
          absl::MutexLock lock(&mu);
          int done = 0;
          for (auto& [k, v] : processed) done += v.size();
          if (done == kKeys * kPerKey) return;
          continue;
        }
        {
          absl::MutexLock lock(&mu);
          std::set<std::string> keys;
          for (auto& m : *got) {
            overlap |= !leased.insert(m.offset).second;
            keys.insert(m.ordering_key);
          }
          max_keys_in_flight =
              std::max(max_keys_in_flight, static_cast<int>(keys.size()));
        }
        for (auto& m : *got) {
          if (++n % 7 == static_cast<uint64_t>(t)) {
            // Let it go: it must come back before anything after it.
            {
              absl::MutexLock lock(&mu);
              leased.erase(m.offset);
            }
            ASSERT_TRUE(engine_
                            ->ChangeVisibility(
                                "q", {VisibilityChange{m.receipt_handle,
                                                       absl::ZeroDuration()}})
                            .ok());
            continue;
          }
          {
            absl::MutexLock lock(&mu);
            processed[m.ordering_key].push_back(m.offset);
            leased.erase(m.offset);
          }
          auto d = engine_->Delete("q", {m.receipt_handle});
          ASSERT_TRUE(d.ok() && (*d)[0].ok());
        }
      }
    });
  }
  for (auto& c : consumers) c.join();
  EXPECT_FALSE(overlap) << "a message was leased to two consumers at once";
  EXPECT_GT(max_keys_in_flight, 1) << "keys did not progress in parallel";
  ASSERT_THAT(processed, SizeIs(kKeys));
  for (auto& [key, offsets] : processed) {
    ASSERT_THAT(offsets, SizeIs(kPerKey)) << key;
    EXPECT_TRUE(std::is_sorted(offsets.begin(), offsets.end())) << key;
    EXPECT_EQ(std::set<uint64_t>(offsets.begin(), offsets.end()).size(),
              static_cast<size_t>(kPerKey))
        << key;
  }
}

TEST_F(PoliciesTest, OrderingKeyTooLongIsRefused) {
  Create("q");
  EXPECT_EQ(SendOne("q", Keyed("x", std::string(129, 'k'))).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(SendOne("q", Keyed("x", std::string(128, 'k'))).ok());
}

// --- Deduplication. ---

TEST_F(PoliciesTest, DuplicateWithinTheWindowReturnsTheFirstOffset) {
  Create("q");
  SendEntry e;
  e.body = "charge card";
  e.dedup_id = "payment-42";
  auto first = SendOne("q", e);
  ASSERT_TRUE(first.ok());
  clock_.Advance(absl::Minutes(4));
  e.body = "charge card (retry)";
  auto again = SendOne("q", e);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *first);
  EXPECT_EQ(Stats("q").sent_total, 1u);
  // Inside one batch too; other ids are appended.
  SendEntry other = e;
  other.dedup_id = "payment-43";
  auto batch = engine_->Send("q", {e, other, other});
  ASSERT_TRUE(batch.ok());
  EXPECT_EQ((*batch)[0], (*first)[0]);
  EXPECT_EQ((*batch)[1], (*batch)[2]);
  EXPECT_NE((*batch)[1], (*first)[0]);
  EXPECT_EQ(Stats("q").sent_total, 2u);
  EXPECT_THAT(Bodies(Recv("q", 10)),
              ElementsAre("charge card", "charge card (retry)"));
}

TEST_F(PoliciesTest, DedupWindowHoldsAcrossRestartAndThenExpires) {
  Create("q");
  SendEntry e;
  e.body = "b";
  e.dedup_id = "id-1";
  auto first = SendOne("q", e);
  ASSERT_TRUE(first.ok());
  Reopen();
  clock_.Advance(absl::Minutes(5) - absl::Milliseconds(1));
  auto dup = SendOne("q", e);
  ASSERT_TRUE(dup.ok());
  EXPECT_EQ(*dup, *first);
  clock_.Advance(absl::Milliseconds(1));
  ASSERT_TRUE(engine_->RunRetention().ok());
  auto fresh = SendOne("q", e);
  ASSERT_TRUE(fresh.ok());
  EXPECT_GT((*fresh)[0], (*first)[0]);
  // The new send opens a new window, also after a restart.
  Reopen();
  auto dup2 = SendOne("q", e);
  ASSERT_TRUE(dup2.ok());
  EXPECT_EQ(*dup2, *fresh);
}

TEST_F(PoliciesTest, DedupWindowIsConfigurable) {
  QueueConfig c;
  c.dedup_window = absl::Seconds(10);
  Create("q", c);
  SendEntry e;
  e.body = "b";
  e.dedup_id = "id";
  auto first = SendOne("q", e);
  clock_.Advance(absl::Seconds(10));
  auto second = SendOne("q", e);
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_NE(*first, *second);
  e.dedup_id = std::string(129, 'x');
  EXPECT_EQ(SendOne("q", e).status().code(),
            absl::StatusCode::kInvalidArgument);
  c.dedup_window = absl::Hours(13);
  EXPECT_EQ(engine_->CreateQueue("q2", c).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// --- Changing a queue's configuration. ---

TEST_F(PoliciesTest, UpdateQueueChangesWhatComesNextAndSurvivesRestart) {
  Create("q");
  SendBodies("q", {"before"});
  auto leased = Recv("q", 1, absl::Minutes(1));
  ASSERT_THAT(leased, SizeIs(1));
  auto updated = engine_->UpdateQueue("q", [](QueueConfig& c) {
    c.visibility_timeout = absl::Seconds(5);
    c.delay = absl::Seconds(10);
  });
  ASSERT_TRUE(updated.ok()) << updated.status();
  EXPECT_EQ(updated->config.visibility_timeout, absl::Seconds(5));
  EXPECT_EQ(updated->config.max_message_bytes, 256 << 10);  // Kept.
  // The lease handed out before keeps its minute; new sends wait 10 s.
  SendBodies("q", {"after"});
  clock_.Advance(absl::Seconds(10));
  ReceiveOptions o;
  o.max_messages = 10;
  auto got = engine_->Receive("q", o);
  ASSERT_TRUE(got.ok());
  ASSERT_THAT(Bodies(*got), ElementsAre("after"));
  EXPECT_EQ((*got)[0].lease_deadline, clock_.Now() + absl::Seconds(5));
  Reopen();
  auto info = engine_->GetQueue("q");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->config.visibility_timeout, absl::Seconds(5));
  EXPECT_EQ(info->config.delay, absl::Seconds(10));
}

TEST_F(PoliciesTest, UpdateQueueAddsADeadLetterQueueToAQueueInUse) {
  Create("q");
  Create("dlq");
  SendBodies("q", {"poison"});
  ReceiveAndLapse("q");
  ReceiveAndLapse("q");
  ASSERT_TRUE(engine_
                  ->UpdateQueue("q",
                                [](QueueConfig& c) {
                                  c.max_receives = 2;
                                  c.dead_letter_queue = "dlq";
                                })
                  .ok());
  EXPECT_THAT(Recv("q", 10), IsEmpty());
  EXPECT_THAT(Bodies(Recv("dlq", 10)), ElementsAre("poison"));
  // Taking it away again stops dead-lettering.
  ASSERT_TRUE(engine_
                  ->UpdateQueue("q",
                                [](QueueConfig& c) {
                                  c.max_receives = 0;
                                  c.dead_letter_queue.clear();
                                })
                  .ok());
  EXPECT_TRUE(engine_->DeleteQueue("dlq").ok());
}

TEST_F(PoliciesTest, UpdateQueueRefusesBadConfigAndChangesNothing) {
  Create("a");
  Create("b");
  QueueConfig a_to_b;
  a_to_b.max_receives = 1;
  a_to_b.dead_letter_queue = "b";
  ASSERT_TRUE(
      engine_->UpdateQueue("a", [&](QueueConfig& c) { c = a_to_b; }).ok());
  const auto code = [&](const std::string& q,
                        std::function<void(QueueConfig&)> edit) {
    return engine_->UpdateQueue(q, edit).status().code();
  };
  EXPECT_EQ(code("nope", [](QueueConfig&) {}), absl::StatusCode::kNotFound);
  EXPECT_EQ(code("b",
                 [](QueueConfig& c) {
                   c.max_receives = 1;
                   c.dead_letter_queue = "a";  // A circle.
                 }),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code("b",
                 [](QueueConfig& c) {
                   c.max_receives = 1;
                   c.dead_letter_queue = "b";
                 }),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      code("b", [](QueueConfig& c) { c.visibility_timeout = absl::Hours(13); }),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code("a", [](QueueConfig& c) { c.dead_letter_queue = "zz"; }),
            absl::StatusCode::kInvalidArgument);
  auto a = engine_->GetQueue("a");
  auto b = engine_->GetQueue("b");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->config.dead_letter_queue, "b");
  EXPECT_EQ(b->config, QueueConfig());
}

}  // namespace
}  // namespace weir
