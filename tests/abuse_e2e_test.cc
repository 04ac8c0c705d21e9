// Abuse over gRPC against the real weir_server: many queues, a crowd of
// long-polling consumers, oversized messages, batches of garbage receipts,
// hostile queue names and clients that give up mid-call. Each case checks
// the status the server answers with, and after each one the server must
// still serve a plain Send / Receive / Delete.
//
// WEIR_ABUSE_LONG_POLLS sets the size of the long-polling crowd (default
// 100,000).
#include <dirent.h>
#include <sys/stat.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <iostream>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "gtest/gtest.h"
#include "tests/e2e_fixture.h"
#include "tests/rpc_helpers.h"
#include "tests/server_process.h"
#include "weir/v1/weir.grpc.pb.h"
#include "weir/v1/weir.pb.h"

namespace weir::test {
namespace {

using ::grpc::StatusCode;
using ::weir::v1::ListQueuesRequest;
using ::weir::v1::Message;
using ::weir::v1::QueueConfig;
using ::weir::v1::ReceiveRequest;
using ::weir::v1::SendRequest;

constexpr int kManyQueues = 10'000;
constexpr int kDefaultLongPolls = 100'000;
// Long polls per channel (one HTTP/2 connection each).
constexpr int kPollsPerChannel = 2'000;

// Every entry of a directory tree below `root`, as paths relative to it.
std::set<std::string> ListTree(const std::string& root,
                               const std::string& relative = "") {
  std::set<std::string> out;
  const std::string dir = relative.empty() ? root : root + "/" + relative;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return out;
  while (struct dirent* e = readdir(d)) {
    const std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    const std::string rel = relative.empty() ? name : relative + "/" + name;
    out.insert(rel);
    struct stat st;
    if (lstat((root + "/" + rel).c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
      std::set<std::string> below = ListTree(root, rel);
      out.insert(below.begin(), below.end());
    }
  }
  closedir(d);
  return out;
}

// RocksDB's own files: what the data directory may hold.
bool IsRocksDbFile(const std::string& name) {
  for (const char* prefix :
       {"CURRENT", "IDENTITY", "LOCK", "LOG", "MANIFEST-", "OPTIONS-"}) {
    if (absl::StartsWith(name, prefix)) return true;
  }
  return absl::EndsWith(name, ".sst") || absl::EndsWith(name, ".log") ||
         absl::EndsWith(name, ".dbtmp") || absl::EndsWith(name, ".blob");
}

class AbuseTest : public E2ETest {
 protected:
  // The names of every queue on the server.
  std::set<std::string> QueueNames() {
    std::set<std::string> names;
    ListQueuesRequest request;
    do {
      Reply<weir::v1::ListQueuesResponse> r = client().ListQueues(request);
      EXPECT_TRUE(r.ok()) << Describe(r.status);
      if (!r.ok()) break;
      for (const weir::v1::Queue& q : r.response.queues()) {
        names.insert(q.name());
      }
      request.set_page_token(r.response.next_page_token());
    } while (!request.page_token().empty());
    return names;
  }

  // The server still serves ordinary calls: a Send, a Receive of it and a
  // Delete, each within the usual deadline.
  void ExpectStillServing() {
    const std::string queue = NewQueue("canary");
    const std::string body = queue;  // Unique, as the queue's name is.
    std::vector<uint64_t> sent = SendOk(queue, {body});
    ASSERT_EQ(sent.size(), 1u);
    std::vector<Message> got = ReceiveCount(queue, 1, kLongLeaseMs);
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0].body(), body);
    Reply<weir::v1::DeleteResponse> deleted =
        client().Delete(queue, {got[0].receipt_handle()});
    ASSERT_TRUE(deleted.ok()) << Describe(deleted.status);
    EXPECT_TRUE(HasEntryCode(deleted.response.results(0), kCodeOk));
    ASSERT_TRUE(client().DeleteQueue(queue).ok());
  }
};

// 10,000 queues: created, listed page by page (every one exactly once, in
// name order), found by prefix, and deleted again.
TEST_F(AbuseTest, TenThousandQueuesCreateListAndDelete) {
  const std::string prefix = UniqueName("many") + "-";
  std::vector<std::string> names;
  for (int i = 0; i < kManyQueues; ++i) {
    names.push_back(absl::StrFormat("%s%05d", prefix, i));
  }
  // Four clients at once: creation is a synced write each.
  auto for_all = [&](auto fn) {
    std::vector<std::thread> threads;
    std::atomic<int> failures{0};
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        TestClient c(server().Channel());
        for (size_t i = t; i < names.size(); i += 4) {
          if (!fn(c, names[i])) failures.fetch_add(1);
        }
      });
    }
    for (std::thread& t : threads) t.join();
    return failures.load();
  };
  const absl::Time start = absl::Now();
  EXPECT_EQ(for_all([](TestClient& c, const std::string& name) {
              Reply<weir::v1::CreateQueueResponse> r = c.CreateQueue(name);
              return r.ok() && r.response.created();
            }),
            0);
  std::cerr << kManyQueues << " queues created in " << absl::Now() - start
            << std::endl;

  for (int page_size : {1000, 333, 0}) {
    std::vector<std::string> listed;
    ListQueuesRequest request;
    request.set_prefix(prefix);
    request.set_page_size(page_size);
    int pages = 0;
    do {
      Reply<weir::v1::ListQueuesResponse> r = client().ListQueues(request);
      ASSERT_TRUE(r.ok()) << Describe(r.status);
      EXPECT_LE(r.response.queues_size(), page_size == 0 ? 1000 : page_size);
      for (const weir::v1::Queue& q : r.response.queues()) {
        listed.push_back(q.name());
      }
      request.set_page_token(r.response.next_page_token());
      ASSERT_LT(++pages, kManyQueues) << "paging does not end";
    } while (!request.page_token().empty());
    EXPECT_EQ(listed, names) << "page size " << page_size;
    const int size = page_size == 0 ? 1000 : page_size;
    EXPECT_EQ(pages, (kManyQueues + size - 1) / size);
  }
  // A narrower prefix: 100 of them.
  ListQueuesRequest narrow;
  narrow.set_prefix(prefix + "042");
  Reply<weir::v1::ListQueuesResponse> r = client().ListQueues(narrow);
  ASSERT_TRUE(r.ok()) << Describe(r.status);
  EXPECT_EQ(r.response.queues_size(), 100);
  EXPECT_EQ(r.response.next_page_token(), "");
  ASSERT_NO_FATAL_FAILURE(ExpectStillServing());

  const absl::Time delete_start = absl::Now();
  EXPECT_EQ(for_all([](TestClient& c, const std::string& name) {
              return c.DeleteQueue(name).ok();
            }),
            0);
  std::cerr << kManyQueues << " queues deleted in "
            << absl::Now() - delete_start << std::endl;
  ListQueuesRequest after;
  after.set_prefix(prefix);
  r = client().ListQueues(after);
  ASSERT_TRUE(r.ok()) << Describe(r.status);
  EXPECT_EQ(r.response.queues_size(), 0);
  EXPECT_TRUE(
      HasCode(client().GetQueue(names[0]).status, StatusCode::NOT_FOUND));
  ASSERT_NO_FATAL_FAILURE(ExpectStillServing());
}

