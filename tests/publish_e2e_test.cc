// Publish over gRPC against the real server, through weir::Publisher and a
// raw stream: one answer per request, errors per request with the stream
// going on, many requests in flight (past the server's read pause), clean
// half-close, cancellation, shutdown, acknowledged publishes surviving a
// SIGKILL, and a stream of random requests.
#include <cstdint>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "client/publisher.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/client_fixture.h"
#include "tests/e2e_fixture.h"
#include "tests/server_process.h"
#include "tests/test_random.h"
#include "weir/v1/weir.grpc.pb.h"

namespace weir::test {
namespace {

using ::weir::v1::PublishRequest;
using ::weir::v1::PublishResponse;
using ::weir::v1::SendEntry;

std::vector<SendEntry> Entries(const std::vector<std::string>& bodies) {
  std::vector<SendEntry> entries(bodies.size());
  for (size_t i = 0; i < bodies.size(); ++i) entries[i].set_body(bodies[i]);
  return entries;
}

// Every retained message of `queue` by offset, read through Read.
std::map<uint64_t, std::string> ReadAll(Client& client,
                                        const std::string& queue) {
  std::map<uint64_t, std::string> out;
  uint64_t from = 0;
  for (;;) {
    absl::StatusOr<v1::ReadResponse> r =
        client.Read(queue, OffsetPosition(from), 1000);
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok() || r->messages_size() == 0) break;
    for (const v1::Message& m : r->messages()) out[m.offset()] = m.body();
    from = r->next_offset();
  }
  return out;
}

// A server of its own (the tests below stop or kill it), with an empty
// queue "q".
absl::StatusOr<std::unique_ptr<ServerProcess>> StartWithQueueQ(
    ServerOptions options = {}) {
  absl::StatusOr<std::unique_ptr<ServerProcess>> server =
      ServerProcess::Start(std::move(options));
  if (!server.ok()) return server.status();
  Client client((*server)->Channel());
  absl::StatusOr<v1::CreateQueueResponse> created = client.CreateQueue("q");
  if (!created.ok()) return created.status();
  return server;
}

// Restarts `server` and returns what its queue "q" holds.
std::map<uint64_t, std::string> RestartAndReadQ(ServerProcess& server) {
  absl::Status restarted = server.Restart();
  EXPECT_TRUE(restarted.ok()) << restarted;
  if (!restarted.ok()) return {};
  Client client(server.Channel());
  return ReadAll(client, "q");
}

using PublishE2ETest = ClientLibraryTest;

TEST_F(PublishE2ETest, SendAnswersWithOffsetsInOrder) {
  const std::string queue = NewQueue("publish");
  Publisher publisher(weir());
  uint64_t last = 0;
  std::map<uint64_t, std::string> sent;
  for (int i = 0; i < 20; ++i) {
    const std::vector<std::string> bodies = {absl::StrCat("a", i),
                                             absl::StrCat("b", i)};
    absl::StatusOr<std::vector<uint64_t>> offsets =
        publisher.Send(queue, Entries(bodies));
    ASSERT_TRUE(offsets.ok()) << offsets.status();
    ASSERT_EQ(offsets->size(), 2u);
    for (size_t j = 0; j < 2; ++j) {
      if (i > 0 || j > 0) {
        EXPECT_GT((*offsets)[j], last);
      }
      last = (*offsets)[j];
      sent[last] = bodies[j];
    }
  }
  EXPECT_EQ(publisher.unanswered(), 0u);
  EXPECT_TRUE(publisher.Close().ok());
  EXPECT_EQ(ReadAll(weir(), queue), sent);
  EXPECT_EQ(Stats(queue).ready(), 40u);
}

TEST_F(PublishE2ETest, AFailedRequestGetsItsErrorAndTheStreamGoesOn) {
  const std::string queue = NewQueue("publish-errors");
  Publisher publisher(weir());

  const std::string missing = UniqueName("no-such-queue");
  absl::StatusOr<std::vector<uint64_t>> unknown =
      publisher.Send(missing, Entries({"x"}));
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(unknown.status().message().find(missing), std::string::npos)
      << unknown.status();

  absl::StatusOr<std::vector<uint64_t>> empty = publisher.Send(queue, {});
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument)
      << empty.status();

