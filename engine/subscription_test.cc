// Subscriptions: push delivery within credit, ops by receipt, and the
// release of held leases when a subscription ends.
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "engine/engine.h"
#include "engine/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace weir {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::SizeIs;

// Generous: only a broken subscription waits this long.
constexpr absl::Duration kWait = absl::Seconds(30);

// Collects what a subscription delivers. With auto_done, every batch is
// acknowledged (DeliveryDone) as soon as it arrives.
class Collector {
 public:
  // What this one collects is also added to `total` (not owned) when given.
  explicit Collector(bool auto_done = true, Collector* total = nullptr)
      : auto_done_(auto_done), total_(total) {}

  SubscriptionCallback Callback() {
    return [this](absl::StatusOr<std::vector<ReceivedMessage>> r) {
      if (r.ok() && total_ != nullptr) total_->Record(*r);
      absl::MutexLock lock(&mu_);
      if (!r.ok()) {
        status_ = r.status();
        return;
      }
      ++batches_;
      for (ReceivedMessage& m : *r) messages_.push_back(std::move(m));
      if (auto_done_ && sub_ != nullptr) sub_->DeliveryDone();
    };
  }

  void Record(const std::vector<ReceivedMessage>& batch) {
    absl::MutexLock lock(&mu_);
    ++batches_;
    messages_.insert(messages_.end(), batch.begin(), batch.end());
  }

  void Attach(Subscription* sub) {
    absl::MutexLock lock(&mu_);
    sub_ = sub;
  }

  // Waits until at least n messages arrived; returns them all.
  std::vector<ReceivedMessage> WaitFor(size_t n) {
    absl::MutexLock lock(&mu_);
    auto enough = [&] { return messages_.size() >= n || !status_.ok(); };
    mu_.AwaitWithTimeout(absl::Condition(&enough), kWait);
    return messages_;
  }

  absl::Status WaitForError() {
    absl::MutexLock lock(&mu_);
    auto failed = [&] { return !status_.ok(); };
    mu_.AwaitWithTimeout(absl::Condition(&failed), kWait);
    return status_;
  }

  std::vector<ReceivedMessage> messages() {
    absl::MutexLock lock(&mu_);
    return messages_;
  }
  int batches() {
    absl::MutexLock lock(&mu_);
    return batches_;
  }
  absl::Status status() {
    absl::MutexLock lock(&mu_);
    return status_;
  }

 private:
  const bool auto_done_;
  Collector* const total_;
  absl::Mutex mu_;
  Subscription* sub_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::vector<ReceivedMessage> messages_ ABSL_GUARDED_BY(mu_);
  int batches_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
};

class SubscriptionTest : public EngineFixture {
 protected:
  void TearDown() override {
    for (auto& s : subs_) CloseAndWait(*s);
    subs_.clear();
  }

  // A subscription owned by the test, closed at the end.
  Subscription* Subscribe(const std::string& q, Collector& c,
                          const std::string& group = "",
                          absl::Duration vt = absl::Hours(1)) {
    SubscribeOptions o;
    o.group = group;
    o.visibility_timeout = vt;
    auto s = engine_->Subscribe(q, o, c.Callback());
    EXPECT_TRUE(s.ok()) << s.status();
    if (!s.ok()) return nullptr;
    c.Attach(s->get());
    subs_.push_back(*std::move(s));
    return subs_.back().get();
  }

  // Grants credit for `bodies`, sends them to "q" and returns them as
  // pushed (the caller checks that all came).
  std::vector<ReceivedMessage> PushAll(Subscription& s, Collector& c,
                                       const std::vector<std::string>& bodies) {
    EXPECT_TRUE(s.AddCredit(static_cast<int64_t>(bodies.size())).ok());
    SendBodies("q", bodies);
    return c.WaitFor(bodies.size());
  }

  static void CloseAndWait(Subscription& s) {
    absl::Notification closed;
    s.Close([&] { closed.Notify(); });
    ASSERT_TRUE(closed.WaitForNotificationWithTimeout(kWait));
  }

  absl::StatusOr<SubscriptionAck> ApplyAndWait(Subscription& s,
                                               SubscriptionOps ops) {
    absl::Notification done;
    absl::StatusOr<SubscriptionAck> ack;
    s.Apply(std::move(ops), [&](absl::StatusOr<SubscriptionAck> a) {
      ack = std::move(a);
      done.Notify();
    });
    EXPECT_TRUE(done.WaitForNotificationWithTimeout(kWait));
    return ack;
  }