// A crowd of consumers long-polling one queue at once: each polls again
// when its poll ends empty, as a real consumer does (a poll waits at most
// 20 s, and on a loaded machine starting 100,000 calls can take longer than
// that). The server serves Receive with the callback API, so a parked poll
// holds no thread. While they wait, other calls are served; then a batch of
// sends wakes as many consumers, each getting a message of its own, and
// the rest end empty.
class LongPollCrowd {
 public:
  LongPollCrowd(std::vector<std::unique_ptr<weir::v1::Weir::Stub>>* stubs,
                std::string queue)
      : stubs_(*stubs), queue_(std::move(queue)) {}

  // Starts one consumer's poll on stub `stub`.
  void Poll(int stub) ABSL_LOCKS_EXCLUDED(mu_) {
    auto poll = std::make_unique<PollCall>();
    PollCall* p = poll.get();
    {
      absl::MutexLock lock(&mu_);
      calls_.push_back(std::move(poll));
      ++outstanding_;
      ++started_;
    }
    // No gRPC deadline: the wait time bounds each poll, and the test's own
    // wait bounds them all. (With a deadline each, gRPC keeps 100,000 timers
    // and starting the calls got slower still.)
    // A consumer whose connection is not up yet waits for it rather than
    // failing (50 connections open at once while 100,000 calls start).
    p->context.set_wait_for_ready(true);
    p->request.set_queue(queue_);
    p->request.set_max_messages(1);
    p->request.set_visibility_timeout_ms(kLongLeaseMs);
    p->request.set_wait_time_ms(kMaxWaitTimeMs);
    stubs_[stub]->async()->Receive(
        &p->context, &p->request, &p->response,
        [this, p, stub](grpc::Status s) { Done(p, stub, std::move(s)); });
  }

