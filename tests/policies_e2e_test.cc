// End-to-end tests of the delivery policies over gRPC against the real
// weir_server binary: dead-letter queues and redrive, delays, ordering keys
// and deduplication, with their answers to bad input.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "tests/e2e_fixture.h"
#include "tests/rpc_helpers.h"
#include "tests/server_process.h"
#include "weir/v1/weir.pb.h"

namespace weir::test {
namespace {

using ::grpc::StatusCode;
using ::weir::v1::SendEntry;
using ::weir::v1::SendRequest;

class PoliciesE2ETest : public E2ETest {
 protected:
  // A queue whose messages go to a new dead-letter queue after
  // `max_receives` deliveries; returns {queue, dlq}.
  std::pair<std::string, std::string> NewQueueWithDlq(const std::string& hint,
                                                      int max_receives) {
    const std::string dlq = NewQueue(hint + "-dlq");
    QueueConfig config;
    config.set_max_receives(max_receives);
    config.set_dead_letter_queue(dlq);
    return {NewQueue(hint, config), dlq};
  }

  Reply<weir::v1::SendResponse> SendEntries(const std::string& queue,
                                            const std::vector<SendEntry>& es) {
    SendRequest request;
    request.set_queue(queue);
    for (const SendEntry& e : es) *request.add_entries() = e;
    return client().Send(request);
  }

  SendEntry Entry(const std::string& body, const std::string& key = "",
                  const std::string& dedup_id = "") {
    SendEntry e;
    e.set_body(body);
    e.set_ordering_key(key);
    e.set_dedup_id(dedup_id);
    return e;
  }

  // Receives without waiting; returns the messages.
  std::vector<Message> ReceiveNow(const std::string& queue, int n = kMaxBatch) {
    Reply<weir::v1::ReceiveResponse> got =
        client().Receive(queue, n, kLongLeaseMs, /*wait_time_ms=*/0);
    EXPECT_TRUE(got.ok()) << Describe(got.status);
    return {got.response.messages().begin(), got.response.messages().end()};
  }

  // Releases a lease at once, as a consumer that failed would.
  void Release(const std::string& queue, const Message& m) {
    Reply<weir::v1::ChangeVisibilityResponse> r =
        client().ChangeVisibility(queue, {{m.receipt_handle(), 0}});
    ASSERT_TRUE(r.ok()) << Describe(r.status);
    EXPECT_TRUE(HasEntryCode(r.response.results(0), kCodeOk));
  }