  // A long poll: returns as soon as a message is ready.
  std::vector<ReceivedMessage> ReceiveWaiting(const std::string& q,
                                              int n = 10) {
    ReceiveOptions o;
    o.max_messages = n;
    o.visibility_timeout = absl::Hours(1);
    absl::Notification done;
    std::vector<ReceivedMessage> got;
    engine_->ReceiveAsync(q, o, absl::Seconds(20),
                          [&](absl::StatusOr<std::vector<ReceivedMessage>> r) {
                            EXPECT_TRUE(r.ok()) << r.status();
                            if (r.ok()) got = *std::move(r);
                            done.Notify();
                          });
    EXPECT_TRUE(done.WaitForNotificationWithTimeout(kWait));
    return got;
  }

  static std::vector<std::string> Bodies(
      const std::vector<ReceivedMessage>& ms) {
    std::vector<std::string> out;
    for (const auto& m : ms) out.push_back(m.body);
    return out;
  }

  // Collectors outlive the subscriptions that deliver to them.
  Collector& NewCollector(bool auto_done = true, Collector* total = nullptr) {
    collectors_.push_back(std::make_unique<Collector>(auto_done, total));
    return *collectors_.back();
  }

  std::vector<std::unique_ptr<Collector>> collectors_;
  std::vector<std::unique_ptr<Subscription>> subs_;
};

TEST_F(SubscriptionTest, PushesWhatArrivesWithinItsCredit) {
  Create("q");
  Collector& c = NewCollector();
  Subscription* s = Subscribe("q", c);
  ASSERT_TRUE(s->AddCredit(3).ok());
  SendBodies("q", {"a"});
  EXPECT_THAT(Bodies(c.WaitFor(1)), ElementsAre("a"));
  SendBodies("q", {"b", "c", "d", "e"});
  EXPECT_THAT(Bodies(c.WaitFor(3)), ElementsAre("a", "b", "c"));
  // Out of credit: the rest stays ready for others.
  EXPECT_THAT(Bodies(Recv("q", 10)), ElementsAre("d", "e"));
  EXPECT_THAT(c.messages(), SizeIs(3));
  EXPECT_EQ(Stats("q").in_flight, 5u);

  SendBodies("q", {"f"});
  ASSERT_TRUE(s->AddCredit(1).ok());
  EXPECT_THAT(Bodies(c.WaitFor(4)), ElementsAre("a", "b", "c", "f"));
}

// A parked subscription has what is sent leased in the send's own write.
// Whether it has parked yet is not visible from here, so the test sends
// one message at a time until a send is taken that way (nearly always the
// first); each arrives either way.
TEST_F(SubscriptionTest, ParkedSubscriptionTakesASendInTheSendsWrite) {
  Create("q");
  Collector c;
  Subscription* sub = Subscribe("q", c);
  ASSERT_TRUE(sub->AddCredit(1000).ok());
  bool one_write = false;
  size_t sent = 0;
  while (!one_write && sent < 100) {
    const uint64_t before = engine_->GetStorageStats().writes;
    SendBodies("q", {absl::StrCat("m", sent)});
    ++sent;
    ASSERT_THAT(c.WaitFor(sent), SizeIs(sent));
    one_write = engine_->GetStorageStats().writes == before + 1;
  }
  EXPECT_TRUE(one_write);
  std::vector<ReceivedMessage> got = c.messages();
  SubscriptionOps ops;
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].body, absl::StrCat("m", i));
    EXPECT_EQ(got[i].receive_count, 1u);
    ops.deletes.push_back(got[i].receipt_handle);
  }
  absl::StatusOr<SubscriptionAck> ack = ApplyAndWait(*sub, std::move(ops));
  ASSERT_TRUE(ack.ok()) << ack.status();
  for (const absl::Status& d : ack->deletes) EXPECT_TRUE(d.ok()) << d;
  EXPECT_EQ(Stats("q").in_flight, 0u);
  EXPECT_EQ(Stats("q").deleted_total, sent);
}