  // One entry too big refuses the whole request.
  std::vector<SendEntry> mixed =
      Entries({"fine", std::string(kDefaultMaxMessageBytes + 1, 'x')});
  absl::StatusOr<std::vector<uint64_t>> too_big = publisher.Send(queue, mixed);
  EXPECT_EQ(too_big.status().code(), absl::StatusCode::kInvalidArgument)
      << too_big.status();
  EXPECT_EQ(Stats(queue).sent_total(), 0u) << "a refused request appended";

  absl::StatusOr<std::vector<uint64_t>> good =
      publisher.Send(queue, Entries({"after"}));
  ASSERT_TRUE(good.ok()) << good.status();
  EXPECT_TRUE(publisher.Close().ok());
  std::map<uint64_t, std::string> stored = ReadAll(weir(), queue);
  ASSERT_EQ(stored.size(), 1u);
  EXPECT_EQ(stored.begin()->first, (*good)[0]);
  EXPECT_EQ(stored.begin()->second, "after");
}

TEST_F(PublishE2ETest, PipelinedRequestsAreEachAnsweredOnce) {
  const std::string queue = NewQueue("publish-pipelined");
  Publisher publisher(weir());
  constexpr int kRequests = 600;
  constexpr int kWindow = 100;
  std::map<uint64_t, std::string> body_by_id;
  std::map<uint64_t, uint64_t> offset_by_id;
  auto take = [&](const PublishResult& r) {
    ASSERT_TRUE(r.status.ok())
        << "request " << r.request_id << ": " << r.status;
    ASSERT_EQ(r.offsets.size(), 1u);
    EXPECT_TRUE(offset_by_id.emplace(r.request_id, r.offsets[0]).second)
        << "request " << r.request_id << " answered twice";
  };
  for (int i = 0; i < kRequests; ++i) {
    const std::string body = absl::StrCat("m", i);
    absl::StatusOr<uint64_t> id = publisher.Write(queue, Entries({body}));
    ASSERT_TRUE(id.ok()) << id.status();
    body_by_id[*id] = body;
    while (publisher.unanswered() >= kWindow) {
      absl::StatusOr<PublishResult> r = publisher.Read();
      ASSERT_TRUE(r.ok()) << r.status();
      ASSERT_NO_FATAL_FAILURE(take(*r));
    }
  }
  std::vector<PublishResult> rest;
  ASSERT_TRUE(publisher.Close(&rest).ok());
  for (const PublishResult& r : rest) ASSERT_NO_FATAL_FAILURE(take(r));
  ASSERT_EQ(offset_by_id.size(), kRequests);

  // Later requests got later offsets, and every answer names its own body.
  std::map<uint64_t, std::string> stored = ReadAll(weir(), queue);
  uint64_t last = 0;
  for (const auto& [id, offset] : offset_by_id) {
    if (id > 1) {
      EXPECT_GT(offset, last) << "request " << id;
    }
    last = offset;
    EXPECT_EQ(stored[offset], body_by_id[id]) << "request " << id;
  }
  EXPECT_EQ(stored.size(), kRequests);
}