  // From now on a poll that ends is not started again.
  void StopPolling() {
    absl::MutexLock lock(&mu_);
    polling_ = false;
  }
  int Outstanding() {
    absl::MutexLock lock(&mu_);
    return outstanding_;
  }
  int Started() {
    absl::MutexLock lock(&mu_);
    return started_;
  }
  // Waits until `n` messages were delivered; false on timeout.
  bool AwaitDelivered(int n, absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto enough = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return static_cast<int>(offsets_.size()) + duplicates_ >= n;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&enough), timeout);
  }
  // Waits until no poll is outstanding; cancels them all on timeout.
  bool AwaitAllDone(absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto none = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return outstanding_ == 0;
    };
    if (mu_.AwaitWithTimeout(absl::Condition(&none), timeout)) return true;
    for (const auto& c : calls_) c->context.TryCancel();
    mu_.Await(absl::Condition(&none));
    return false;
  }

  std::set<uint64_t> offsets() {
    absl::MutexLock lock(&mu_);
    return offsets_;
  }
  int duplicates() {
    absl::MutexLock lock(&mu_);
    return duplicates_;
  }
  int failures() {
    absl::MutexLock lock(&mu_);
    return failures_;
  }
  std::string first_failure() {
    absl::MutexLock lock(&mu_);
    return first_failure_;
  }

 private:
  struct PollCall {
    grpc::ClientContext context;
    ReceiveRequest request;
    weir::v1::ReceiveResponse response;
  };

  void Done(PollCall* p, int stub, grpc::Status s) ABSL_LOCKS_EXCLUDED(mu_) {
    bool again = false;
    {
      absl::MutexLock lock(&mu_);
      --outstanding_;
      if (!s.ok()) {
        if (failures_++ == 0) first_failure_ = Describe(s);
      } else if (p->response.messages_size() > 0) {
        if (p->response.messages_size() > 1 ||
            !offsets_.insert(p->response.messages(0).offset()).second) {
          ++duplicates_;
        }
      } else {
        again = polling_;
      }
    }
    if (again) Poll(stub);
  }

  std::vector<std::unique_ptr<weir::v1::Weir::Stub>>& stubs_;
  const std::string queue_;
  absl::Mutex mu_;
  std::deque<std::unique_ptr<PollCall>> calls_ ABSL_GUARDED_BY(mu_);
  bool polling_ ABSL_GUARDED_BY(mu_) = true;
  int outstanding_ ABSL_GUARDED_BY(mu_) = 0;
  int started_ ABSL_GUARDED_BY(mu_) = 0;
  std::set<uint64_t> offsets_ ABSL_GUARDED_BY(mu_);
  int duplicates_ ABSL_GUARDED_BY(mu_) = 0;
  int failures_ ABSL_GUARDED_BY(mu_) = 0;
  std::string first_failure_ ABSL_GUARDED_BY(mu_);
};