TEST_F(SubscriptionTest, HoldsOneBatchUntilTheTransportIsDone) {
  Create("q");
  Collector& c = NewCollector(/*auto_done=*/false);
  Subscription* s = Subscribe("q", c);
  ASSERT_TRUE(s->AddCredit(100).ok());
  SendBodies("q", {"a"});
  ASSERT_THAT(c.WaitFor(1), SizeIs(1));
  // Not acknowledged yet: a new message is not taken by the subscription.
  SendBodies("q", {"b"});
  EXPECT_THAT(Bodies(Recv("q", 10)), ElementsAre("b"));
  SendBodies("q", {"c"});
  s->DeliveryDone();
  EXPECT_THAT(Bodies(c.WaitFor(2)), ElementsAre("a", "c"));
  EXPECT_EQ(c.batches(), 2);
}

TEST_F(SubscriptionTest, BatchesAreAtMostMaxBatch) {
  Create("q");
  std::vector<std::string> bodies;
  for (int i = 0; i < 250; ++i) bodies.push_back(absl::StrCat(i));
  SendBodies("q", bodies);
  Collector& c = NewCollector();
  Subscription* s = Subscribe("q", c);
  ASSERT_TRUE(s->AddCredit(Subscription::kMaxCredit).ok());
  std::vector<ReceivedMessage> got = c.WaitFor(250);
  ASSERT_THAT(got, SizeIs(250));
  EXPECT_GE(c.batches(), 3);
  for (int i = 0; i < 250; ++i) EXPECT_EQ(got[i].body, absl::StrCat(i));
}

TEST_F(SubscriptionTest, DeletesExtendsAndReleasesByReceipt) {
  Create("q");
  Collector& c = NewCollector();
  Subscription* s = Subscribe("q", c, "", absl::Seconds(30));
  std::vector<ReceivedMessage> got = PushAll(*s, c, {"a", "b", "c"});
  ASSERT_THAT(got, SizeIs(3));

  SubscriptionOps ops;
  ops.deletes = {got[0].receipt_handle, "garbage"};
  ops.extends = {{got[1].receipt_handle, absl::Minutes(10)},
                 {got[1].receipt_handle, absl::ZeroDuration()}};
  ops.releases = {{got[2].receipt_handle, absl::ZeroDuration()}};
  absl::StatusOr<SubscriptionAck> ack = ApplyAndWait(*s, ops);
  ASSERT_TRUE(ack.ok()) << ack.status();
  ASSERT_THAT(ack->deletes, SizeIs(2));
  EXPECT_TRUE(ack->deletes[0].ok());
  EXPECT_EQ(ack->deletes[1].code(), absl::StatusCode::kInvalidArgument);
  ASSERT_THAT(ack->extends, SizeIs(2));
  EXPECT_TRUE(ack->extends[0].ok());
  EXPECT_EQ(ack->extends[1].code(), absl::StatusCode::kInvalidArgument);
  ASSERT_THAT(ack->releases, SizeIs(1));
  EXPECT_TRUE(ack->releases[0].ok());

  // The release came back at once; the extension outlives the 30 s lease.
  std::vector<ReceivedMessage> released = Recv("q", 10);
  EXPECT_THAT(Bodies(released), ElementsAre("c"));
  for (const auto& m : released)
    EXPECT_TRUE(DeleteOne("q", m.receipt_handle).ok());
  clock_.Advance(absl::Minutes(5));
  EXPECT_THAT(Recv("q", 10), IsEmpty());
  clock_.Advance(absl::Minutes(6));
  EXPECT_THAT(Bodies(Recv("q", 10)), ElementsAre("b"));
  EXPECT_EQ(Stats("q").deleted_total, 2u);
}

TEST_F(SubscriptionTest, ReleaseWithATimeoutRetriesLater) {
  Create("q");
  Collector& c = NewCollector();
  Subscription* s = Subscribe("q", c);
  ASSERT_TRUE(s->AddCredit(10).ok());
  SendBodies("q", {"a"});
  std::vector<ReceivedMessage> got = c.WaitFor(1);
  ASSERT_THAT(got, SizeIs(1));
  SubscriptionOps ops;
  ops.releases = {{got[0].receipt_handle, absl::Seconds(5)}};
  ASSERT_TRUE(ApplyAndWait(*s, ops).ok());
  clock_.Advance(absl::Seconds(5));
  got = c.WaitFor(2);
  ASSERT_THAT(got, SizeIs(2));
  EXPECT_EQ(got[1].body, "a");
  EXPECT_EQ(got[1].receive_count, 2u);
}