// A stream of random requests, valid and not: unknown queues, no entries or
// too many, bodies over the limit, attributes, delays, ordering keys and
// dedup ids in and out of range. Every request is answered once, with
// offsets for each entry or with an error a client can act on; the stream
// goes on after every error and ends OK; and the queue then holds exactly
// the entries of the requests that were answered OK, at their offsets.
TEST_F(PublishE2ETest, RandomRequestsAreEachAnsweredAndOnlyTheAcceptedStored) {
  const std::string queue = NewQueue("publish-random");
  const uint32_t seed = SeedFrom("WEIR_RANDOM_PUBLISH_SEED");
  SCOPED_TRACE(absl::StrCat("replay with WEIR_RANDOM_PUBLISH_SEED=", seed));
  TestRandom random(seed);
  const std::vector<std::string> queues = {"", "no-such-queue", "bad name!",
                                           std::string(300, 'q')};
  const std::vector<std::string> keys = {"k", "", "a b", std::string(300, 'k')};
  const std::vector<int64_t> delays = {-1, 0, 15 * 60 * 1000 + 1};
  const std::string long_key(129, 'o');

  constexpr int kRequests = 300;
  std::map<uint64_t, PublishRequest> asked;
  for (int i = 1; i <= kRequests; ++i) {
    PublishRequest req;
    req.set_request_id(i);
    req.set_queue(random.Chance(0.95) ? queue : random.Pick(queues));
    int entries = random.Between(1, 5);
    if (random.Chance(0.03)) entries = 0;
    if (random.Chance(0.01)) entries = 1001;
    for (int e = 0; e < entries; ++e) {
      SendEntry* entry = req.add_entries();
      entry->set_body(random.Chance(0.02)
                          ? std::string(kDefaultMaxMessageBytes + 1, 'x')
                          : absl::StrCat("r", i, "-e", e));
      if (random.Chance(0.05)) {
        (*entry->mutable_attributes())[random.Pick(keys)] = "v";
      }
      if (random.Chance(0.03)) entry->set_delay_ms(random.Pick(delays));
      if (random.Chance(0.03)) {
        entry->set_ordering_key(random.Chance(0.5) ? "key" : long_key);
      }
      if (random.Chance(0.02)) entry->set_dedup_id(long_key);
    }
    asked[i] = req;
  }

  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(300)));
  std::unique_ptr<v1::Weir::Stub> stub = server().NewStub();
  auto stream = stub->Publish(&context);
  std::thread writer([&] {
    for (const auto& [id, req] : asked) {
      if (!stream->Write(req)) return;
    }
    stream->WritesDone();
  });
  const std::set<int> clean = {grpc::StatusCode::INVALID_ARGUMENT,
                               grpc::StatusCode::NOT_FOUND};
  std::map<uint64_t, std::string> accepted;  // offset -> body
  std::set<uint64_t> answered;
  std::map<int, int> codes;
  PublishResponse resp;
  while (stream->Read(&resp)) {
    auto it = asked.find(resp.request_id());
    ASSERT_NE(it, asked.end()) << "answer to request " << resp.request_id();
    EXPECT_TRUE(answered.insert(resp.request_id()).second)
        << "request " << resp.request_id() << " answered twice";
    const PublishRequest& req = it->second;
    ++codes[resp.result().code()];
    if (resp.result().code() != 0) {
      EXPECT_TRUE(clean.count(resp.result().code()) > 0)
          << "request " << resp.request_id() << ": code "
          << resp.result().code() << ": " << resp.result().message();
      EXPECT_FALSE(resp.result().message().empty());
      EXPECT_EQ(resp.offsets_size(), 0);
      continue;
    }
    ASSERT_EQ(resp.offsets_size(), req.entries_size())
        << "request " << resp.request_id();
    for (int e = 0; e < req.entries_size(); ++e) {
      EXPECT_TRUE(
          accepted.emplace(resp.offsets(e), req.entries(e).body()).second)
          << "offset " << resp.offsets(e) << " given twice";
    }
  }
  writer.join();
  const grpc::Status status = stream->Finish();
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(answered.size(), kRequests);
  std::cout << "seed " << seed << ":";
  for (const auto& [code, count] : codes) {
    std::cout << " " << count << "x code " << code;
  }
  std::cout << "; " << accepted.size() << " entries stored" << std::endl;

  EXPECT_EQ(ReadAll(weir(), queue), accepted);
}

// Writes `requests` requests of one message each (bodies from `body`) on a
// raw Publish stream from one thread while this one reads the answers, then
// half-closes. Checks that every request is answered once, with OK and one
// offset, that the stream ends OK, and that the queue got them all.
void FloodOneStream(ServerProcess& server, const std::string& queue,
                    int requests, const std::function<std::string(int)>& body) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(300)));
  std::unique_ptr<v1::Weir::Stub> stub = server.NewStub();
  auto stream = stub->Publish(&context);
  std::thread writer([&] {
    for (int i = 1; i <= requests; ++i) {
      PublishRequest req;
      req.set_queue(queue);
      req.set_request_id(i);
      req.add_entries()->set_body(body(i));
      if (!stream->Write(req)) return;
    }
    stream->WritesDone();
  });
  std::set<uint64_t> answered;
  PublishResponse resp;
  while (stream->Read(&resp)) {
    EXPECT_EQ(resp.result().code(), 0) << resp.result().message();
    EXPECT_EQ(resp.offsets_size(), 1);
    EXPECT_TRUE(answered.insert(resp.request_id()).second)
        << "request " << resp.request_id() << " answered twice";
  }
  writer.join();
  grpc::Status status = stream->Finish();
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(answered.size(), requests);
  Client client(server.Channel());
  absl::StatusOr<v1::QueueStats> stats = client.GetQueueStats(queue);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->sent_total(), requests);
}

