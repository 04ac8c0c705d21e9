// Subscribe over gRPC against the real server: push on arrival, exact
// credit, deletes/extends/releases on the stream, leases released when a
// stream ends, and streams of random requests.
#include <atomic>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/e2e_fixture.h"
#include "tests/rpc_helpers.h"
#include "tests/server_process.h"
#include "tests/test_random.h"
#include "weir/v1/weir.grpc.pb.h"

namespace weir::test {
namespace {

using ::grpc::StatusCode;
using ::weir::v1::SubscribeRequest;
using ::weir::v1::SubscribeResponse;

// One Subscribe stream, driven synchronously. Every read has the stream's
// deadline (generous) as its bound, so a broken server fails the test
// instead of hanging it.
class Stream {
 public:
  explicit Stream(weir::v1::Weir::Stub& stub,
                  absl::Duration deadline = absl::Seconds(120)) {
    context_.set_deadline(absl::ToChronoTime(absl::Now() + deadline));
    stream_ = stub.Subscribe(&context_);
  }

  bool Start(const std::string& queue, int credit,
             std::optional<int64_t> visibility_timeout_ms = kLongLeaseMs,
             const std::string& group = "") {
    SubscribeRequest req;
    req.mutable_start()->set_queue(queue);
    req.mutable_start()->set_group(group);
    if (visibility_timeout_ms.has_value()) {
      req.mutable_start()->set_visibility_timeout_ms(*visibility_timeout_ms);
    }
    req.set_credit(credit);
    return stream_->Write(req);
  }

  bool Write(const SubscribeRequest& req) { return stream_->Write(req); }

  bool Credit(int n) {
    SubscribeRequest req;
    req.set_credit(n);
    return stream_->Write(req);
  }

  // Reads responses until `n` messages have come; acks read meanwhile are
  // kept for Ack().
  std::vector<weir::v1::Message> Messages(size_t n) {
    std::vector<weir::v1::Message> out;
    while (out.size() < n) {
      SubscribeResponse resp;
      if (!stream_->Read(&resp)) break;
      for (const auto& m : resp.messages()) out.push_back(m);
      if (resp.has_ack()) acks_.push_back(resp.ack());
    }
    EXPECT_EQ(out.size(), n) << "messages pushed on the stream";
    return out;
  }

  // The messages of the next response that has any; empty once the stream
  // ended.
  std::vector<weir::v1::Message> Next() {
    SubscribeResponse resp;
    while (stream_->Read(&resp)) {
      if (resp.has_ack()) acks_.push_back(resp.ack());
      if (resp.messages_size() > 0) {
        return {resp.messages().begin(), resp.messages().end()};
      }
    }
    return {};
  }

  // The next ack (reading past pushed messages, which are kept).
  weir::v1::SubscribeAck Ack() {
    while (acks_.empty()) {
      SubscribeResponse resp;
      if (!stream_->Read(&resp)) {
        ADD_FAILURE() << "stream ended before an ack";
        return {};
      }
      for (const auto& m : resp.messages()) extra_.push_back(m);
      if (resp.has_ack()) acks_.push_back(resp.ack());
    }
    weir::v1::SubscribeAck ack = acks_.front();
    acks_.erase(acks_.begin());
    return ack;
  }

  // For a test that reads on a thread of its own while it writes.
  bool Read(SubscribeResponse* resp) { return stream_->Read(resp); }
  void WritesDone() { stream_->WritesDone(); }

  // Half-closes and waits for the stream's status, reading what is left.
  grpc::Status Close() {
    stream_->WritesDone();
    return Finish();
  }

  grpc::Status Finish() {
    SubscribeResponse resp;
    while (stream_->Read(&resp)) {
      for (const auto& m : resp.messages()) extra_.push_back(m);
    }
    return stream_->Finish();
  }

  void Cancel() { context_.TryCancel(); }

  const std::vector<weir::v1::Message>& extra() const { return extra_; }

 private:
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<SubscribeRequest, SubscribeResponse>>
      stream_;
  std::vector<weir::v1::SubscribeAck> acks_;
  std::vector<weir::v1::Message> extra_;
};

class SubscribeE2ETest : public E2ETest {
 protected:
  std::unique_ptr<Stream> NewStream() {
    return std::make_unique<Stream>(client().stub());
  }

  // The random-streams test below.
  void RandomStreams();