  void DeleteOk(const std::string& queue, const Message& m) {
    Reply<weir::v1::DeleteResponse> r =
        client().Delete(queue, {m.receipt_handle()});
    ASSERT_TRUE(r.ok()) << Describe(r.status);
    EXPECT_TRUE(HasEntryCode(r.response.results(0), kCodeOk));
  }
};

TEST_F(PoliciesE2ETest, PoisonMessageEndsInTheDlqAndRedriveBringsItBack) {
  auto [q, dlq] = NewQueueWithDlq("poison", 3);
  SendRequest request;
  request.set_queue(q);
  SendEntry* e = request.add_entries();
  e->set_body("poison");
  (*e->mutable_attributes())["trace"] = "t-1";
  e->set_ordering_key("customer-9");
  ASSERT_TRUE(client().Send(request).ok());
  for (uint32_t i = 1; i <= 3; ++i) {
    std::vector<Message> got = ReceiveNow(q);
    ASSERT_EQ(got.size(), 1u) << "delivery " << i;
    EXPECT_EQ(got[0].receive_count(), i);
    EXPECT_EQ(got[0].ordering_key(), "customer-9");
    Release(q, got[0]);
  }
  EXPECT_TRUE(ReceiveNow(q).empty());

  std::vector<Message> dead = ReceiveNow(dlq);
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_EQ(dead[0].body(), "poison");
  std::map<std::string, std::string> attrs(dead[0].attributes().begin(),
                                           dead[0].attributes().end());
  EXPECT_EQ(attrs["trace"], "t-1");
  EXPECT_EQ(attrs["weir.source_queue"], q);
  EXPECT_EQ(attrs["weir.source_offset"], "0");
  EXPECT_EQ(attrs["weir.source_group"], "");
  EXPECT_EQ(attrs["weir.receive_count"], "3");
  EXPECT_EQ(attrs["weir.ordering_key"], "customer-9");
  Release(dlq, dead[0]);

  Reply<weir::v1::RedriveResponse> moved = client().Redrive(dlq);
  ASSERT_TRUE(moved.ok()) << Describe(moved.status);
  EXPECT_EQ(moved.response.moved(), 1u);
  EXPECT_TRUE(ReceiveNow(dlq).empty());
  std::vector<Message> back = ReceiveNow(q);
  ASSERT_EQ(back.size(), 1u);
  EXPECT_EQ(back[0].body(), "poison");
  EXPECT_EQ(back[0].receive_count(), 1u);
  EXPECT_EQ(back[0].ordering_key(), "customer-9");
  EXPECT_EQ(back[0].attributes().size(), 1u);
  EXPECT_EQ(back[0].attributes().at("trace"), "t-1");
}

TEST_F(PoliciesE2ETest, RedriveToAQueueOfChoiceAndItsBadInput) {
  auto [q, dlq] = NewQueueWithDlq("redrive", 1);
  const std::string other = NewQueue("redrive-target");
  SendOk(q, {"a", "b", "c"});
  for (const Message& m : ReceiveNow(q)) Release(q, m);
  EXPECT_TRUE(ReceiveNow(q).empty());
  EXPECT_EQ(Stats(dlq).ready(), 3u);

  EXPECT_TRUE(
      HasCode(client().Redrive(q).status, StatusCode::FAILED_PRECONDITION));
  EXPECT_TRUE(
      HasCode(client().Redrive("no-such-dlq").status, StatusCode::NOT_FOUND));
  EXPECT_TRUE(HasCode(client().Redrive(dlq, "no-such-queue").status,
                      StatusCode::NOT_FOUND));
  EXPECT_TRUE(
      HasCode(client().Redrive(dlq, dlq).status, StatusCode::INVALID_ARGUMENT));
  EXPECT_TRUE(HasCode(client().Redrive(dlq, other, -1).status,
                      StatusCode::INVALID_ARGUMENT));
  EXPECT_EQ(Stats(dlq).ready(), 3u);

  Reply<weir::v1::RedriveResponse> moved = client().Redrive(dlq, other, 2);
  ASSERT_TRUE(moved.ok()) << Describe(moved.status);
  EXPECT_EQ(moved.response.moved(), 2u);
  EXPECT_EQ(ReceiveNow(other).size(), 2u);
  EXPECT_EQ(Stats(dlq).ready(), 1u);
}

TEST_F(PoliciesE2ETest, DeadLetterConfigIsCheckedAndShown) {
  const std::string dlq = NewQueue("cfg-dlq");
  QueueConfig config;
  config.set_max_receives(5);
  config.set_dead_letter_queue("no-such-queue");
  EXPECT_TRUE(HasCode(client().CreateQueue(UniqueName("cfg"), config).status,
                      StatusCode::INVALID_ARGUMENT));
  config.set_dead_letter_queue(dlq);
  config.set_max_receives(0);
  EXPECT_TRUE(HasCode(client().CreateQueue(UniqueName("cfg"), config).status,
                      StatusCode::INVALID_ARGUMENT));
  config.set_max_receives(1001);
  EXPECT_TRUE(HasCode(client().CreateQueue(UniqueName("cfg"), config).status,
                      StatusCode::INVALID_ARGUMENT));
  const std::string self = UniqueName("cfg-self");
  config.set_max_receives(5);
  config.set_dead_letter_queue(self);
  EXPECT_TRUE(HasCode(client().CreateQueue(self, config).status,
                      StatusCode::INVALID_ARGUMENT));

  config.set_dead_letter_queue(dlq);
  config.set_dedup_window_ms(60'000);
  const std::string q = NewQueue("cfg", config);
  Reply<weir::v1::Queue> got = client().GetQueue(q);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got.response.config().max_receives(), 5);
  EXPECT_EQ(got.response.config().dead_letter_queue(), dlq);
  EXPECT_EQ(got.response.config().dedup_window_ms(), 60'000);
  // Same again is fine; a different DLQ setting is not.
  EXPECT_TRUE(client().CreateQueue(q, config).ok());
  config.set_max_receives(6);
  EXPECT_TRUE(HasCode(client().CreateQueue(q, config).status,
                      StatusCode::ALREADY_EXISTS));

  EXPECT_TRUE(HasCode(client().DeleteQueue(dlq).status,
                      StatusCode::FAILED_PRECONDITION));
  EXPECT_TRUE(client().GetQueue(dlq).ok());
  ASSERT_TRUE(client().DeleteQueue(q).ok());
  EXPECT_TRUE(client().DeleteQueue(dlq).ok());

  QueueConfig plain;
  plain.set_dedup_window_ms(-1);
  EXPECT_TRUE(HasCode(client().CreateQueue(UniqueName("cfg"), plain).status,
                      StatusCode::INVALID_ARGUMENT));
}

TEST_F(PoliciesE2ETest, DelayedMessageArrivesAfterItsDelay) {
  const std::string q = NewQueue("delay");
  SendEntry later = Entry("later");
  later.set_delay_ms(1500);
  const int64_t sent_at = NowUnixMs();
  ASSERT_TRUE(SendEntries(q, {later}).ok());
  EXPECT_TRUE(ReceiveNow(q).empty());
  EXPECT_EQ(Stats(q).delayed(), 1u);
  std::vector<Message> got = ReceiveCount(q, 1, kLongLeaseMs);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].body(), "later");
  EXPECT_GE(NowUnixMs() - sent_at, 1500);
}

TEST_F(PoliciesE2ETest, ReleaseWithATimeoutIsARetryWithBackOff) {
  const std::string q = NewQueue("backoff");
  SendOk(q, {"job"});
  std::vector<Message> first = ReceiveNow(q);
  ASSERT_EQ(first.size(), 1u);
  const int64_t failed_at = NowUnixMs();
  Reply<weir::v1::ChangeVisibilityResponse> r =
      client().ChangeVisibility(q, {{first[0].receipt_handle(), 1000}});
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE(HasEntryCode(r.response.results(0), kCodeOk));
  std::vector<Message> retry = ReceiveCount(q, 1, kLongLeaseMs);
  ASSERT_EQ(retry.size(), 1u);
  EXPECT_EQ(retry[0].receive_count(), 2u);
  EXPECT_GE(NowUnixMs() - failed_at, 1000);
}

TEST_F(PoliciesE2ETest, MessagesOfAKeyComeInOrderOneAtATime) {
  const std::string q = NewQueue("ordered");
  ASSERT_TRUE(
      SendEntries(q, {Entry("a1", "a"), Entry("a2", "a"), Entry("b1", "b"),
                      Entry("free"), Entry("a3", "a")})
          .ok());
  std::vector<Message> got = ReceiveNow(q);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].body(), "a1");
  EXPECT_EQ(got[1].body(), "b1");
  EXPECT_EQ(got[2].body(), "free");
  EXPECT_TRUE(ReceiveNow(q).empty());
  // A lapsed or released head comes back first.
  Release(q, got[0]);
  std::vector<Message> again = ReceiveNow(q);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].body(), "a1");
  EXPECT_EQ(again[0].receive_count(), 2u);
  DeleteOk(q, again[0]);
  std::vector<Message> next = ReceiveNow(q);
  ASSERT_EQ(next.size(), 1u);
  EXPECT_EQ(next[0].body(), "a2");
  // Read shows the keys too.
  Reply<weir::v1::ReadResponse> read = client().Read(q, Earliest(), 1);
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(read.response.messages(0).ordering_key(), "a");
}