// More requests unanswered than the server reads ahead (1024): the server
// pauses reading and resumes as its answers are written, and nothing is
// lost or answered twice.
TEST_F(PublishE2ETest, FarMoreRequestsInFlightThanTheServerReadsAhead) {
  const std::string queue = NewQueue("publish-flood");
  FloodOneStream(server(), queue, 5000,
                 [](int i) { return absl::StrCat("f", i); });
}

// Requests of 1 MiB: past 64 MiB being written the server pauses reading on
// bytes rather than on the number of requests, and resumes as it answers.
TEST_F(PublishE2ETest, LargeRequestsPauseAndResumeReadingByBytes) {
  QueueConfig config;
  config.set_max_message_bytes(1 << 20);
  const std::string queue = NewQueue("publish-large", config);
  const std::string body((1 << 20) - 64, 'b');
  FloodOneStream(server(), queue, 100, [&body](int) { return body; });
}

TEST_F(PublishE2ETest, CloseWaitsForEveryAnswer) {
  const std::string queue = NewQueue("publish-close");
  Publisher publisher(weir());
  for (int i = 0; i < 300; ++i) {
    ASSERT_TRUE(publisher.Write(queue, Entries({absl::StrCat(i)})).ok());
  }
  std::vector<PublishResult> rest;
  EXPECT_TRUE(publisher.Close(&rest).ok());
  ASSERT_EQ(rest.size(), 300u);
  for (const PublishResult& r : rest) EXPECT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(publisher.unanswered(), 0u);
  // Closed: later calls fail clearly, and Close stays OK.
  EXPECT_EQ(publisher.Send(queue, Entries({"late"})).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(publisher.Close().ok());
  EXPECT_EQ(Stats(queue).sent_total(), 300u);
}

// Streams cancelled with requests still being committed: the server's
// answers then have nowhere to go, and it must keep serving.
TEST_F(PublishE2ETest, CancellingWithRequestsInFlightLeavesTheServerServing) {
  const std::string queue = NewQueue("publish-cancel");
  constexpr int kRounds = 40;
  constexpr int kStreams = 4;
  for (int round = 0; round < kRounds; ++round) {
    std::vector<std::unique_ptr<Publisher>> publishers;
    for (int s = 0; s < kStreams; ++s) {
      publishers.push_back(std::make_unique<Publisher>(weir()));
      for (int i = 0; i < 30; ++i) {
        ASSERT_TRUE(
            publishers.back()->Write(queue, Entries({absl::StrCat(i)})).ok());
      }
    }
    // Read one answer on some streams, so cancels land at different points.
    for (int s = 0; s < kStreams; s += 2) {
      ASSERT_TRUE(publishers[s]->Read().ok());
    }
    for (auto& p : publishers) p->Cancel();
    for (auto& p : publishers) {
      EXPECT_EQ(p->Write(queue, Entries({"x"})).status().code(),
                absl::StatusCode::kCancelled);
    }
  }
  Publisher after(weir());
  EXPECT_TRUE(after.Send(queue, Entries({"still serving"})).ok());
}

TEST(PublishShutdownTest, ShutdownEndsAnIdleStreamWithUnavailable) {
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = StartWithQueueQ();
  ASSERT_TRUE(server.ok()) << server.status();
  Client client((*server)->Channel());
  Publisher publisher(client);
  absl::StatusOr<std::vector<uint64_t>> sent =
      publisher.Send("q", Entries({"before"}));
  ASSERT_TRUE(sent.ok()) << sent.status();

  absl::StatusOr<int> code = (*server)->Stop();
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0);
  // Ended by Weir's own shutdown (not by gRPC's deadline cancelling it).
  EXPECT_EQ(publisher.Send("q", Entries({"after"})).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_TRUE(publisher.ended());
  absl::Status closed = publisher.Close();
  EXPECT_EQ(closed.code(), absl::StatusCode::kUnavailable) << closed;
  EXPECT_NE(closed.message().find("shutting down"), std::string::npos)
      << closed;

  std::map<uint64_t, std::string> stored = RestartAndReadQ(**server);
  ASSERT_EQ(stored.size(), 1u);
  EXPECT_EQ(stored.begin()->second, "before");
}

// Shutdown with requests in flight: what the server committed is answered
// (and stored), then the stream ends with UNAVAILABLE; the client keeps the
// answers that came before the end.
TEST(PublishShutdownTest, ShutdownAnswersWhatItCommittedThenEnds) {
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = StartWithQueueQ();
  ASSERT_TRUE(server.ok()) << server.status();
  Client client((*server)->Channel());
  Publisher publisher(client);
  std::map<uint64_t, std::string> body_by_id;
  for (int i = 0; i < 200; ++i) {
    const std::string body = absl::StrCat("s", i);
    absl::StatusOr<uint64_t> id = publisher.Write("q", Entries({body}));
    ASSERT_TRUE(id.ok()) << id.status();
    body_by_id[*id] = body;
  }
  // At least one is committed before the shutdown.
  absl::StatusOr<PublishResult> first = publisher.Read();
  ASSERT_TRUE(first.ok()) << first.status();
  std::vector<PublishResult> answered = {*first};

  absl::StatusOr<int> code = (*server)->Stop();
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0);
  std::vector<PublishResult> rest;
  absl::Status closed = publisher.Close(&rest);
  EXPECT_EQ(closed.code(), absl::StatusCode::kUnavailable) << closed;
  EXPECT_TRUE(publisher.ended());
  EXPECT_EQ(publisher.Write("q", Entries({"late"})).status().code(),
            absl::StatusCode::kUnavailable);
  answered.insert(answered.end(), rest.begin(), rest.end());

  std::map<uint64_t, std::string> stored = RestartAndReadQ(**server);
  std::set<std::string> stored_bodies;
  for (const auto& [offset, body] : stored) stored_bodies.insert(body);
  for (const PublishResult& r : answered) {
    if (r.status.ok()) {
      ASSERT_EQ(r.offsets.size(), 1u);
      EXPECT_EQ(stored[r.offsets[0]], body_by_id[r.request_id])
          << "request " << r.request_id << " answered but not stored";
    } else {
      // Read after the engine began shutting down: refused, not stored.
      EXPECT_EQ(r.status.code(), absl::StatusCode::kUnavailable) << r.status;
      EXPECT_EQ(stored_bodies.count(body_by_id[r.request_id]), 0u)
          << "request " << r.request_id << " refused but stored";
    }
  }
}