  // Leases what is ready now without waiting.
  std::vector<weir::v1::Message> TakeReady(const std::string& queue) {
    Reply<weir::v1::ReceiveResponse> got =
        client().Receive(queue, kMaxBatch, kLongLeaseMs, 0);
    EXPECT_TRUE(got.ok()) << Describe(got.status);
    return {got.response.messages().begin(), got.response.messages().end()};
  }
};

std::vector<std::string> Bodies(const std::vector<weir::v1::Message>& ms) {
  std::vector<std::string> out;
  for (const auto& m : ms) out.push_back(m.body());
  return out;
}

TEST_F(SubscribeE2ETest, PushesOnArrivalAndRespectsCreditExactly) {
  const std::string q = NewQueue("sub-push");
  auto s = NewStream();
  ASSERT_TRUE(s->Start(q, 2));
  SendOk(q, {"a"});
  EXPECT_EQ(Bodies(s->Messages(1)), std::vector<std::string>{"a"});
  SendOk(q, {"b", "c", "d"});
  EXPECT_EQ(Bodies(s->Messages(1)), std::vector<std::string>{"b"});
  // Credit used up: the rest is left for others.
  EXPECT_EQ(Bodies(TakeReady(q)), (std::vector<std::string>{"c", "d"}));
  SendOk(q, {"e"});
  ASSERT_TRUE(s->Credit(1));
  EXPECT_EQ(Bodies(s->Messages(1)), std::vector<std::string>{"e"});
  EXPECT_TRUE(s->Close().ok());
}

TEST_F(SubscribeE2ETest, DeletesExtendsAndReleasesOnTheStream) {
  const std::string q = NewQueue("sub-ops");
  SendOk(q, {"a", "b", "c"});
  auto s = NewStream();
  ASSERT_TRUE(s->Start(q, 3, /*visibility_timeout_ms=*/kLongLeaseMs));
  std::vector<weir::v1::Message> got = s->Messages(3);
  ASSERT_EQ(got.size(), 3u);

  SubscribeRequest req;
  req.set_request_id(7);
  req.add_delete_receipt_handles(got[0].receipt_handle());
  req.add_delete_receipt_handles("not a receipt");
  auto* ext = req.add_extend();
  ext->set_receipt_handle(got[1].receipt_handle());
  ext->set_visibility_timeout_ms(kLongLeaseMs);
  auto* rel = req.add_release();
  rel->set_receipt_handle(got[2].receipt_handle());
  rel->set_visibility_timeout_ms(0);
  ASSERT_TRUE(s->Write(req));
  weir::v1::SubscribeAck ack = s->Ack();
  EXPECT_EQ(ack.request_id(), 7u);
  ASSERT_EQ(ack.delete_results_size(), 2);
  EXPECT_EQ(ack.delete_results(0).code(), kCodeOk);
  EXPECT_EQ(ack.delete_results(1).code(), kCodeInvalidArgument);
  ASSERT_EQ(ack.extend_results_size(), 1);
  EXPECT_EQ(ack.extend_results(0).code(), kCodeOk);
  ASSERT_EQ(ack.release_results_size(), 1);
  EXPECT_EQ(ack.release_results(0).code(), kCodeOk);

  EXPECT_EQ(Bodies(TakeReady(q)), std::vector<std::string>{"c"});
  QueueStats stats = Stats(q);
  EXPECT_EQ(stats.deleted_total(), 1u);
  EXPECT_EQ(stats.in_flight(), 2u);
  EXPECT_TRUE(s->Close().ok());
}

TEST_F(SubscribeE2ETest, CancelledStreamReleasesItsLeasesAtOnce) {
  const std::string q = NewQueue("sub-cancel");
  SendOk(q, {"a", "b"});
  auto s = NewStream();
  ASSERT_TRUE(s->Start(q, 10, kLongLeaseMs));
  ASSERT_EQ(s->Messages(2).size(), 2u);
  s->Cancel();
  EXPECT_EQ(s->Finish().error_code(), StatusCode::CANCELLED);
  // Leased for ten minutes, yet back within a long poll.
  std::vector<Message> again = ReceiveCount(q, 2, kLongLeaseMs);
  EXPECT_EQ(Bodies(again), (std::vector<std::string>{"a", "b"}));
  for (const Message& m : again) EXPECT_EQ(m.receive_count(), 2u);
}

TEST_F(SubscribeE2ETest, HalfClosedStreamEndsOkAndReleasesItsLeases) {
  const std::string q = NewQueue("sub-close");
  SendOk(q, {"a"});
  auto s = NewStream();
  ASSERT_TRUE(s->Start(q, 1, kLongLeaseMs));
  ASSERT_EQ(s->Messages(1).size(), 1u);
  EXPECT_TRUE(s->Close().ok());
  EXPECT_EQ(Bodies(ReceiveCount(q, 1, kLongLeaseMs)),
            std::vector<std::string>{"a"});
}

// The way `weirctl tail -n N --delete` ends: delete, read the ack, then
// half-close and cancel at once. The server answers the ack from an engine
// thread and starts its next read from there while the cancel finishes the
// stream on a gRPC thread; done many times over on several streams at once,
// the server must keep serving (a read started on a finished stream would
// bring it down).
TEST_F(SubscribeE2ETest, CancelRightAfterAnAckLeavesTheServerServing) {
  const std::string q = NewQueue("sub-ack-cancel");
  constexpr int kThreads = 4;
  constexpr int kRounds = 50;
  std::vector<std::string> bodies(kThreads * kRounds, "m");
  SendOk(q, bodies);
  std::atomic<int> deleted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kRounds; ++i) {
        auto s = NewStream();
        if (!s->Start(q, 1, kLongLeaseMs)) return;
        std::vector<weir::v1::Message> got = s->Messages(1);
        if (got.size() != 1) return;
        SubscribeRequest req;
        req.set_request_id(1);
        req.add_delete_receipt_handles(got[0].receipt_handle());
        if (!s->Write(req)) return;
        weir::v1::SubscribeAck ack = s->Ack();
        if (ack.delete_results_size() == 1 &&
            ack.delete_results(0).code() == kCodeOk) {
          ++deleted;
        }
        s->Cancel();
        s->Finish();
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(deleted.load(), kThreads * kRounds);
  // A crashed server fails this call.
  QueueStats stats = Stats(q);
  EXPECT_EQ(stats.deleted_total(), static_cast<uint64_t>(kThreads * kRounds));
  EXPECT_EQ(stats.in_flight(), 0u);
}

TEST_F(SubscribeE2ETest, OneGroupSharesTwoGroupsBothGetEverything) {
  const std::string q = NewQueue("sub-groups");
  ASSERT_TRUE(client().CreateGroup(q, "audit", Earliest()).ok());
  constexpr int kCount = 300;
  auto a = NewStream();
  auto b = NewStream();
  auto audit = NewStream();
  ASSERT_TRUE(a->Start(q, kCount));
  ASSERT_TRUE(b->Start(q, kCount));
  ASSERT_TRUE(audit->Start(q, kCount, kLongLeaseMs, "audit"));
  std::vector<std::string> bodies;
  for (int i = 0; i < kCount; ++i) bodies.push_back(absl::StrCat("m", i));
  for (int i = 0; i < kCount; i += 30) {
    SendOk(q, std::vector<std::string>(bodies.begin() + i,
                                       bodies.begin() + i + 30));
  }
  EXPECT_EQ(Bodies(audit->Messages(kCount)), bodies);
  // The default group's two streams, read side by side until they have
  // every message between them.
  absl::Mutex mu;
  std::vector<uint64_t> offsets;
  auto read = [&](Stream* s) {
    for (;;) {
      std::vector<weir::v1::Message> got = s->Next();
      if (got.empty()) return;  // Cancelled.
      absl::MutexLock lock(&mu);
      for (const auto& m : got) offsets.push_back(m.offset());
    }
  };
  std::thread ta(read, a.get()), tb(read, b.get());
  {
    absl::MutexLock lock(&mu);
    auto all = [&] { return offsets.size() >= static_cast<size_t>(kCount); };
    EXPECT_TRUE(mu.AwaitWithTimeout(absl::Condition(&all), absl::Seconds(60)));
  }
  a->Cancel();
  b->Cancel();
  ta.join();
  tb.join();
  absl::MutexLock lock(&mu);
  EXPECT_EQ(offsets.size(), static_cast<size_t>(kCount));
  EXPECT_EQ(std::set<uint64_t>(offsets.begin(), offsets.end()).size(),
            static_cast<size_t>(kCount));
  EXPECT_TRUE(audit->Close().ok());
}

TEST_F(SubscribeE2ETest, BadRequestsEndTheStreamWithAClearStatus) {
  const std::string q = NewQueue("sub-bad");
  {
    Stream s(client().stub());
    ASSERT_TRUE(s.Credit(1));
    EXPECT_EQ(s.Finish().error_code(), StatusCode::INVALID_ARGUMENT);
  }
  {
    Stream s(client().stub());
    ASSERT_TRUE(s.Start("no-such-queue", 1));
    EXPECT_EQ(s.Finish().error_code(), StatusCode::NOT_FOUND);
  }
  {
    Stream s(client().stub());
    ASSERT_TRUE(s.Start(q, 1, kLongLeaseMs, "no-such-group"));
    EXPECT_EQ(s.Finish().error_code(), StatusCode::NOT_FOUND);
  }
  {
    Stream s(client().stub());
    ASSERT_TRUE(s.Start(q, 1, /*visibility_timeout_ms=*/0));
    EXPECT_EQ(s.Finish().error_code(), StatusCode::INVALID_ARGUMENT);
  }
  {
    Stream s(client().stub());
    ASSERT_TRUE(s.Start(q, -1));
    EXPECT_EQ(s.Finish().error_code(), StatusCode::INVALID_ARGUMENT);
  }
  {
    Stream s(client().stub());
    ASSERT_TRUE(s.Start(q, 10000));
    s.Credit(1);
    EXPECT_EQ(s.Finish().error_code(), StatusCode::INVALID_ARGUMENT);
  }
  {
    Stream s(client().stub());
    ASSERT_TRUE(s.Start(q, 0));
    SubscribeRequest again;
    again.mutable_start()->set_queue(q);
    s.Write(again);
    EXPECT_EQ(s.Finish().error_code(), StatusCode::INVALID_ARGUMENT);
  }
  {
    Stream s(client().stub());
    ASSERT_TRUE(s.Start(q, 0));
    SubscribeRequest big;
    for (int i = 0; i <= kMaxBatch; ++i) big.add_delete_receipt_handles("x");
    s.Write(big);
    EXPECT_EQ(s.Finish().error_code(), StatusCode::INVALID_ARGUMENT);
  }
  // Nothing was taken, and the server still serves.
  SendOk(q, {"fine"});
  EXPECT_EQ(Bodies(TakeReady(q)), std::vector<std::string>{"fine"});
}

// A delete sent just before a request that breaks the protocol took effect,
// and its ack reaches the client before the stream's status even though it
// was queued behind pushed messages the client had not read yet (the end
// drops those messages, not the ack).
TEST_F(SubscribeE2ETest, AnAckQueuedBehindPushesOutlivesAProtocolError) {
  QueueConfig config;
  config.set_max_message_bytes(4 << 20);
  const std::string q = NewQueue("sub-ack-end", config);
  SendOk(q, {"outside"});
  const std::vector<Message> outside = ReceiveCount(q, 1, kLongLeaseMs);
  ASSERT_EQ(outside.size(), 1u);
  constexpr int kBig = 16;
  for (int i = 0; i < kBig / 4; ++i) {
    SendOk(q, std::vector<std::string>(4, std::string(3 << 20, 'b')));
  }
  // A connection of its own whose windows stay small (no BDP probing): a
  // push the client does not read stays in progress in the server.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  args.SetInt(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, 8 << 20);
  std::unique_ptr<weir::v1::Weir::Stub> stub =
      weir::v1::Weir::NewStub(grpc::CreateCustomChannel(
          server().address(), grpc::InsecureChannelCredentials(), args));
  auto s = std::make_unique<Stream>(*stub);
  ASSERT_TRUE(s->Start(q, kBig, kLongLeaseMs));
  // A batch holds two of these, pushed one per response: once the first is
  // read, the second is being written, and stays so while the client does
  // not read.
  ASSERT_EQ(s->Next().size(), 1u);
  SubscribeRequest del;
  del.set_request_id(7);
  del.add_delete_receipt_handles(outside[0].receipt_handle());
  ASSERT_TRUE(s->Write(del));
  ASSERT_TRUE(AwaitStats(
      q, [](const QueueStats& st) { return st.deleted_total() == 1; }));
  SubscribeRequest bad;
  bad.set_credit(-1);
  ASSERT_TRUE(s->Write(bad));
  // The end released what the stream held, read or not.
  ASSERT_TRUE(
      AwaitStats(q, [](const QueueStats& st) { return st.in_flight() == 0; }));
  const weir::v1::SubscribeAck ack = s->Ack();
  EXPECT_EQ(ack.request_id(), 7u);
  ASSERT_EQ(ack.delete_results_size(), 1);
  EXPECT_EQ(ack.delete_results(0).code(), 0);
  EXPECT_EQ(s->Finish().error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(ReceiveCount(q, kBig, kLongLeaseMs).size(),
            static_cast<size_t>(kBig));
}

// Streams of random requests, valid and not: credit in and out of range,
// starts where they do not belong, deletes, extends and releases of
// receipts leased outside the stream, of the stream's own (pushed to it
// while it runs) and of made-up ones, with timeouts in and out of range.
// Every stream ends with a status a client can act on, every ack answers a
// request entry by entry, no made-up receipt is acted on, and afterwards
// every message is either deleted (by a delete that said so), released
// for longer than the test waits, or delivered again: none lost, none
// twice.
void SubscribeE2ETest::RandomStreams() {
  // Leases taken without a timeout of their own last ten minutes: they
  // come back within the test only when a stream's end releases them.
  QueueConfig config;
  config.set_visibility_timeout_ms(kLongLeaseMs);
  const std::string q = NewQueue("sub-random", config);
  constexpr int kMessages = 40;
  std::vector<std::string> all;
  for (int i = 0; i < kMessages; ++i) all.push_back(absl::StrCat("m", i));
  SendOk(q, all);
  // Every receipt handed out, to the test or to a stream, and its body.
  std::map<std::string, std::string> body_of;
  std::vector<std::string> outside;  // Leased outside any stream.
  for (const weir::v1::Message& m : ReceiveCount(q, 8, kLongLeaseMs)) {
    body_of[m.receipt_handle()] = m.body();
    outside.push_back(m.receipt_handle());
  }
  ASSERT_EQ(outside.size(), 8u);

  const uint32_t seed = SeedFrom("WEIR_RANDOM_SUBSCRIBE_SEED");
  SCOPED_TRACE(absl::StrCat("replay with WEIR_RANDOM_SUBSCRIBE_SEED=", seed));
  TestRandom random(seed);
  const std::vector<int> credits = {0, 0, 1, 2, 5, 16};
  const std::vector<int> wild_credits = {-3, -1, 10000, 10001};
  // A release for longer than kFarMs keeps its message out of the drain.
  constexpr int64_t kFarMs = 10'000;
  const std::vector<int64_t> timeouts = {0, 1, 200, 500, 2000};
  const std::vector<int64_t> wild_timeouts = {-1, 0, 1, 43'200'000, 43'200'001};
  const std::vector<std::string> made_up = {
      "", "x", "#0", std::string(300, 'r'), "AAAAAAAAAAAAAAAAAAAAAAAA"};
  const std::set<StatusCode> clean = {
      StatusCode::OK, StatusCode::INVALID_ARGUMENT, StatusCode::NOT_FOUND,
      StatusCode::FAILED_PRECONDITION, StatusCode::OUT_OF_RANGE};
  auto timeout = [&] {
    return random.Chance(0.95) ? random.Pick(timeouts)
                               : random.Pick(wild_timeouts);
  };

  std::set<std::string> deleted;
  // Whether the last change that took effect on a message keeps it out of
  // the drain (a long release or extension).
  std::map<std::string, bool> far;
  // What took effect on each body, for the message of a failure.
  std::map<std::string, std::string> history;
  std::map<StatusCode, int> endings;
  int acks = 0;
  int own_acted_on = 0;
  for (int n = 0; n < 60; ++n) {
    SCOPED_TRACE(absl::StrCat("stream ", n));
    Stream s(client().stub());
    // What the server pushes, read while the requests go out.
    absl::Mutex mu;
    std::vector<weir::v1::Message> pushed;
    std::vector<weir::v1::SubscribeAck> stream_acks;
    bool ended = false;
    std::thread reader([&] {
      SubscribeResponse resp;
      while (s.Read(&resp)) {
        absl::MutexLock lock(&mu);
        for (const auto& m : resp.messages()) pushed.push_back(m);
        if (resp.has_ack()) stream_acks.push_back(resp.ack());
      }
      absl::MutexLock lock(&mu);
      ended = true;
    });
    auto receipt = [&]() -> std::string {
      const double r = random.Between(0, 99) / 100.0;
      if (r < 0.4) {
        absl::MutexLock lock(&mu);
        if (!pushed.empty()) {
          return pushed[random.Between(0, pushed.size() - 1)].receipt_handle();
        }
      }
      return r < 0.7 ? random.Pick(outside) : random.Pick(made_up);
    };
    // What each request with entries asked for, by request id.
    std::map<uint64_t, SubscribeRequest> asked;
    uint64_t next_id = 0;
    const int requests = random.Between(1, 7);
    for (int r = 0; r < requests; ++r) {
      SubscribeRequest req;
      if (r == 0 ? random.Chance(0.92) : random.Chance(0.03)) {
        req.mutable_start()->set_queue(random.Chance(0.95) ? q
                                                           : "no-such-queue");
        if (random.Chance(0.05))
          req.mutable_start()->set_group("no-such-group");
        if (random.Chance(0.7)) {
          req.mutable_start()->set_visibility_timeout_ms(timeout() + 1);
        }
      }
      req.set_credit(random.Chance(0.95) ? random.Pick(credits)
                                         : random.Pick(wild_credits));
      const int entries = random.Between(0, 3);
      for (int e = 0; e < entries; ++e) {
        switch (random.Between(0, 2)) {
          case 0:
            req.add_delete_receipt_handles(receipt());
            break;
          case 1: {
            weir::v1::VisibilityChange* c = req.add_extend();
            c->set_receipt_handle(receipt());
            c->set_visibility_timeout_ms(timeout());
            break;
          }
          default: {
            weir::v1::VisibilityChange* c = req.add_release();
            c->set_receipt_handle(receipt());
            c->set_visibility_timeout_ms(timeout());
            break;
          }
        }
      }
      if (entries > 0) {
        req.set_request_id(++next_id);
        asked[next_id] = req;
      }
      if (!s.Write(req)) break;  // The server ended the stream.
      if (r == 0) {
        // Let the first pushes arrive (if any are coming), so that later
        // requests can name the stream's own receipts. Coverage only: the
        // checks below hold however long this takes.
        absl::MutexLock lock(&mu);
        auto arrived = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
          return !pushed.empty() || ended;
        };
        mu.AwaitWithTimeout(absl::Condition(&arrived), absl::Milliseconds(200));
      }
    }
    s.WritesDone();
    reader.join();
    const grpc::Status status = s.Finish();
    EXPECT_TRUE(clean.count(status.error_code()) > 0)
        << "stream ended with " << status.error_code() << ": "
        << status.error_message();
    ++endings[status.error_code()];
    acks += static_cast<int>(stream_acks.size());
    std::set<std::string> own;
    std::set<std::string> let_go;  // Own leases this stream released.
    for (const weir::v1::Message& m : pushed) {
      body_of[m.receipt_handle()] = m.body();
      own.insert(m.receipt_handle());
      absl::StrAppend(&history[m.body()], " pushed to stream ", n, ";");
    }
    absl::StrAppend(&history["(endings)"], " stream ", n, " ended ",
                    status.error_code(), ";");
    auto note = [&](const std::string& receipt, const char* what, int code) {
      auto body = body_of.find(receipt);
      if (body == body_of.end() || code == 0) return;
      absl::StrAppend(&history[body->second], " stream ", n, " ", what,
                      " refused (", code, ");");
    };
    for (const weir::v1::SubscribeAck& ack : stream_acks) {
      auto it = asked.find(ack.request_id());
      if (it == asked.end()) continue;
      for (int i = 0; i < ack.delete_results_size() &&
                      i < it->second.delete_receipt_handles_size();
           ++i) {
        note(it->second.delete_receipt_handles(i), "delete",
             ack.delete_results(i).code());
      }
      for (int i = 0;
           i < ack.extend_results_size() && i < it->second.extend_size(); ++i) {
        note(it->second.extend(i).receipt_handle(), "extend",
             ack.extend_results(i).code());
      }
      for (int i = 0;
           i < ack.release_results_size() && i < it->second.release_size();
           ++i) {
        note(it->second.release(i).receipt_handle(), "release",
             ack.release_results(i).code());
      }
    }
    // The body of a receipt that an entry acted on; fails for a made-up one.
    auto acted_on = [&](const std::string& receipt, const char* what,
                        int64_t timeout_ms) {
      auto body = body_of.find(receipt);
      EXPECT_NE(body, body_of.end())
          << "a made-up receipt was " << what << ": \"" << receipt << "\"";
      if (body == body_of.end()) return std::string();
      const bool is_own = own.count(receipt) > 0;
      if (is_own) ++own_acted_on;
      absl::StrAppend(&history[body->second], " stream ", n, " ", what, " (",
                      is_own ? "its own" : "not its own", " lease, ",
                      timeout_ms, " ms);");
      return body->second;
    };
    for (const weir::v1::SubscribeAck& ack : stream_acks) {
      auto it = asked.find(ack.request_id());
      ASSERT_NE(it, asked.end()) << "ack of request " << ack.request_id();
      const SubscribeRequest& req = it->second;
      ASSERT_EQ(ack.delete_results_size(), req.delete_receipt_handles_size());
      ASSERT_EQ(ack.extend_results_size(), req.extend_size());
      ASSERT_EQ(ack.release_results_size(), req.release_size());
      for (int i = 0; i < ack.delete_results_size(); ++i) {
        if (ack.delete_results(i).code() != 0) continue;
        deleted.insert(acted_on(req.delete_receipt_handles(i), "deleted", 0));
      }
      // The last change that took effect on a message decides whether it
      // is kept out of the drain: an extension of a lease the stream still
      // holds ends with the stream's end (which releases it), any other
      // change lasts its timeout.
      for (int i = 0; i < ack.extend_results_size(); ++i) {
        if (ack.extend_results(i).code() != 0) continue;
        const std::string& receipt = req.extend(i).receipt_handle();
        const int64_t ms = req.extend(i).visibility_timeout_ms();
        const std::string body = acted_on(receipt, "extended", ms);
        const bool held = own.count(receipt) > 0 && !let_go.count(receipt);
        far[body] = !held && ms > kFarMs;
      }
      for (int i = 0; i < ack.release_results_size(); ++i) {
        if (ack.release_results(i).code() != 0) continue;
        const std::string& receipt = req.release(i).receipt_handle();
        const int64_t ms = req.release(i).visibility_timeout_ms();
        const std::string body = acted_on(receipt, "released", ms);
        let_go.insert(receipt);
        far[body] = ms > kFarMs;
      }
    }
  }
  std::set<std::string> released_far;
  for (const auto& [body, is_far] : far) {
    if (is_far) released_far.insert(body);
  }

  std::cout << "seed " << seed << ": streams ended";
  for (const auto& [code, count] : endings) {
    std::cout << " " << count << "x code " << code;
  }
  std::cout << "; " << acks << " acks; " << own_acted_on
            << " entries on the streams' own receipts took effect; "
            << deleted.size() << " deleted, " << released_far.size()
            << " released far by the streams" << std::endl;

  // The receipts leased outside the streams, where still valid, are
  // deleted now.
  Reply<weir::v1::DeleteResponse> ours = client().Delete(q, outside);
  ASSERT_TRUE(ours.ok()) << Describe(ours.status);
  ASSERT_EQ(ours.response.results_size(), static_cast<int>(outside.size()));
  for (size_t i = 0; i < outside.size(); ++i) {
    if (ours.response.results(i).code() == 0) {
      deleted.insert(body_of[outside[i]]);
    }
  }
  // Everything else comes back: whatever the streams held was released
  // when they ended, and the other releases were short.
  std::set<std::string> drained;
  // A message released far may have been deleted afterwards under the same
  // receipt (a release leaves the receipt valid): it counts once.
  std::set<std::string> gone = deleted;
  gone.insert(released_far.begin(), released_far.end());
  const int expected = kMessages - static_cast<int>(gone.size());
  for (const weir::v1::Message& m : ReceiveCount(q, expected, kLongLeaseMs)) {
    EXPECT_TRUE(drained.insert(m.body()).second) << m.body() << " twice";
    EXPECT_EQ(deleted.count(m.body()), 0u) << m.body() << " was deleted";
    EXPECT_EQ(released_far.count(m.body()), 0u)
        << m.body() << " came back before its release ended";
  }
  Reply<weir::v1::ReceiveResponse> more =
      client().Receive(q, kMaxBatch, kLongLeaseMs, /*wait_time_ms=*/3000);
  ASSERT_TRUE(more.ok()) << Describe(more.status);
  EXPECT_EQ(more.response.messages_size(), 0);
  for (const weir::v1::Message& m : more.response.messages()) {
    std::cout << "came back after the drain: " << m.body() << std::endl;
  }
  std::set<std::string> accounted = gone;
  accounted.insert(drained.begin(), drained.end());
  if (accounted.size() != all.size()) {
    const QueueStats stats = Stats(q);
    std::cout << "missing messages; the queue has " << stats.ready()
              << " ready, " << stats.in_flight() << " in flight, "
              << stats.delayed() << " delayed" << std::endl;
  }
  for (const std::string& body : all) {
    EXPECT_EQ(accounted.count(body), 1u)
        << body << " is missing; what took effect on it:" << history[body];
  }
}

// Timing varies from run to run; to look for rare failures run it with
// `--test_arg=--gtest_filter=*RandomStreams* --runs_per_test=64`.
TEST_F(SubscribeE2ETest, RandomStreamsEndCleanlyAndLoseNothing) {
  RandomStreams();
}

// The server's thread count, from /proc.
int ServerThreads(pid_t pid) {
  std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(status, line)) {
    absl::string_view v = line;
    if (absl::ConsumePrefix(&v, "Threads:")) {
      int n = 0;
      if (absl::SimpleAtoi(absl::StripAsciiWhitespace(v), &n)) return n;
    }
  }
  return -1;
}

TEST_F(SubscribeE2ETest, ThousandsOfIdleStreamsHoldNoThreads) {
  const std::string q = NewQueue("sub-idle");
  ASSERT_TRUE(client().CreateGroup(q, "idle", Latest()).ok());
  const int before = ServerThreads(server().pid());
  ASSERT_GT(before, 0);
  constexpr int kStreams = 2000;
  std::vector<std::unique_ptr<Stream>> idle;
  for (int i = 0; i < kStreams; ++i) {
    idle.push_back(NewStream());
    ASSERT_TRUE(idle.back()->Start(q, 1, kLongLeaseMs, "idle"));
  }
  // Amid them, a stream of the default group still gets pushed at once.
  auto probe = NewStream();
  ASSERT_TRUE(probe->Start(q, 1));
  SendOk(q, {"one"});
  EXPECT_EQ(Bodies(probe->Messages(1)), std::vector<std::string>{"one"});
  const int during = ServerThreads(server().pid());
  EXPECT_LT(during, before + 100)
      << kStreams << " idle streams took " << during - before << " threads";
  for (auto& s : idle) s->Cancel();
  for (auto& s : idle) s->Finish();
  EXPECT_TRUE(probe->Close().ok());
  // Whichever idle stream took the group's copy gave it back when it ended.
  Reply<weir::v1::ReceiveResponse> got =
      client().ReceiveFromGroup(q, "idle", 10, kLongLeaseMs, 10'000);
  ASSERT_TRUE(got.ok()) << Describe(got.status);
  ASSERT_EQ(got.response.messages_size(), 1);
  EXPECT_EQ(got.response.messages(0).body(), "one");
}

// A server of its own: shutting down ends streams with UNAVAILABLE and
// releases their leases first.
TEST(SubscribeShutdownTest, ShutdownEndsStreamsAndReleasesTheirLeases) {
  absl::StatusOr<std::unique_ptr<ServerProcess>> server =
      ServerProcess::Start();
  ASSERT_TRUE(server.ok()) << server.status();
  {
    TestClient client((*server)->Channel());
    ASSERT_TRUE(client.CreateQueue("q").ok());
    ASSERT_TRUE(client.SendBodies("q", {"held"}).ok());
    Stream s(client.stub());
    ASSERT_TRUE(s.Start("q", 1, kLongLeaseMs));
    ASSERT_EQ(s.Messages(1).size(), 1u);
    absl::StatusOr<int> code = (*server)->Stop();
    ASSERT_TRUE(code.ok()) << code.status();
    EXPECT_EQ(*code, 0);
    EXPECT_EQ(s.Finish().error_code(), StatusCode::UNAVAILABLE);
  }
  ASSERT_TRUE((*server)->Restart().ok());
  TestClient client((*server)->Channel());
  Reply<weir::v1::ReceiveResponse> got = client.Receive("q", 10, 1000, 0);
  ASSERT_TRUE(got.ok()) << Describe(got.status);
  ASSERT_EQ(got.response.messages_size(), 1);
  EXPECT_EQ(got.response.messages(0).body(), "held");
}

}  // namespace
}  // namespace weir::test