TEST_F(PoliciesE2ETest, DuplicateSendsReturnTheFirstOffset) {
  const std::string q = NewQueue("dedup");
  Reply<weir::v1::SendResponse> first =
      SendEntries(q, {Entry("pay", "", "payment-1")});
  ASSERT_TRUE(first.ok());
  Reply<weir::v1::SendResponse> again = SendEntries(
      q, {Entry("pay (retry)", "", "payment-1"), Entry("other", "", "p-2"),
          Entry("other again", "", "p-2")});
  ASSERT_TRUE(again.ok()) << Describe(again.status);
  EXPECT_EQ(again.response.offsets(0), first.response.offsets(0));
  EXPECT_EQ(again.response.offsets(1), again.response.offsets(2));
  EXPECT_EQ(Stats(q).sent_total(), 2u);
  std::vector<Message> got = ReceiveNow(q);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].body(), "pay");
  EXPECT_EQ(got[1].body(), "other");
}

TEST_F(PoliciesE2ETest, BadPolicyInputIsRefusedAndAppendsNothing) {
  const std::string q = NewQueue("policy-bad");
  SendEntry negative = Entry("x");
  negative.set_delay_ms(-1);
  EXPECT_TRUE(HasCode(SendEntries(q, {Entry("ok"), negative}).status,
                      StatusCode::INVALID_ARGUMENT));
  SendEntry too_late = Entry("x");
  too_late.set_delay_ms(kMaxDelayMs + 1);
  EXPECT_TRUE(
      HasCode(SendEntries(q, {too_late}).status, StatusCode::INVALID_ARGUMENT));
  EXPECT_TRUE(
      HasCode(SendEntries(q, {Entry("x", std::string(129, 'k'))}).status,
              StatusCode::INVALID_ARGUMENT));
  EXPECT_TRUE(
      HasCode(SendEntries(q, {Entry("x", "", std::string(129, 'd'))}).status,
              StatusCode::INVALID_ARGUMENT));
  EXPECT_EQ(Stats(q).sent_total(), 0u);
  EXPECT_EQ(Stats(q).next_offset(), 0u);
}