TEST_F(SubscriptionTest, ClosingReleasesWhatItHeld) {
  Create("q");
  Collector& c = NewCollector();
  Subscription* s = Subscribe("q", c);
  std::vector<ReceivedMessage> got = PushAll(*s, c, {"a", "b", "c"});
  ASSERT_THAT(got, SizeIs(3));
  SubscriptionOps ops;
  ops.deletes = {got[0].receipt_handle};
  ASSERT_TRUE(ApplyAndWait(*s, ops).ok());
  CloseAndWait(*s);
  // Leased for an hour, yet ready again at once.
  std::vector<ReceivedMessage> again = ReceiveWaiting("q");
  if (again.size() < 2) {
    std::vector<ReceivedMessage> more = ReceiveWaiting("q");
    again.insert(again.end(), more.begin(), more.end());
  }
  EXPECT_THAT(Bodies(again), ElementsAre("b", "c"));
  for (const auto& m : again) EXPECT_EQ(m.receive_count, 2u);
}

// A release refused for its timeout leaves the lease as it was: still the
// subscription's, and released when it is closed.
TEST_F(SubscriptionTest, ARefusedReleaseStillLeavesTheLeaseToTheClose) {
  Create("q");
  Collector& c = NewCollector();
  Subscription* s = Subscribe("q", c);
  std::vector<ReceivedMessage> got = PushAll(*s, c, {"a"});
  ASSERT_THAT(got, SizeIs(1));
  SubscriptionOps ops;
  ops.releases = {{got[0].receipt_handle, absl::Hours(13)}};
  absl::StatusOr<SubscriptionAck> ack = ApplyAndWait(*s, ops);
  ASSERT_TRUE(ack.ok()) << ack.status();
  ASSERT_THAT(ack->releases, SizeIs(1));
  EXPECT_EQ(ack->releases[0].code(), absl::StatusCode::kInvalidArgument)
      << ack->releases[0];
  CloseAndWait(*s);
  // Leased for an hour, yet ready again at once.
  std::vector<ReceivedMessage> again = ReceiveWaiting("q");
  ASSERT_THAT(Bodies(again), ElementsAre("a"));
  EXPECT_EQ(again[0].receive_count, 2u);
}

// A lease shortened by an extension lapses, and the subscription takes the
// message again: it then holds a stale receipt and the current one of the
// same message, and its close still releases every current one.
TEST_F(SubscriptionTest, ClosingReleasesALeaseTakenAgainAfterItsOldOneLapsed) {
  Create("q");
  Collector& c = NewCollector();
  Subscription* s = Subscribe("q", c);
  constexpr int kMessages = 8;
  ASSERT_TRUE(s->AddCredit(2 * kMessages).ok());
  std::vector<std::string> bodies;
  for (int i = 0; i < kMessages; ++i) bodies.push_back(absl::StrCat("m", i));
  SendBodies("q", bodies);
  std::vector<ReceivedMessage> got = c.WaitFor(kMessages);
  ASSERT_THAT(got, SizeIs(kMessages));
  SubscriptionOps ops;
  for (const ReceivedMessage& m : got) {
    ops.extends.push_back({m.receipt_handle, absl::Seconds(1)});
  }
  absl::StatusOr<SubscriptionAck> ack = ApplyAndWait(*s, ops);
  ASSERT_TRUE(ack.ok()) << ack.status();
  for (const absl::Status& e : ack->extends) ASSERT_TRUE(e.ok()) << e;
  clock_.Advance(absl::Seconds(1));
  got = c.WaitFor(2 * kMessages);
  ASSERT_THAT(got, SizeIs(2 * kMessages));
  for (int i = kMessages; i < 2 * kMessages; ++i) {
    EXPECT_EQ(got[i].receive_count, 2u);
  }
  CloseAndWait(*s);
  // Leased for an hour the second time, yet all ready again at once (the
  // close releases them in one batch).
  EXPECT_THAT(Bodies(ReceiveWaiting("q")), SizeIs(kMessages));
}