TEST_F(AbuseTest, AHundredThousandLongPollsAtOnce) {
  int64_t polls_wanted = kDefaultLongPolls;
  if (const char* v = std::getenv("WEIR_ABUSE_LONG_POLLS")) {
    ASSERT_TRUE(absl::SimpleAtoi(v, &polls_wanted)) << v;
  }
  const int kConsumers = static_cast<int>(polls_wanted);
  constexpr int kMessages = 2'000;
  const std::string queue = NewQueue("crowd");

  std::vector<std::unique_ptr<weir::v1::Weir::Stub>> stubs;
  for (int i = 0; i < (kConsumers + kPollsPerChannel - 1) / kPollsPerChannel;
       ++i) {
    grpc::ChannelArguments args;
    // A connection of its own per channel.
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetInt("weir.test.channel", i);
    stubs.push_back(weir::v1::Weir::NewStub(grpc::CreateCustomChannel(
        server().address(), grpc::InsecureChannelCredentials(), args)));
  }
  LongPollCrowd crowd(&stubs, queue);
  const absl::Time start = absl::Now();
  for (int i = 0; i < kConsumers; ++i) crowd.Poll(i / kPollsPerChannel);
  const absl::Duration started_in = absl::Now() - start;

  // Other calls get through while the crowd waits.
  const absl::Time served_start = absl::Now();
  ASSERT_NO_FATAL_FAILURE(ExpectStillServing());
  const absl::Duration served_in = absl::Now() - served_start;
  EXPECT_LT(served_in, absl::Seconds(20));

  const int outstanding_at_send = crowd.Outstanding();
  const absl::Time send_start = absl::Now();
  for (int i = 0; i < kMessages; i += 1000) {
    std::vector<std::string> bodies;
    for (int j = i; j < i + 1000; ++j) bodies.push_back(absl::StrCat("m", j));
    ASSERT_EQ(SendOk(queue, bodies).size(), 1000u);
  }
  // Parked polls take the messages as they arrive.
  EXPECT_TRUE(crowd.AwaitDelivered(kMessages, absl::Minutes(2)));
  const absl::Duration delivered_in = absl::Now() - send_start;
  crowd.StopPolling();
  EXPECT_TRUE(
      crowd.AwaitAllDone(absl::Milliseconds(kMaxWaitTimeMs) + absl::Minutes(2)))
      << "long polls still pending";
  std::cerr << kConsumers << " consumers on " << stubs.size()
            << " connections: first polls started in " << started_in
            << ", another client served in " << served_in << "; "
            << outstanding_at_send << " polls waiting at the send, "
            << crowd.Started() << " polls in all; " << kMessages
            << " messages delivered " << delivered_in << " after the send"
            << std::endl;
  EXPECT_EQ(outstanding_at_send, kConsumers);
  EXPECT_EQ(crowd.failures(), 0) << "e.g. " << crowd.first_failure();
  EXPECT_EQ(crowd.duplicates(), 0) << "messages handed out twice";
  EXPECT_EQ(crowd.offsets().size(), kMessages);
  EXPECT_EQ(Stats(queue).in_flight(), kMessages);
  EXPECT_EQ(Stats(queue).ready(), 0u);
  ASSERT_NO_FATAL_FAILURE(ExpectStillServing());
}