// A server of its own: a SIGKILL between deliveries keeps the receive count,
// and the dedup window holds across the restart.
TEST(PoliciesRestartTest, KillKeepsReceiveCountsAndDedupWindow) {
  absl::StatusOr<std::unique_ptr<ServerProcess>> server =
      ServerProcess::Start();
  ASSERT_TRUE(server.ok()) << server.status();
  uint64_t first_offset;
  {
    TestClient client((*server)->Channel());
    ASSERT_TRUE(client.CreateQueue("crash-dlq").ok());
    QueueConfig config;
    config.set_max_receives(2);
    config.set_dead_letter_queue("crash-dlq");
    ASSERT_TRUE(client.CreateQueue("crash", config).ok());
    SendRequest request;
    request.set_queue("crash");
    request.add_entries()->set_body("poison");
    request.mutable_entries(0)->set_dedup_id("once");
    Reply<weir::v1::SendResponse> sent = client.Send(request);
    ASSERT_TRUE(sent.ok());
    first_offset = sent.response.offsets(0);
    Reply<weir::v1::ReceiveResponse> got =
        client.Receive("crash", 1, /*visibility_timeout_ms=*/0);
    ASSERT_TRUE(got.ok());
    ASSERT_EQ(got.response.messages_size(), 1);
  }
  (*server)->Kill();
  ASSERT_TRUE((*server)->Restart().ok());
  {
    TestClient client((*server)->Channel());
    Reply<weir::v1::ReceiveResponse> got = client.Receive("crash", 1, 0);
    ASSERT_TRUE(got.ok());
    ASSERT_EQ(got.response.messages_size(), 1);
    EXPECT_EQ(got.response.messages(0).receive_count(), 2u);
    SendRequest request;
    request.set_queue("crash");
    request.add_entries()->set_body("poison again");
    request.mutable_entries(0)->set_dedup_id("once");
    Reply<weir::v1::SendResponse> dup = client.Send(request);
    ASSERT_TRUE(dup.ok());
    EXPECT_EQ(dup.response.offsets(0), first_offset);
  }
  (*server)->Kill();
  ASSERT_TRUE((*server)->Restart().ok());
  TestClient client((*server)->Channel());
  Reply<weir::v1::ReceiveResponse> none = client.Receive("crash", 1, 0);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none.response.messages_size(), 0);
  Reply<weir::v1::ReceiveResponse> dead = client.Receive("crash-dlq", 10, 0);
  ASSERT_TRUE(dead.ok());
  ASSERT_EQ(dead.response.messages_size(), 1);
  EXPECT_EQ(dead.response.messages(0).attributes().at("weir.receive_count"),
            "2");
}

}  // namespace
}  // namespace weir::test