// Requests answered on a sync-durability server are on disk: a SIGKILL in
// the middle of a pipelined stream loses none of them.
TEST(PublishRestartTest, AnsweredRequestsSurviveSigkill) {
  ServerOptions options;
  options.durability = "sync";
  absl::StatusOr<std::unique_ptr<ServerProcess>> server =
      StartWithQueueQ(options);
  ASSERT_TRUE(server.ok()) << server.status();
  std::map<uint64_t, std::string> acknowledged;
  {
    Client client((*server)->Channel());
    Publisher publisher(client);
    std::map<uint64_t, std::string> body_by_id;
    for (int i = 0; i < 2000; ++i) {
      const std::string body = absl::StrCat("p", i);
      absl::StatusOr<uint64_t> id = publisher.Write("q", Entries({body}));
      ASSERT_TRUE(id.ok()) << id.status();
      body_by_id[*id] = body;
      while (publisher.unanswered() >= 64) {
        absl::StatusOr<PublishResult> r = publisher.Read();
        ASSERT_TRUE(r.ok()) << r.status();
        ASSERT_TRUE(r->status.ok()) << r->status;
        acknowledged[r->offsets[0]] = body_by_id[r->request_id];
      }
    }
    // Killed with up to 64 requests unanswered.
    (*server)->Kill();
  }
  ASSERT_GE(acknowledged.size(), 1900u);
  std::map<uint64_t, std::string> stored = RestartAndReadQ(**server);
  for (const auto& [offset, body] : acknowledged) {
    auto it = stored.find(offset);
    ASSERT_NE(it, stored.end()) << "acknowledged offset " << offset << " lost";
    EXPECT_EQ(it->second, body) << "offset " << offset;
  }
}

}  // namespace
}  // namespace weir::test