// A 4 MiB message to a queue with the default 256 KiB limit is refused by
// Weir's own check (INVALID_ARGUMENT, as for every message over the
// queue's limit), since the server accepts requests of up to 64 MiB; one
// over that is refused by gRPC itself with RESOURCE_EXHAUSTED. Nothing is
// appended either way.
TEST_F(AbuseTest, FourMebibyteMessageAgainstTheDefaultLimit) {
  const std::string queue = NewQueue("big");
  Reply<weir::v1::SendResponse> sent =
      client().SendBodies(queue, {std::string(4 << 20, 'x')});
  ASSERT_TRUE(HasCode(sent.status, StatusCode::INVALID_ARGUMENT));
  EXPECT_TRUE(absl::StrContains(sent.status.error_message(), "262144"))
      << sent.status.error_message();
  // A batch that fits each entry but not the server's request limit.
  sent = client().SendBodies(queue, {std::string(65 << 20, 'y')});
  EXPECT_TRUE(HasCode(sent.status, StatusCode::RESOURCE_EXHAUSTED));
  // Many entries just under the limit: fine.
  std::vector<std::string> big(16, std::string(256 << 10, 'z'));
  EXPECT_EQ(SendOk(queue, big).size(), 16u);
  EXPECT_EQ(Stats(queue).sent_total(), 16u);
  ASSERT_NO_FATAL_FAILURE(ExpectStillServing());
}

// 1,000 garbage receipts in one Delete and one ChangeVisibility: the call
// succeeds and every entry is INVALID_ARGUMENT; a real receipt among them
// still works, and nothing else changes.
TEST_F(AbuseTest, ThousandEntryBatchesOfGarbageReceipts) {
  const std::string queue = NewQueue("garbage");
  const std::string other = NewQueue("garbage-other");
  SendOk(queue, {"a", "b"});
  std::vector<Message> leased = ReceiveCount(queue, 2, kLongLeaseMs);
  ASSERT_EQ(leased.size(), 2u);
  SendOk(other, {"c"});
  Reply<weir::v1::ReceiveResponse> foreign =
      client().Receive(other, 1, kLongLeaseMs, 1000);
  ASSERT_TRUE(foreign.ok() && foreign.response.messages_size() == 1);
  const std::string foreign_receipt =
      foreign.response.messages(0).receipt_handle();

  std::mt19937_64 rng(7);
  std::vector<std::string> garbage;
  const std::string real = leased[0].receipt_handle();
  while (garbage.size() < kMaxBatch) {
    std::string g;
    switch (garbage.size() % 8) {
      case 0: {  // Random printable text, any length up to 2 KiB.
        const int n = std::uniform_int_distribution<int>(0, 2048)(rng);
        for (int i = 0; i < n; ++i) {
          g.push_back(static_cast<char>(
              std::uniform_int_distribution<int>(0x20, 0x7e)(rng)));
        }
        break;
      }
      case 1: {  // Web-safe base64 of random bytes of the receipt's length.
        std::string raw(33, '\0');
        for (char& c : raw) c = static_cast<char>(rng());
        g = absl::WebSafeBase64Escape(raw);
        break;
      }
      case 2:  // A real receipt with one character changed.
        g = real;
        g[std::uniform_int_distribution<size_t>(0, g.size() - 2)(rng)] ^= 1;
        break;
      case 3:
        g = "";
        break;
      case 4:
        g = std::string(64 << 10, 'A');
        break;
      case 5:
        g = foreign_receipt;  // Another queue's.
        break;
      case 6:
        g = std::string("\0\0\0", 3) + real;
        break;
      case 7:
        g = "\xf0\x9f\x92\xa5" + real.substr(4);
        break;
    }
    if (g == real) continue;
    garbage.push_back(std::move(g));
  }

  Reply<weir::v1::DeleteResponse> deleted = client().Delete(queue, garbage);
  ASSERT_TRUE(deleted.ok()) << Describe(deleted.status);
  ASSERT_EQ(deleted.response.results_size(), kMaxBatch);
  for (int i = 0; i < kMaxBatch; ++i) {
    ASSERT_TRUE(HasEntryCode(deleted.response.results(i), kCodeInvalidArgument))
        << "entry " << i;
  }
  std::vector<std::pair<std::string, int64_t>> changes;
  for (const std::string& g : garbage) changes.emplace_back(g, 0);
  Reply<weir::v1::ChangeVisibilityResponse> changed =
      client().ChangeVisibility(queue, changes);
  ASSERT_TRUE(changed.ok()) << Describe(changed.status);
  ASSERT_EQ(changed.response.results_size(), kMaxBatch);
  for (int i = 0; i < kMaxBatch; ++i) {
    ASSERT_TRUE(HasEntryCode(changed.response.results(i), kCodeInvalidArgument))
        << "entry " << i;
  }
  EXPECT_EQ(Stats(queue).in_flight(), 2u);
  EXPECT_EQ(Stats(other).in_flight(), 1u);

  // Receipt handles are proto3 strings: bytes that are not UTF-8 make the
  // request unparseable, and gRPC refuses the whole call before Weir sees
  // it (with INTERNAL). Nothing changes either way.
  std::vector<std::string> binary = {std::string("\xff\xfe\x00\x80", 4), real};
  Reply<weir::v1::DeleteResponse> unparsed = client().Delete(queue, binary);
  EXPECT_FALSE(unparsed.ok());
  std::cerr << "a Delete with non-UTF-8 receipt bytes: "
            << Describe(unparsed.status) << std::endl;
  EXPECT_EQ(Stats(queue).in_flight(), 2u);

  // One real receipt in the middle of 999 garbage ones is deleted.
  garbage[500] = real;
  deleted = client().Delete(queue, garbage);
  ASSERT_TRUE(deleted.ok()) << Describe(deleted.status);
  ASSERT_EQ(deleted.response.results_size(), kMaxBatch);
  for (int i = 0; i < kMaxBatch; ++i) {
    EXPECT_TRUE(HasEntryCode(deleted.response.results(i),
                             i == 500 ? kCodeOk : kCodeInvalidArgument))
        << "entry " << i;
  }
  EXPECT_EQ(Stats(queue).in_flight(), 1u);
  EXPECT_EQ(Stats(queue).deleted_total(), 1u);
  ExpectNothingReady(queue);
  ASSERT_NO_FATAL_FAILURE(ExpectStillServing());
}