TEST_F(SubscriptionTest, DeletesSentJustBeforeClosingStillCount) {
  Create("q");
  Collector& c = NewCollector();
  Subscription* s = Subscribe("q", c);
  std::vector<ReceivedMessage> got = PushAll(*s, c, {"a", "b"});
  ASSERT_THAT(got, SizeIs(2));
  SubscriptionOps ops;
  ops.deletes = {got[0].receipt_handle};
  s->Apply(ops, [](absl::StatusOr<SubscriptionAck>) {});
  CloseAndWait(*s);
  EXPECT_THAT(Bodies(ReceiveWaiting("q")), ElementsAre("b"));
  EXPECT_EQ(Stats("q").deleted_total, 1u);
}

// Ops given before Close are answered, and before Close's callback; ops
// given after it are refused at once and change nothing.
TEST_F(SubscriptionTest, OpsGivenBeforeCloseAreAnsweredFirstLaterOnesRefused) {
  Create("q");
  Collector& c = NewCollector();
  Subscription* s = Subscribe("q", c);
  std::vector<ReceivedMessage> got = PushAll(*s, c, {"a", "b"});
  ASSERT_THAT(got, SizeIs(2));
  absl::Mutex mu;
  std::vector<std::string> order;
  absl::StatusOr<SubscriptionAck> before;
  SubscriptionOps ops;
  ops.deletes = {got[0].receipt_handle};
  s->Apply(ops, [&](absl::StatusOr<SubscriptionAck> a) {
    absl::MutexLock lock(&mu);
    before = std::move(a);
    order.push_back("answered");
  });
  absl::Notification closed;
  s->Close([&] {
    {
      absl::MutexLock lock(&mu);
      order.push_back("closed");
    }
    closed.Notify();
  });
  ASSERT_TRUE(closed.WaitForNotificationWithTimeout(kWait));
  {
    absl::MutexLock lock(&mu);
    EXPECT_THAT(order, ElementsAre("answered", "closed"));
    ASSERT_TRUE(before.ok()) << before.status();
    ASSERT_THAT(before->deletes, SizeIs(1));
    EXPECT_TRUE(before->deletes[0].ok()) << before->deletes[0];
  }
  bool answered = false;
  ops.deletes = {got[1].receipt_handle};
  s->Apply(ops, [&](absl::StatusOr<SubscriptionAck> a) {
    answered = true;
    EXPECT_EQ(a.status().code(), absl::StatusCode::kFailedPrecondition)
        << a.status();
  });
  EXPECT_TRUE(answered);  // At once, on this thread.
  // "b" was released by the close, not deleted.
  EXPECT_THAT(Bodies(ReceiveWaiting("q")), ElementsAre("b"));
  EXPECT_EQ(Stats("q").deleted_total, 1u);
}

TEST_F(SubscriptionTest, ALapsedLeaseComesBackToASubscriber) {
  Create("q");
  Collector& c = NewCollector();
  Subscription* s = Subscribe("q", c, "", absl::Seconds(10));
  ASSERT_TRUE(s->AddCredit(5).ok());
  SendBodies("q", {"a"});
  ASSERT_THAT(c.WaitFor(1), SizeIs(1));
  clock_.Advance(absl::Seconds(10));
  std::vector<ReceivedMessage> got = c.WaitFor(2);
  ASSERT_THAT(got, SizeIs(2));
  EXPECT_EQ(got[1].offset, got[0].offset);
  EXPECT_EQ(got[1].receive_count, 2u);
}

TEST_F(SubscriptionTest, SubscribersOfOneGroupShareTwoGroupsBothGetAll) {
  Create("q");
  ASSERT_TRUE(engine_->CreateGroup("q", "other", LogPosition::Earliest()).ok());
  Collector& both = NewCollector();
  Collector& c1 = NewCollector(true, &both);
  Collector& c2 = NewCollector(true, &both);
  Collector& other = NewCollector();
  ASSERT_TRUE(Subscribe("q", c1)->AddCredit(1000).ok());
  ASSERT_TRUE(Subscribe("q", c2)->AddCredit(1000).ok());
  ASSERT_TRUE(Subscribe("q", other, "other")->AddCredit(1000).ok());
  std::vector<std::string> bodies;
  for (int i = 0; i < 500; ++i) bodies.push_back(absl::StrCat(i));
  for (int i = 0; i < 500; i += 50) {
    SendBodies("q", std::vector<std::string>(bodies.begin() + i,
                                             bodies.begin() + i + 50));
  }
  EXPECT_THAT(Bodies(other.WaitFor(500)), ::testing::ContainerEq(bodies));
  // Between them, the default group's two subscribers got each message once.
  std::vector<ReceivedMessage> got = both.WaitFor(500);
  std::set<uint64_t> offsets;
  for (const auto& m : got) offsets.insert(m.offset);
  EXPECT_THAT(got, SizeIs(500));
  EXPECT_EQ(offsets.size(), 500u);
  EXPECT_EQ(Stats("q").ready, 0u);
}