// Names with path characters, NUL, unicode and 1,000 characters are refused
// with INVALID_ARGUMENT by every call that takes a queue or group name,
// with a short message, and nothing appears on disk for them, inside the
// data directory or outside it.
TEST_F(AbuseTest, HostileNamesAreRefusedAndTouchNoFiles) {
  const std::string data_dir = server().data_dir();
  const std::string parent = data_dir.substr(0, data_dir.rfind('/'));
  const std::set<std::string> parent_before = ListTree(parent);

  const std::vector<std::string> names = {
      "../x",
      "../../etc/passwd",
      "a/b",
      "/tmp/weir-abuse",
      "..",
      ".",
      std::string("a\0b", 3),
      std::string(1, '\0'),
      "\xf0\x9f\x92\xa5",        // An emoji.
      "queue-\xf0\x9f\x8c\x8a",  // A name with one.
      "\xc3\xa9t\xc3\xa9",       // Accented letters.
      "a\\b",
      "a\nb",
      "%2e%2e%2fx",
      std::string(1000, 'q'),
      [] {
        std::string s;
        for (int i = 0; i < 250; ++i) s += "\xf0\x9f\x92\xa5";
        return s;
      }(),
      std::string(100'000, 'n'),
  };
  const std::string good = NewQueue("names");
  const std::set<std::string> queues_before = QueueNames();
  for (const std::string& name : names) {
    const std::string shown = absl::CHexEscape(name.substr(0, 40));
    auto expect_invalid = [&](const grpc::Status& status, const char* call) {
      EXPECT_TRUE(HasCode(status, StatusCode::INVALID_ARGUMENT))
          << call << " \"" << shown << "\" (" << name.size() << " bytes)";
      EXPECT_LE(status.error_message().size(), 1000u)
          << call << " \"" << shown << "\": message too long";
    };
    expect_invalid(client().CreateQueue(name).status, "CreateQueue");
    expect_invalid(client().GetQueue(name).status, "GetQueue");
    expect_invalid(client().SendBodies(name, {"x"}).status, "Send");
    expect_invalid(client().Receive(name, 1, 1000, 0).status, "Receive");
    expect_invalid(client().GetQueueStats(name).status, "GetQueueStats");
    expect_invalid(client().PurgeQueue(name).status, "PurgeQueue");
    expect_invalid(client().DeleteQueue(name).status, "DeleteQueue");
    expect_invalid(client().Delete(name, {"receipt"}).status, "Delete");
    expect_invalid(client().Read(name, Earliest()).status, "Read");
    expect_invalid(client().CreateGroup(good, name, Earliest()).status,
                   "CreateGroup");
    expect_invalid(client().GetQueueStats(good, name).status,
                   "GetQueueStats of a group");
    expect_invalid(client().ReceiveFromGroup(good, name, 1, 1000, 0).status,
                   "Receive from a group");
    QueueConfig dlq;
    dlq.set_max_receives(3);
    dlq.set_dead_letter_queue(name);
    expect_invalid(client().CreateQueue(UniqueName("dlq"), dlq).status,
                   "CreateQueue with the dead-letter queue");
  }
  // A name that is not UTF-8 makes the request unparseable (names are
  // proto3 strings): gRPC refuses the call before Weir sees it.
  EXPECT_FALSE(client().CreateQueue("\xff\xfe").ok());
  EXPECT_FALSE(client().SendBodies("\xff\xfe", {"x"}).ok());

  // No queue or group appeared.
  EXPECT_EQ(QueueNames(), queues_before);
  Reply<weir::v1::ListGroupsResponse> groups = client().ListGroups(good);
  ASSERT_TRUE(groups.ok()) << Describe(groups.status);
  EXPECT_EQ(groups.response.groups_size(), 1);

  // The data directory holds RocksDB's files only; next to it nothing new.
  for (const std::string& entry : ListTree(data_dir)) {
    EXPECT_TRUE(IsRocksDbFile(entry)) << "unexpected file " << entry;
  }
  std::set<std::string> parent_after = ListTree(parent);
  for (const std::string& entry : parent_after) {
    if (parent_before.count(entry) > 0) continue;
    // The server's own scratch files (ready files) live beside the data.
    EXPECT_TRUE(absl::StartsWith(entry, data_dir.substr(parent.size() + 1)) ||
                absl::StartsWith(entry, "weir-server-"))
        << "new file outside the data directory: " << parent << "/" << entry;
  }
  struct stat st;
  EXPECT_NE(stat("/tmp/weir-abuse", &st), 0);
  ASSERT_NO_FATAL_FAILURE(ExpectStillServing());
}

// Clients that give up mid-call: long polls with a short deadline end with
// DEADLINE_EXCEEDED and take no message with them; a large Send with a 1 ms
// deadline ends with DEADLINE_EXCEEDED (or went through before it); other
// clients are served meanwhile and afterwards.
TEST_F(AbuseTest, ClientsWhoseDeadlineExpiresMidCall) {
  QueueConfig config;
  config.set_max_message_bytes(4 << 20);
  const std::string queue = NewQueue("deadlines", config);
  std::unique_ptr<weir::v1::Weir::Stub> stub = server().NewStub();

  // 500 long polls of 20 s with a 200 ms deadline.
  constexpr int kPolls = 500;
  struct Poll {
    grpc::ClientContext context;
    ReceiveRequest request;
    weir::v1::ReceiveResponse response;
    grpc::Status status;
  };
  std::vector<std::unique_ptr<Poll>> polls(kPolls);
  absl::Mutex mu;
  int done = 0;
  const absl::Time start = absl::Now();
  for (int i = 0; i < kPolls; ++i) {
    polls[i] = std::make_unique<Poll>();
    Poll* p = polls[i].get();
    p->context.set_deadline(
        absl::ToChronoTime(absl::Now() + absl::Milliseconds(200)));
    p->request.set_queue(queue);
    p->request.set_visibility_timeout_ms(kLongLeaseMs);
    p->request.set_wait_time_ms(kMaxWaitTimeMs);
    stub->async()->Receive(&p->context, &p->request, &p->response,
                           [&, p](grpc::Status s) {
                             absl::MutexLock lock(&mu);
                             p->status = std::move(s);
                             ++done;
                           });
  }
  {
    absl::MutexLock lock(&mu);
    mu.AwaitWithTimeout(absl::Condition(
                            +[](int* d) { return *d == kPolls; }, &done),
                        absl::Seconds(60));
    ASSERT_EQ(done, kPolls);
  }
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(kMaxWaitTimeMs))
      << "the polls did not end at their deadline";
  for (const auto& p : polls) {
    EXPECT_TRUE(HasCode(p->status, StatusCode::DEADLINE_EXCEEDED));
  }
  // The abandoned polls must not lease what is sent next: a fresh Receive
  // gets every message at once.
  std::vector<std::string> bodies;
  for (int i = 0; i < 100; ++i) bodies.push_back(absl::StrCat("after-", i));
  SendOk(queue, bodies);
  std::vector<Message> got = ReceiveCount(queue, 100, kLongLeaseMs);
  EXPECT_EQ(got.size(), 100u);
  EXPECT_EQ(Stats(queue).in_flight(), 100u);

  // Big sends (4 MiB in one entry, and 1,000 entries of 4 KiB) with a 1 ms
  // deadline, while another client sends and receives.
  std::atomic<bool> stop{false};
  std::atomic<int> served{0};
  std::thread other([&] {
    TestClient c(server().Channel());
    const std::string q = UniqueName("bystander");
    if (!c.CreateQueue(q).ok()) return;
    while (!stop.load()) {
      if (c.SendBodies(q, {"x"}).ok() &&
          c.Receive(q, 1, kLongLeaseMs, 1000).ok()) {
        served.fetch_add(1);
      }
    }
  });
  int deadline_exceeded = 0, ok = 0;
  for (int i = 0; i < 40; ++i) {
    SendRequest request;
    request.set_queue(queue);
    if (i % 2 == 0) {
      request.add_entries()->set_body(std::string(4 << 20, 'b'));
    } else {
      for (int j = 0; j < kMaxBatch; ++j) {
        request.add_entries()->set_body(std::string(4 << 10, 'b'));
      }
    }
    grpc::ClientContext context;
    context.set_deadline(
        absl::ToChronoTime(absl::Now() + absl::Milliseconds(1)));
    weir::v1::SendResponse response;
    grpc::Status status = stub->Send(&context, request, &response);
    if (status.ok()) {
      ++ok;
    } else {
      EXPECT_TRUE(HasCode(status, StatusCode::DEADLINE_EXCEEDED));
      ++deadline_exceeded;
    }
  }
  // Short-deadline Receives with messages ready: the reply may be lost, the
  // leases then lapse as after any lost reply.
  for (int i = 0; i < 20; ++i) {
    grpc::ClientContext context;
    context.set_deadline(
        absl::ToChronoTime(absl::Now() + absl::Milliseconds(1)));
    ReceiveRequest request;
    request.set_queue(queue);
    request.set_max_messages(10);
    request.set_visibility_timeout_ms(1000);
    weir::v1::ReceiveResponse response;
    grpc::Status status = stub->Receive(&context, request, &response);
    EXPECT_TRUE(status.ok() ||
                status.error_code() == StatusCode::DEADLINE_EXCEEDED)
        << Describe(status);
  }
  // The bystander may still be on its first pair: give it time to finish
  // one (it must, the server serving others meanwhile).
  const absl::Time bystander_deadline = absl::Now() + absl::Seconds(60);
  while (served.load() == 0 && absl::Now() < bystander_deadline) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  stop.store(true);
  other.join();
  std::cerr << "1 ms sends: " << deadline_exceeded << " deadline exceeded, "
            << ok << " OK; the bystander completed " << served.load()
            << " send+receive pairs meanwhile" << std::endl;
  EXPECT_GT(deadline_exceeded, 0);
  EXPECT_GT(served.load(), 0);
  ASSERT_NO_FATAL_FAILURE(ExpectStillServing());
}

}  // namespace
}  // namespace weir::test