TEST_F(SubscriptionTest, ShutdownReleasesLeasesAndEndsWithUnavailable) {
  Create("q");
  Collector& c = NewCollector();
  Subscription* s = Subscribe("q", c);
  ASSERT_TRUE(s->AddCredit(2).ok());
  SendBodies("q", {"a", "b"});
  ASSERT_THAT(c.WaitFor(2), SizeIs(2));
  engine_->BeginShutdown();
  EXPECT_EQ(c.WaitForError().code(), absl::StatusCode::kUnavailable);
  CloseAndWait(*s);
  subs_.clear();
  Reopen();
  // Released before the queue closed: ready at once, not after an hour.
  EXPECT_THAT(Bodies(Recv("q", 10)), ElementsAre("a", "b"));
}

TEST_F(SubscriptionTest, DeletingTheQueueOrGroupEndsItWithNotFound) {
  Create("q");
  ASSERT_TRUE(engine_->CreateGroup("q", "g", LogPosition::Earliest()).ok());
  Collector& on_group = NewCollector();
  Collector& on_queue = NewCollector();
  ASSERT_TRUE(Subscribe("q", on_group, "g")->AddCredit(1).ok());
  ASSERT_TRUE(Subscribe("q", on_queue)->AddCredit(1).ok());
  ASSERT_TRUE(engine_->DeleteGroup("q", "g").ok());
  EXPECT_EQ(on_group.WaitForError().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(engine_->DeleteQueue("q").ok());
  EXPECT_EQ(on_queue.WaitForError().code(), absl::StatusCode::kNotFound);
}

TEST_F(SubscriptionTest, BadInputIsRefused) {
  Create("q");
  Collector& c = NewCollector();
  SubscribeOptions o;
  EXPECT_EQ(engine_->Subscribe("nope", o, c.Callback()).status().code(),
            absl::StatusCode::kNotFound);
  o.group = "nope";
  EXPECT_EQ(engine_->Subscribe("q", o, c.Callback()).status().code(),
            absl::StatusCode::kNotFound);
  o.group = "";
  o.visibility_timeout = absl::ZeroDuration();
  EXPECT_EQ(engine_->Subscribe("q", o, c.Callback()).status().code(),
            absl::StatusCode::kInvalidArgument);
  o.visibility_timeout = absl::Hours(13);
  EXPECT_EQ(engine_->Subscribe("q", o, c.Callback()).status().code(),
            absl::StatusCode::kInvalidArgument);

  Subscription* s = Subscribe("q", c);
  EXPECT_EQ(s->AddCredit(-1).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(s->AddCredit(Subscription::kMaxCredit - 1).ok());
  EXPECT_EQ(s->AddCredit(2).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(s->AddCredit(1).ok());

  SubscriptionOps ops;
  ops.deletes.assign(600, "x");
  ops.releases.assign(401, VisibilityChange{"x", absl::ZeroDuration()});
  EXPECT_EQ(ApplyAndWait(*s, ops).status().code(),
            absl::StatusCode::kInvalidArgument);
  ops.releases.pop_back();
  absl::StatusOr<SubscriptionAck> ack = ApplyAndWait(*s, ops);
  ASSERT_TRUE(ack.ok()) << ack.status();
  EXPECT_EQ(ack->deletes[0].code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ack->releases[0].code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(SubscriptionTest, ManyIdleSubscriptionsAndOneMessage) {
  Create("q");
  Collector& all = NewCollector(/*auto_done=*/false);
  for (int i = 0; i < 2000; ++i) {
    ASSERT_TRUE(Subscribe("q", all)->AddCredit(1).ok());
  }
  SendBodies("q", {"only"});
  EXPECT_THAT(Bodies(all.WaitFor(1)), ElementsAre("only"));
  EXPECT_EQ(Stats("q").in_flight, 1u);
  EXPECT_EQ(Stats("q").ready, 0u);
}

}  // namespace
}  // namespace weir
