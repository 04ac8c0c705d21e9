// End-to-end tests of the Weir API against the real weir_server binary: the
// control calls, the send / receive / delete life cycle, leases and long
// polling, and the answers to bad input. One server serves the whole suite;
// every test works on queues of its own.
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "google/protobuf/io/coded_stream.h"
#include "grpcpp/client_context.h"
#include "grpcpp/completion_queue.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/slice.h"
#include "gtest/gtest.h"
#include "tests/e2e_fixture.h"
#include "tests/rpc_helpers.h"
#include "tests/server_process.h"
#include "weir/v1/weir.pb.h"

namespace weir::test {
namespace {

using ::grpc::StatusCode;
using ::weir::v1::ListQueuesRequest;
using ::weir::v1::Message;
using ::weir::v1::QueueConfig;
using ::weir::v1::QueueStats;
using ::weir::v1::ReceiveRequest;
using ::weir::v1::SendRequest;

grpc::ByteBuffer ToByteBuffer(const std::string& bytes) {
  grpc::Slice slice(bytes.data(), bytes.size());
  return grpc::ByteBuffer(&slice, 1);
}

bool FromByteBuffer(const grpc::ByteBuffer& buffer, std::string* bytes) {
  std::vector<grpc::Slice> slices;
  if (!buffer.Dump(&slices).ok()) return false;
  bytes->clear();
  for (const grpc::Slice& s : slices) {
    bytes->append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  return true;
}

// grpc.health.v1.Health/Check spoken through a generic stub, since the
// generated health stubs are not part of the build. HealthCheckRequest is
// {string service = 1}; HealthCheckResponse is {ServingStatus status = 1},
// where 1 is SERVING. Stores the status in *serving_status.
grpc::Status CheckHealth(const std::shared_ptr<grpc::Channel>& channel,
                         const std::string& service, int* serving_status) {
  std::string request_bytes;
  if (!service.empty()) {
    request_bytes.push_back(0x0a);  // Field 1, length-delimited.
    request_bytes.push_back(static_cast<char>(service.size()));  // < 128.
    request_bytes += service;
  }
  grpc::ByteBuffer request = ToByteBuffer(request_bytes);

  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + kRpcTimeout));
  grpc::CompletionQueue queue;
  std::unique_ptr<grpc::GenericClientAsyncResponseReader> call =
      stub.PrepareUnaryCall(&context, "/grpc.health.v1.Health/Check", request,
                            &queue);
  call->StartCall();
  grpc::ByteBuffer response;
  grpc::Status status;
  call->Finish(&response, &status, nullptr);
  void* tag;
  bool ok;
  queue.Next(&tag, &ok);
  queue.Shutdown();
  while (queue.Next(&tag, &ok)) {
  }
  if (!status.ok()) return status;

  std::string bytes;
  if (!FromByteBuffer(response, &bytes)) {
    return grpc::Status(StatusCode::INTERNAL, "unreadable health response");
  }
  google::protobuf::io::CodedInputStream in(
      reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  *serving_status = 0;  // UNKNOWN: proto3 leaves a zero field out.
  while (uint32_t field_tag = in.ReadTag()) {
    uint32_t value;
    if (field_tag != 0x08 || !in.ReadVarint32(&value)) {
      return grpc::Status(StatusCode::INTERNAL,
                          "unexpected health response encoding");
    }
    *serving_status = static_cast<int>(value);
  }
  return grpc::Status::OK;
}

// grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo asked to
// list the services, through a generic stub (the reflection stubs are not
// part of the build). Returns the raw bytes of the first response.
grpc::Status ListServicesByReflection(
    const std::shared_ptr<grpc::Channel>& channel,
    std::string* response_bytes) {
  // ServerReflectionRequest {string list_services = 7;} with an empty value.
  grpc::ByteBuffer request = ToByteBuffer(std::string("\x3a\x00", 2));

  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + kRpcTimeout));
  grpc::CompletionQueue queue;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call = stub.PrepareCall(
      &context,
      "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &queue);
  void* tag;
  bool ok = false;
  // Each step has its own tag and is awaited before the next.
  auto step = [&](intptr_t want) {
    return queue.Next(&tag, &ok) && reinterpret_cast<intptr_t>(tag) == want &&
           ok;
  };
  grpc::ByteBuffer response;
  grpc::Status status;
  bool steps_ok = true;
  call->StartCall(reinterpret_cast<void*>(1));
  steps_ok = steps_ok && step(1);
  if (steps_ok) call->Write(request, reinterpret_cast<void*>(2));
  steps_ok = steps_ok && step(2);
  if (steps_ok) call->WritesDone(reinterpret_cast<void*>(3));
  steps_ok = steps_ok && step(3);
  if (steps_ok) call->Read(&response, reinterpret_cast<void*>(4));
  steps_ok = steps_ok && step(4);
  call->Finish(&status, reinterpret_cast<void*>(5));
  queue.Next(&tag, &ok);
  queue.Shutdown();
  while (queue.Next(&tag, &ok)) {
  }
  if (!status.ok()) return status;
  if (!steps_ok) {
    return grpc::Status(StatusCode::INTERNAL, "reflection stream failed");
  }
  if (!FromByteBuffer(response, response_bytes)) {
    return grpc::Status(StatusCode::INTERNAL, "unreadable reflection response");
  }
  return grpc::Status::OK;
}

TEST_F(E2ETest, ReflectionListsTheWeirAndHealthServices) {
  std::string bytes;
  grpc::Status status = ListServicesByReflection(server().Channel(), &bytes);
  ASSERT_TRUE(status.ok()) << Describe(status);
  EXPECT_NE(bytes.find("weir.v1.Weir"), std::string::npos);
  EXPECT_NE(bytes.find("grpc.health.v1.Health"), std::string::npos);
}

TEST_F(E2ETest, HealthCheckAnswersServing) {
  int serving_status = -1;
  grpc::Status status =
      CheckHealth(server().Channel(), /*service=*/"", &serving_status);
  ASSERT_TRUE(status.ok()) << Describe(status);
  EXPECT_EQ(serving_status, 1) << "1 is SERVING";
}

TEST_F(E2ETest, CreateQueueFillsInDefaultsAndIsIdempotent) {
  const std::string name = UniqueName("create");
  const int64_t before_ms = NowUnixMs();
  Reply<weir::v1::CreateQueueResponse> first = client().CreateQueue(name);
  const int64_t after_ms = NowUnixMs();
  ASSERT_TRUE(first.ok()) << Describe(first.status);
  EXPECT_TRUE(first.response.created());
  const weir::v1::Queue& queue = first.response.queue();
  EXPECT_EQ(queue.name(), name);
  EXPECT_EQ(queue.config().visibility_timeout_ms(),
            kDefaultVisibilityTimeoutMs);
  EXPECT_EQ(queue.config().max_message_bytes(), kDefaultMaxMessageBytes);
  EXPECT_EQ(queue.config().delay_ms(), 0);
  EXPECT_GE(queue.create_time_ms(), before_ms - kClockSlackMs);
  EXPECT_LE(queue.create_time_ms(), after_ms + kClockSlackMs);

  Reply<weir::v1::CreateQueueResponse> again = client().CreateQueue(name);
  ASSERT_TRUE(again.ok()) << Describe(again.status);
  EXPECT_FALSE(again.response.created());
  EXPECT_EQ(again.response.queue().name(), name);
  EXPECT_EQ(again.response.queue().create_time_ms(), queue.create_time_ms());

  QueueConfig different;
  different.set_visibility_timeout_ms(45'000);
  EXPECT_TRUE(HasCode(client().CreateQueue(name, different).status,
                      StatusCode::ALREADY_EXISTS));
}

TEST_F(E2ETest, CreateQueueWithExplicitConfig) {
  const std::string name = UniqueName("explicit");
  QueueConfig config;
  config.set_visibility_timeout_ms(45'000);
  config.set_max_message_bytes(1024);
  config.set_delay_ms(2'000);
  Reply<weir::v1::CreateQueueResponse> created =
      client().CreateQueue(name, config);
  ASSERT_TRUE(created.ok()) << Describe(created.status);
  EXPECT_TRUE(created.response.created());
  EXPECT_EQ(created.response.queue().config().visibility_timeout_ms(), 45'000);
  EXPECT_EQ(created.response.queue().config().max_message_bytes(), 1024);
  EXPECT_EQ(created.response.queue().config().delay_ms(), 2'000);

  Reply<weir::v1::CreateQueueResponse> again =
      client().CreateQueue(name, config);
  ASSERT_TRUE(again.ok()) << Describe(again.status);
  EXPECT_FALSE(again.response.created());

  QueueConfig other_delay = config;
  other_delay.set_delay_ms(3'000);
  EXPECT_TRUE(HasCode(client().CreateQueue(name, other_delay).status,
                      StatusCode::ALREADY_EXISTS));
  QueueConfig other_size = config;
  other_size.set_max_message_bytes(2048);
  EXPECT_TRUE(HasCode(client().CreateQueue(name, other_size).status,
                      StatusCode::ALREADY_EXISTS));

  // The refused creates changed nothing.
  Reply<weir::v1::Queue> got = client().GetQueue(name);
  ASSERT_TRUE(got.ok()) << Describe(got.status);
  EXPECT_EQ(got.response.config().delay_ms(), 2'000);
  EXPECT_EQ(got.response.config().max_message_bytes(), 1024);
}

TEST_F(E2ETest, GetQueueReturnsWhatCreateReturned) {
  const std::string name = UniqueName("get");
  QueueConfig config;
  config.set_visibility_timeout_ms(12'345);
  Reply<weir::v1::CreateQueueResponse> created =
      client().CreateQueue(name, config);
  ASSERT_TRUE(created.ok()) << Describe(created.status);

  Reply<weir::v1::Queue> got = client().GetQueue(name);
  ASSERT_TRUE(got.ok()) << Describe(got.status);
  EXPECT_EQ(got.response.name(), name);
  EXPECT_EQ(got.response.config().visibility_timeout_ms(), 12'345);
  EXPECT_EQ(got.response.config().max_message_bytes(), kDefaultMaxMessageBytes);
  EXPECT_EQ(got.response.config().delay_ms(), 0);
  EXPECT_EQ(got.response.create_time_ms(),
            created.response.queue().create_time_ms());
}

TEST_F(E2ETest, UpdateQueueChangesOnlyTheFieldsNamed) {
  QueueConfig config;
  config.set_visibility_timeout_ms(30'000);
  config.set_delay_ms(1'000);
  const std::string queue = NewQueue("update", config);
  QueueConfig change;
  change.set_visibility_timeout_ms(60'000);
  change.set_delay_ms(5'000);  // Not in the mask: ignored.
  Reply<weir::v1::Queue> updated =
      client().UpdateQueue(queue, change, {"visibility_timeout_ms"});
  ASSERT_TRUE(updated.ok()) << Describe(updated.status);
  EXPECT_EQ(updated.response.config().visibility_timeout_ms(), 60'000);
  EXPECT_EQ(updated.response.config().delay_ms(), 1'000);
  Reply<weir::v1::Queue> got = client().GetQueue(queue);
  ASSERT_TRUE(got.ok()) << Describe(got.status);
  EXPECT_EQ(got.response.config().visibility_timeout_ms(), 60'000);

  // The next Receive without a timeout leases for the new default.
  change.set_delay_ms(0);
  ASSERT_TRUE(client().UpdateQueue(queue, change, {"delay_ms"}).ok());
  SendOk(queue, {"m"});
  const int64_t before_ms = NowUnixMs();
  Reply<weir::v1::ReceiveResponse> received =
      client().Receive(queue, 1, std::nullopt, /*wait_time_ms=*/1'000);
  ASSERT_TRUE(received.ok()) << Describe(received.status);
  ASSERT_EQ(received.response.messages_size(), 1);
  EXPECT_GE(received.response.messages(0).lease_deadline_ms(),
            before_ms + 60'000 - kClockSlackMs);
}

TEST_F(E2ETest, UpdateQueueRefusesBadInputAndChangesNothing) {
  const std::string queue = NewQueue("update-bad");
  QueueConfig change;
  change.set_visibility_timeout_ms(kMaxVisibilityTimeoutMs + 1);
  EXPECT_TRUE(HasCode(client().UpdateQueue(queue, change, {}).status,
                      StatusCode::INVALID_ARGUMENT));
  EXPECT_TRUE(HasCode(
      client().UpdateQueue(queue, change, {"visibility_timeout"}).status,
      StatusCode::INVALID_ARGUMENT));
  EXPECT_TRUE(HasCode(
      client().UpdateQueue(queue, change, {"visibility_timeout_ms"}).status,
      StatusCode::INVALID_ARGUMENT));
  change.set_dead_letter_queue("no-such-queue");
  change.set_max_receives(3);
  EXPECT_TRUE(HasCode(
      client()
          .UpdateQueue(queue, change, {"max_receives", "dead_letter_queue"})
          .status,
      StatusCode::INVALID_ARGUMENT));
  EXPECT_TRUE(
      HasCode(client().UpdateQueue(queue, change, {"max_receives"}).status,
              StatusCode::INVALID_ARGUMENT));
  EXPECT_TRUE(HasCode(
      client().UpdateQueue("no-such-queue", change, {"delay_ms"}).status,
      StatusCode::NOT_FOUND));
  Reply<weir::v1::Queue> got = client().GetQueue(queue);
  ASSERT_TRUE(got.ok()) << Describe(got.status);
  EXPECT_EQ(got.response.config().visibility_timeout_ms(),
            kDefaultVisibilityTimeoutMs);
  EXPECT_EQ(got.response.config().max_receives(), 0);
  EXPECT_EQ(got.response.config().dead_letter_queue(), "");
}

TEST_F(E2ETest, ListQueuesFiltersByPrefixAndPages) {
  const std::string prefix = UniqueName("list") + "-";
  std::set<std::string> names;
  for (const char* suffix : {"a", "b", "c"}) {
    std::string name = prefix + suffix;
    ASSERT_TRUE(client().CreateQueue(name).ok());
    names.insert(name);
  }
  // A queue whose name only starts like the prefix stays out.
  ASSERT_TRUE(client().CreateQueue(prefix.substr(0, prefix.size() - 1)).ok());

  ListQueuesRequest all;
  all.set_prefix(prefix);
  Reply<weir::v1::ListQueuesResponse> listed = client().ListQueues(all);
  ASSERT_TRUE(listed.ok()) << Describe(listed.status);
  std::set<std::string> seen;
  for (const weir::v1::Queue& q : listed.response.queues()) {
    seen.insert(q.name());
    EXPECT_EQ(q.config().visibility_timeout_ms(), kDefaultVisibilityTimeoutMs)
        << q.name();
  }
  EXPECT_EQ(seen, names);
  EXPECT_EQ(listed.response.next_page_token(), "");

  // Two pages of at most two.
  std::set<std::string> paged;
  ListQueuesRequest page;
  page.set_prefix(prefix);
  page.set_page_size(2);
  int pages = 0;
  do {
    Reply<weir::v1::ListQueuesResponse> reply = client().ListQueues(page);
    ASSERT_TRUE(reply.ok()) << Describe(reply.status);
    EXPECT_LE(reply.response.queues_size(), 2);
    for (const weir::v1::Queue& q : reply.response.queues()) {
      EXPECT_TRUE(paged.insert(q.name()).second) << q.name() << " listed twice";
    }
    page.set_page_token(reply.response.next_page_token());
    ASSERT_LT(++pages, 10) << "paging does not end";
  } while (!page.page_token().empty());
  EXPECT_EQ(paged, names);
  EXPECT_EQ(pages, 2);

  // Every queue of the server, without a prefix, includes ours.
  Reply<weir::v1::ListQueuesResponse> everything =
      client().ListQueues(ListQueuesRequest());
  ASSERT_TRUE(everything.ok()) << Describe(everything.status);
  int ours = 0;
  for (const weir::v1::Queue& q : everything.response.queues()) {
    ours += names.count(q.name());
  }
  EXPECT_EQ(ours, 3);

  ListQueuesRequest too_big;
  too_big.set_page_size(kMaxBatch + 1);
  EXPECT_TRUE(HasCode(client().ListQueues(too_big).status,
                      StatusCode::INVALID_ARGUMENT));
}

TEST_F(E2ETest, StatsFollowMessagesThroughTheirLifeCycle) {
  const std::string queue = NewQueue("stats");
  const QueueStats empty = Stats(queue);
  EXPECT_EQ(empty.ready(), 0);
  EXPECT_EQ(empty.in_flight(), 0);
  EXPECT_EQ(empty.delayed(), 0);
  EXPECT_EQ(empty.oldest_ready_age_ms(), 0);
  EXPECT_EQ(empty.sent_total(), 0);
  EXPECT_EQ(empty.received_total(), 0);
  EXPECT_EQ(empty.deleted_total(), 0);

  std::vector<uint64_t> offsets = SendOk(queue, {"s0", "s1", "s2", "s3"});
  ASSERT_EQ(offsets.size(), 4);
  EXPECT_EQ(offsets[0], empty.next_offset())
      << "next_offset is the offset the next message gets";
  QueueStats sent = Stats(queue);
  EXPECT_EQ(sent.ready(), 4);
  EXPECT_EQ(sent.in_flight(), 0);
  EXPECT_EQ(sent.sent_total(), 4);
  EXPECT_EQ(sent.next_offset(), offsets.back() + 1);
  EXPECT_GE(sent.oldest_ready_age_ms(), 0);

  std::vector<Message> leased = ReceiveCount(queue, 3, kLongLeaseMs);
  ASSERT_EQ(leased.size(), 3);
  QueueStats received = Stats(queue);
  EXPECT_EQ(received.ready(), 1);
  EXPECT_EQ(received.in_flight(), 3);
  EXPECT_EQ(received.received_total(), 3);

  Reply<weir::v1::DeleteResponse> deleted = client().Delete(
      queue, {leased[0].receipt_handle(), leased[1].receipt_handle()});
  ASSERT_TRUE(deleted.ok()) << Describe(deleted.status);
  QueueStats after_delete = Stats(queue);
  EXPECT_EQ(after_delete.ready(), 1);
  EXPECT_EQ(after_delete.in_flight(), 1);
  EXPECT_EQ(after_delete.deleted_total(), 2);
  EXPECT_EQ(after_delete.sent_total(), 4);

  // A delayed message counts as delayed, not ready, and is not delivered.
  SendRequest delayed;
  delayed.set_queue(queue);
  weir::v1::SendEntry* entry = delayed.add_entries();
  entry->set_body("later");
  entry->set_delay_ms(kLongLeaseMs);
  ASSERT_TRUE(client().Send(delayed).ok());
  QueueStats with_delayed = Stats(queue);
  EXPECT_EQ(with_delayed.delayed(), 1);
  EXPECT_EQ(with_delayed.ready(), 1);
  EXPECT_EQ(with_delayed.sent_total(), 5);
  std::vector<Message> rest = ReceiveCount(queue, 1, kLongLeaseMs);
  ASSERT_EQ(rest.size(), 1);
  EXPECT_EQ(rest[0].offset(), offsets[3]);
  ExpectNothingReady(queue);
}

TEST_F(E2ETest, SendReceiveDeleteRoundTrip) {
  const std::string queue = NewQueue("roundtrip");
  SendRequest request;
  request.set_queue(queue);
  std::map<std::string, std::map<std::string, std::string>> sent;
  for (int i = 0; i < 3; ++i) {
    weir::v1::SendEntry* entry = request.add_entries();
    std::string body = absl::StrCat("body-", i, std::string("\0\xff", 2));
    entry->set_body(body);
    std::map<std::string, std::string> attributes = {{"index", absl::StrCat(i)},
                                                     {"kind", "round-trip"}};
    if (i == 1) attributes.clear();
    for (const auto& [key, value] : attributes) {
      (*entry->mutable_attributes())[key] = value;
    }
    sent[body] = attributes;
  }
  const int64_t before_send_ms = NowUnixMs();
  Reply<weir::v1::SendResponse> send_reply = client().Send(request);
  const int64_t after_send_ms = NowUnixMs();
  ASSERT_TRUE(send_reply.ok()) << Describe(send_reply.status);
  const auto& offsets = send_reply.response.offsets();
  ASSERT_EQ(offsets.size(), 3);
  EXPECT_LT(offsets[0], offsets[1]);
  EXPECT_LT(offsets[1], offsets[2]);

  // A second send continues the log.
  std::vector<uint64_t> more = SendOk(queue, {"tail"});
  ASSERT_EQ(more.size(), 1);
  EXPECT_GT(more[0], offsets[2]);

  const int64_t before_receive_ms = NowUnixMs();
  std::vector<Message> messages = ReceiveCount(queue, 4, kLongLeaseMs);
  ASSERT_EQ(messages.size(), 4);
  std::set<uint64_t> seen_offsets;
  std::set<std::string> seen_receipts;
  for (const Message& m : messages) {
    EXPECT_TRUE(seen_offsets.insert(m.offset()).second)
        << "offset " << m.offset() << " delivered twice";
    EXPECT_TRUE(seen_receipts.insert(m.receipt_handle()).second);
    EXPECT_FALSE(m.receipt_handle().empty());
    EXPECT_EQ(m.receive_count(), 1) << "offset " << m.offset();
    EXPECT_GE(m.enqueue_time_ms(), before_send_ms - kClockSlackMs);
    EXPECT_LE(m.enqueue_time_ms(), NowUnixMs() + kClockSlackMs);
    EXPECT_GE(m.lease_deadline_ms(),
              before_receive_ms + kLongLeaseMs - kClockSlackMs);
    EXPECT_LE(m.lease_deadline_ms(), NowUnixMs() + kLongLeaseMs + 1000);
    if (m.body() == "tail") {
      EXPECT_EQ(m.offset(), more[0]);
      EXPECT_TRUE(m.attributes().empty());
      continue;
    }
    auto it = sent.find(m.body());
    ASSERT_NE(it, sent.end()) << "unknown body " << m.body();
    const int index = m.body()[5] - '0';
    EXPECT_EQ(m.offset(), offsets[index]) << m.body();
    std::map<std::string, std::string> attributes(m.attributes().begin(),
                                                  m.attributes().end());
    EXPECT_EQ(attributes, it->second) << m.body();
    EXPECT_LE(m.enqueue_time_ms(), after_send_ms + kClockSlackMs);
  }
  EXPECT_EQ(seen_offsets.size(), 4);

  std::vector<std::string> receipts(seen_receipts.begin(), seen_receipts.end());
  Reply<weir::v1::DeleteResponse> deleted = client().Delete(queue, receipts);
  ASSERT_TRUE(deleted.ok()) << Describe(deleted.status);
  ASSERT_EQ(deleted.response.results_size(), 4);
  for (const weir::v1::EntryResult& result : deleted.response.results()) {
    EXPECT_TRUE(HasEntryCode(result, kCodeOk));
  }
  QueueStats stats = Stats(queue);
  EXPECT_EQ(stats.ready(), 0);
  EXPECT_EQ(stats.in_flight(), 0);
  EXPECT_EQ(stats.deleted_total(), 4);
  ExpectNothingReady(queue);
}

// weir.proto, EntryResult: Delete of a message already deleted is OK (a
// retried Delete is harmless); ChangeVisibility of it is FAILED_PRECONDITION.
TEST_F(E2ETest, ReceiptOfADeletedMessageDeletesIdempotently) {
  const std::string queue = NewQueue("deleted-receipt");
  SendOk(queue, {"once"});
  std::vector<Message> leased = ReceiveCount(queue, 1, kLongLeaseMs);
  ASSERT_EQ(leased.size(), 1);
  const std::string receipt = leased[0].receipt_handle();
  Reply<weir::v1::DeleteResponse> deleted = client().Delete(queue, {receipt});
  ASSERT_TRUE(deleted.ok()) << Describe(deleted.status);
  ASSERT_EQ(deleted.response.results_size(), 1);
  ASSERT_TRUE(HasEntryCode(deleted.response.results(0), kCodeOk));

  Reply<weir::v1::ChangeVisibilityResponse> changed =
      client().ChangeVisibility(queue, {{receipt, 0}});
  ASSERT_TRUE(changed.ok()) << Describe(changed.status);
  ASSERT_EQ(changed.response.results_size(), 1);
  EXPECT_TRUE(
      HasEntryCode(changed.response.results(0), kCodeFailedPrecondition))
      << "ChangeVisibility with the receipt of a deleted message";
  Reply<weir::v1::DeleteResponse> again = client().Delete(queue, {receipt});
  ASSERT_TRUE(again.ok()) << Describe(again.status);
  ASSERT_EQ(again.response.results_size(), 1);
  EXPECT_TRUE(HasEntryCode(again.response.results(0), kCodeOk))
      << "Delete with the receipt of a deleted message";
  QueueStats stats = Stats(queue);
  EXPECT_EQ(stats.deleted_total(), 1);
  ExpectNothingReady(queue);
}

TEST_F(E2ETest, ReceiveReturnsNothingWhileAllAreLeased) {
  const std::string queue = NewQueue("leased");
  SendOk(queue, {"one", "two"});
  ASSERT_EQ(ReceiveCount(queue, 2, kLongLeaseMs).size(), 2);
  ExpectNothingReady(queue);
  QueueStats stats = Stats(queue);
  EXPECT_EQ(stats.ready(), 0);
  EXPECT_EQ(stats.in_flight(), 2);
}

TEST_F(E2ETest, DefaultVisibilityTimeoutComesFromTheQueue) {
  QueueConfig config;
  config.set_visibility_timeout_ms(kLongLeaseMs);
  const std::string queue = NewQueue("default-visibility", config);
  SendOk(queue, {"m"});
  const int64_t before_ms = NowUnixMs();
  Reply<weir::v1::ReceiveResponse> received =
      client().Receive(queue, 1, std::nullopt, /*wait_time_ms=*/1000);
  ASSERT_TRUE(received.ok()) << Describe(received.status);
  ASSERT_EQ(received.response.messages_size(), 1);
  EXPECT_GE(received.response.messages(0).lease_deadline_ms(),
            before_ms + kLongLeaseMs - kClockSlackMs);
  EXPECT_LE(received.response.messages(0).lease_deadline_ms(),
            NowUnixMs() + kLongLeaseMs + kClockSlackMs);
}

TEST_F(E2ETest, ChangeVisibilityZeroRedeliversAndFencesTheOldReceipt) {
  const std::string queue = NewQueue("visibility");
  std::vector<uint64_t> offsets = SendOk(queue, {"again"});
  ASSERT_EQ(offsets.size(), 1);
  std::vector<Message> first = ReceiveCount(queue, 1, kLongLeaseMs);
  ASSERT_EQ(first.size(), 1);
  const std::string old_receipt = first[0].receipt_handle();

  // Extending works while the lease is current.
  Reply<weir::v1::ChangeVisibilityResponse> extended =
      client().ChangeVisibility(queue, {{old_receipt, kLongLeaseMs * 2}});
  ASSERT_TRUE(extended.ok()) << Describe(extended.status);
  ASSERT_EQ(extended.response.results_size(), 1);
  EXPECT_TRUE(HasEntryCode(extended.response.results(0), kCodeOk));
  ExpectNothingReady(queue);

  Reply<weir::v1::ChangeVisibilityResponse> released =
      client().ChangeVisibility(queue, {{old_receipt, 0}});
  ASSERT_TRUE(released.ok()) << Describe(released.status);
  ASSERT_EQ(released.response.results_size(), 1);
  EXPECT_TRUE(HasEntryCode(released.response.results(0), kCodeOk));

  std::vector<Message> second = ReceiveCount(queue, 1, kLongLeaseMs);
  ASSERT_EQ(second.size(), 1);
  EXPECT_EQ(second[0].offset(), offsets[0]);
  EXPECT_EQ(second[0].body(), "again");
  EXPECT_EQ(second[0].receive_count(), 2);
  EXPECT_NE(second[0].receipt_handle(), old_receipt);

  // The old receipt no longer names a lease: it changes nothing.
  Reply<weir::v1::DeleteResponse> stale_delete =
      client().Delete(queue, {old_receipt});
  ASSERT_TRUE(stale_delete.ok()) << Describe(stale_delete.status);
  ASSERT_EQ(stale_delete.response.results_size(), 1);
  EXPECT_TRUE(
      HasEntryCode(stale_delete.response.results(0), kCodeFailedPrecondition));
  Reply<weir::v1::ChangeVisibilityResponse> stale_release =
      client().ChangeVisibility(queue, {{old_receipt, 0}});
  ASSERT_TRUE(stale_release.ok()) << Describe(stale_release.status);
  ASSERT_EQ(stale_release.response.results_size(), 1);
  EXPECT_TRUE(
      HasEntryCode(stale_release.response.results(0), kCodeFailedPrecondition));
  QueueStats stats = Stats(queue);
  EXPECT_EQ(stats.in_flight(), 1);
  EXPECT_EQ(stats.deleted_total(), 0);
  ExpectNothingReady(queue);

  // The new receipt does.
  Reply<weir::v1::DeleteResponse> deleted =
      client().Delete(queue, {second[0].receipt_handle()});
  ASSERT_TRUE(deleted.ok()) << Describe(deleted.status);
  ASSERT_EQ(deleted.response.results_size(), 1);
  EXPECT_TRUE(HasEntryCode(deleted.response.results(0), kCodeOk));
  EXPECT_EQ(Stats(queue).in_flight(), 0);
}

TEST_F(E2ETest, ChangeVisibilityPostponesARetry) {
  const std::string queue = NewQueue("postpone");
  SendOk(queue, {"retry"});
  std::vector<Message> first = ReceiveCount(queue, 1, kLongLeaseMs);
  ASSERT_EQ(first.size(), 1);
  // A short new timeout: invisible now, back once it passes.
  Reply<weir::v1::ChangeVisibilityResponse> postponed =
      client().ChangeVisibility(queue, {{first[0].receipt_handle(), 500}});
  ASSERT_TRUE(postponed.ok()) << Describe(postponed.status);
  ASSERT_EQ(postponed.response.results_size(), 1);
  EXPECT_TRUE(HasEntryCode(postponed.response.results(0), kCodeOk));
  const absl::Time changed = absl::Now();
  Reply<weir::v1::ReceiveResponse> received =
      client().Receive(queue, 1, kLongLeaseMs, /*wait_time_ms=*/10'000);
  ASSERT_TRUE(received.ok()) << Describe(received.status);
  ASSERT_EQ(received.response.messages_size(), 1);
  EXPECT_GE(absl::Now() - changed, absl::Milliseconds(400));
  EXPECT_EQ(received.response.messages(0).receive_count(), 2);
}

TEST_F(E2ETest, LongPollWakesUpOnSend) {
  const std::string queue = NewQueue("longpoll");
  Reply<weir::v1::ReceiveResponse> received;
  absl::Duration waited;
  std::thread receiver([&] {
    TestClient own_client(server().Channel());
    const absl::Time start = absl::Now();
    received = own_client.Receive(queue, 10, kLongLeaseMs,
                                  /*wait_time_ms=*/kMaxWaitTimeMs);
    waited = absl::Now() - start;
  });
  // Whether or not the receiver is already waiting, it must get the message.
  std::vector<uint64_t> offsets = SendOk(queue, {"wake up"});
  receiver.join();
  ASSERT_TRUE(received.ok()) << Describe(received.status);
  ASSERT_EQ(received.response.messages_size(), 1)
      << "the long poll ended after " << waited << " without the message";
  EXPECT_EQ(received.response.messages(0).body(), "wake up");
  ASSERT_EQ(offsets.size(), 1);
  EXPECT_EQ(received.response.messages(0).offset(), offsets[0]);
  EXPECT_LT(waited, absl::Seconds(10))
      << "the long poll did not return soon after the send";
}

// Hundreds of receivers long-poll one queue at once; the server keeps
// answering other calls meanwhile, and one batch of sends hands each waiter
// a message of its own.
TEST_F(E2ETest, HundredsOfLongPollsWaitAtOnceAndEachGetsOneMessage) {
  constexpr int kWaiters = 500;
  const std::string queue = NewQueue("many-polls");
  struct Poll {
    grpc::ClientContext context;
    ReceiveRequest request;
    weir::v1::ReceiveResponse response;
    grpc::Status status;
  };
  std::vector<std::unique_ptr<Poll>> polls;
  absl::Mutex mu;
  int done = 0;
  std::unique_ptr<weir::v1::Weir::Stub> stub = server().NewStub();
  for (int i = 0; i < kWaiters; ++i) {
    auto poll = std::make_unique<Poll>();
    poll->context.set_deadline(absl::ToChronoTime(
        absl::Now() + absl::Milliseconds(kMaxWaitTimeMs) + kRpcTimeout));
    poll->request.set_queue(queue);
    poll->request.set_max_messages(1);
    poll->request.set_visibility_timeout_ms(kLongLeaseMs);
    poll->request.set_wait_time_ms(kMaxWaitTimeMs);
    Poll* p = poll.get();
    polls.push_back(std::move(poll));
    stub->async()->Receive(&p->context, &p->request, &p->response,
                           [&mu, &done, p](grpc::Status s) {
                             absl::MutexLock lock(&mu);
                             p->status = std::move(s);
                             ++done;
                           });
  }
  // Waiting receivers hold no thread the other calls need.
  QueueStats stats = Stats(queue);
  EXPECT_EQ(stats.ready(), 0);
  std::vector<std::string> bodies;
  for (int i = 0; i < kWaiters; ++i) bodies.push_back(absl::StrCat("m", i));
  ASSERT_EQ(SendOk(queue, bodies).size(), kWaiters);

  {
    absl::MutexLock lock(&mu);
    const absl::Duration limit =
        absl::Milliseconds(kMaxWaitTimeMs) + kRpcTimeout * 2;
    mu.AwaitWithTimeout(absl::Condition(
                            +[](int* d) { return *d == kWaiters; }, &done),
                        limit);
    ASSERT_EQ(done, kWaiters) << "long polls still pending";
  }
  // A poll that arrived after the send found a message ready; either way
  // every message went to exactly one waiter.
  std::set<uint64_t> offsets;
  int empty = 0;
  for (const auto& p : polls) {
    ASSERT_TRUE(p->status.ok()) << Describe(p->status);
    if (p->response.messages_size() == 0) {
      ++empty;
      continue;
    }
    ASSERT_EQ(p->response.messages_size(), 1);
    EXPECT_TRUE(offsets.insert(p->response.messages(0).offset()).second)
        << "offset " << p->response.messages(0).offset() << " handed out twice";
  }
  EXPECT_EQ(empty, 0);
  EXPECT_EQ(offsets.size(), kWaiters);
  EXPECT_EQ(Stats(queue).in_flight(), kWaiters);
}

TEST_F(E2ETest, LongPollOnAnEmptyQueueTimesOutEmpty) {
  const std::string queue = NewQueue("timeout");
  const absl::Time start = absl::Now();
  Reply<weir::v1::ReceiveResponse> received =
      client().Receive(queue, 10, kLongLeaseMs, /*wait_time_ms=*/300);
  const absl::Duration waited = absl::Now() - start;
  ASSERT_TRUE(received.ok()) << Describe(received.status);
  EXPECT_EQ(received.response.messages_size(), 0);
  EXPECT_GE(waited, absl::Milliseconds(250));
  EXPECT_LT(waited, absl::Seconds(5));
}

TEST_F(E2ETest, DeleteBatchAnswersEachEntry) {
  const std::string queue = NewQueue("batch-delete");
  SendOk(queue, {"a", "b"});
  std::vector<Message> leased = ReceiveCount(queue, 2, kLongLeaseMs);
  ASSERT_EQ(leased.size(), 2);
  Reply<weir::v1::DeleteResponse> deleted =
      client().Delete(queue, {leased[0].receipt_handle(), "not-a-receipt",
                              leased[1].receipt_handle()});
  ASSERT_TRUE(deleted.ok()) << Describe(deleted.status);
  ASSERT_EQ(deleted.response.results_size(), 3);
  EXPECT_TRUE(HasEntryCode(deleted.response.results(0), kCodeOk));
  EXPECT_TRUE(HasEntryCode(deleted.response.results(1), kCodeInvalidArgument));
  EXPECT_FALSE(deleted.response.results(1).message().empty());
  EXPECT_TRUE(HasEntryCode(deleted.response.results(2), kCodeOk));
  QueueStats stats = Stats(queue);
  EXPECT_EQ(stats.in_flight(), 0);
  EXPECT_EQ(stats.deleted_total(), 2);
  ExpectNothingReady(queue);
}

// A Receive may carry the deletes of the previous batch: they are answered
// entry by entry, and the call leases the next messages.
TEST_F(E2ETest, ReceiveDeletesTheLastBatchFirst) {
  const std::string queue = NewQueue("ack-next");
  SendOk(queue, {"a", "b", "c"});
  std::vector<Message> first = ReceiveCount(queue, 1, kLongLeaseMs);
  ASSERT_EQ(first.size(), 1);
  weir::v1::ReceiveRequest request;
  request.set_queue(queue);
  request.set_max_messages(10);
  request.set_visibility_timeout_ms(kLongLeaseMs);
  request.add_delete_receipt_handles(first[0].receipt_handle());
  request.add_delete_receipt_handles("not-a-receipt");
  Reply<weir::v1::ReceiveResponse> next = client().Receive(request);
  ASSERT_TRUE(next.ok()) << Describe(next.status);
  ASSERT_EQ(next.response.delete_results_size(), 2);
  EXPECT_TRUE(HasEntryCode(next.response.delete_results(0), kCodeOk));
  EXPECT_TRUE(
      HasEntryCode(next.response.delete_results(1), kCodeInvalidArgument));
  ASSERT_EQ(next.response.messages_size(), 2);
  EXPECT_EQ(next.response.messages(0).body(), "b");
  EXPECT_EQ(next.response.messages(1).body(), "c");
  QueueStats stats = Stats(queue);
  EXPECT_EQ(stats.deleted_total(), 1);
  EXPECT_EQ(stats.in_flight(), 2);

  // The last batch's deletes with nothing left to lease.
  request.clear_delete_receipt_handles();
  for (const Message& m : next.response.messages()) {
    request.add_delete_receipt_handles(m.receipt_handle());
  }
  Reply<weir::v1::ReceiveResponse> last = client().Receive(request);
  ASSERT_TRUE(last.ok()) << Describe(last.status);
  ASSERT_EQ(last.response.delete_results_size(), 2);
  EXPECT_TRUE(HasEntryCode(last.response.delete_results(0), kCodeOk));
  EXPECT_TRUE(HasEntryCode(last.response.delete_results(1), kCodeOk));
  EXPECT_EQ(last.response.messages_size(), 0);
  stats = Stats(queue);
  EXPECT_EQ(stats.deleted_total(), 3);
  EXPECT_EQ(stats.in_flight(), 0);
}

// A Receive refused for its own fields deletes nothing it carries.
TEST_F(E2ETest, ReceiveRefusedForItsOptionsDeletesNothing) {
  const std::string queue = NewQueue("ack-next-refused");
  SendOk(queue, {"a", "b"});
  std::vector<Message> leased = ReceiveCount(queue, 1, kLongLeaseMs);
  ASSERT_EQ(leased.size(), 1);
  auto with_delete = [&] {
    weir::v1::ReceiveRequest r;
    r.set_queue(queue);
    r.add_delete_receipt_handles(leased[0].receipt_handle());
    return r;
  };
  std::vector<std::pair<weir::v1::ReceiveRequest, StatusCode>> cases;
  cases.emplace_back(with_delete(), StatusCode::INVALID_ARGUMENT);
  cases.back().first.set_max_messages(1001);
  cases.emplace_back(with_delete(), StatusCode::INVALID_ARGUMENT);
  cases.back().first.set_wait_time_ms(-1);
  cases.emplace_back(with_delete(), StatusCode::INVALID_ARGUMENT);
  cases.back().first.set_visibility_timeout_ms(-5);
  cases.emplace_back(with_delete(), StatusCode::NOT_FOUND);
  cases.back().first.set_group("no-such-group");
  cases.emplace_back(with_delete(), StatusCode::INVALID_ARGUMENT);
  for (int i = 0; i < 1000; ++i) {
    cases.back().first.add_delete_receipt_handles("not-a-receipt");
  }
  cases.emplace_back(with_delete(), StatusCode::NOT_FOUND);
  cases.back().first.set_queue("no-such-queue");
  for (const auto& [request, code] : cases) {
    Reply<weir::v1::ReceiveResponse> r = client().Receive(request);
    EXPECT_TRUE(HasCode(r.status, code))
        << request.ShortDebugString().substr(0, 200) << ": "
        << Describe(r.status);
  }
  QueueStats stats = Stats(queue);
  EXPECT_EQ(stats.deleted_total(), 0);
  EXPECT_EQ(stats.in_flight(), 1);
  EXPECT_EQ(stats.ready(), 1);
}

// A long poll that carries deletes and is cancelled while it waits ends
// with CANCELLED; its deletes stay applied and it leases nothing.
TEST_F(E2ETest, ReceiveCancelledWhileItWaitsKeepsItsDeletes) {
  const std::string queue = NewQueue("ack-next-cancel");
  SendOk(queue, {"a"});
  std::vector<Message> leased = ReceiveCount(queue, 1, kLongLeaseMs);
  ASSERT_EQ(leased.size(), 1);
  weir::v1::ReceiveRequest request;
  request.set_queue(queue);
  request.set_wait_time_ms(kMaxWaitTimeMs);
  request.add_delete_receipt_handles(leased[0].receipt_handle());
  grpc::ClientContext context;
  grpc::Status status;
  std::thread poll([&] {
    weir::v1::ReceiveResponse response;
    status = client().stub().Receive(&context, request, &response);
  });
  // The deletes are applied before the poll starts waiting (nothing else is
  // ready); cancel only once they are seen.
  EXPECT_TRUE(AwaitStats(
      queue, [](const QueueStats& s) { return s.deleted_total() >= 1; }));
  context.TryCancel();
  poll.join();
  EXPECT_EQ(status.error_code(), StatusCode::CANCELLED) << Describe(status);
  QueueStats stats = Stats(queue);
  EXPECT_EQ(stats.deleted_total(), 1);
  EXPECT_EQ(stats.in_flight(), 0);
  // The queue still serves: the next message goes to the next receiver.
  SendOk(queue, {"b"});
  std::vector<Message> next = ReceiveCount(queue, 1, kLongLeaseMs);
  ASSERT_EQ(next.size(), 1);
  EXPECT_EQ(next[0].body(), "b");
}

TEST_F(E2ETest, ChangeVisibilityBatchAnswersEachEntry) {
  const std::string queue = NewQueue("batch-visibility");
  SendOk(queue, {"a", "b"});
  std::vector<Message> leased = ReceiveCount(queue, 2, kLongLeaseMs);
  ASSERT_EQ(leased.size(), 2);
  Reply<weir::v1::ChangeVisibilityResponse> changed =
      client().ChangeVisibility(queue, {{leased[0].receipt_handle(), 0},
                                        {"garbage", 0},
                                        {leased[1].receipt_handle(), 0}});
  ASSERT_TRUE(changed.ok()) << Describe(changed.status);
  ASSERT_EQ(changed.response.results_size(), 3);
  EXPECT_TRUE(HasEntryCode(changed.response.results(0), kCodeOk));
  EXPECT_TRUE(HasEntryCode(changed.response.results(1), kCodeInvalidArgument));
  EXPECT_TRUE(HasEntryCode(changed.response.results(2), kCodeOk));
  EXPECT_EQ(ReceiveCount(queue, 2, kLongLeaseMs).size(), 2);
}

TEST_F(E2ETest, PurgeRemovesEverythingAndKeepsOffsets) {
  const std::string queue = NewQueue("purge");
  std::vector<uint64_t> offsets = SendOk(queue, {"1", "2", "3", "4", "5"});
  ASSERT_EQ(offsets.size(), 5);
  std::vector<Message> leased = ReceiveCount(queue, 2, kLongLeaseMs);
  ASSERT_EQ(leased.size(), 2);

  Reply<weir::v1::PurgeQueueResponse> purged = client().PurgeQueue(queue);
  ASSERT_TRUE(purged.ok()) << Describe(purged.status);
  EXPECT_EQ(purged.response.purged(), 5);
  QueueStats stats = Stats(queue);
  EXPECT_EQ(stats.ready(), 0);
  EXPECT_EQ(stats.in_flight(), 0);
  EXPECT_EQ(stats.delayed(), 0);
  ExpectNothingReady(queue);

  // A receipt from before the purge changes nothing (what it answers is
  // ReceiptOfAPurgedMessageIsGone's business).
  Reply<weir::v1::ChangeVisibilityResponse> stale =
      client().ChangeVisibility(queue, {{leased[0].receipt_handle(), 0}});
  ASSERT_TRUE(stale.ok()) << Describe(stale.status);
  ExpectNothingReady(queue);

  // The queue remains, and offsets are never reused.
  ASSERT_TRUE(client().GetQueue(queue).ok());
  std::vector<uint64_t> after = SendOk(queue, {"6"});
  ASSERT_EQ(after.size(), 1);
  EXPECT_GT(after[0], offsets.back());
  std::vector<Message> fresh = ReceiveCount(queue, 1, kLongLeaseMs);
  ASSERT_EQ(fresh.size(), 1);
  EXPECT_EQ(fresh[0].body(), "6");
  ExpectNothingReady(queue);
}

// As for a deleted message: the purge deleted every message.
TEST_F(E2ETest, ReceiptOfAPurgedMessageIsGone) {
  const std::string queue = NewQueue("purged-receipt");
  SendOk(queue, {"a", "b"});
  std::vector<Message> leased = ReceiveCount(queue, 2, kLongLeaseMs);
  ASSERT_EQ(leased.size(), 2);
  Reply<weir::v1::PurgeQueueResponse> purged = client().PurgeQueue(queue);
  ASSERT_TRUE(purged.ok()) << Describe(purged.status);

  Reply<weir::v1::ChangeVisibilityResponse> changed =
      client().ChangeVisibility(queue, {{leased[0].receipt_handle(), 0}});
  ASSERT_TRUE(changed.ok()) << Describe(changed.status);
  ASSERT_EQ(changed.response.results_size(), 1);
  EXPECT_TRUE(
      HasEntryCode(changed.response.results(0), kCodeFailedPrecondition))
      << "ChangeVisibility with a receipt from before the purge";
  Reply<weir::v1::DeleteResponse> deleted =
      client().Delete(queue, {leased[1].receipt_handle()});
  ASSERT_TRUE(deleted.ok()) << Describe(deleted.status);
  ASSERT_EQ(deleted.response.results_size(), 1);
  EXPECT_TRUE(HasEntryCode(deleted.response.results(0), kCodeOk))
      << "Delete with a receipt from before the purge";
  ExpectNothingReady(queue);
}

TEST_F(E2ETest, DeletedQueueIsNotFound) {
  const std::string queue = NewQueue("doomed");
  SendOk(queue, {"gone"});
  Reply<weir::v1::DeleteQueueResponse> deleted = client().DeleteQueue(queue);
  ASSERT_TRUE(deleted.ok()) << Describe(deleted.status);

  EXPECT_TRUE(HasCode(client().GetQueue(queue).status, StatusCode::NOT_FOUND));
  EXPECT_TRUE(
      HasCode(client().GetQueueStats(queue).status, StatusCode::NOT_FOUND));
  EXPECT_TRUE(
      HasCode(client().SendBodies(queue, {"x"}).status, StatusCode::NOT_FOUND));
  EXPECT_TRUE(HasCode(client().Receive(queue, 1, kLongLeaseMs).status,
                      StatusCode::NOT_FOUND));
  EXPECT_TRUE(
      HasCode(client().DeleteQueue(queue).status, StatusCode::NOT_FOUND));
  ListQueuesRequest list;
  list.set_prefix(queue);
  Reply<weir::v1::ListQueuesResponse> listed = client().ListQueues(list);
  ASSERT_TRUE(listed.ok()) << Describe(listed.status);
  for (const weir::v1::Queue& q : listed.response.queues()) {
    EXPECT_NE(q.name(), queue);
  }

  // The name can be used again, for an empty queue.
  Reply<weir::v1::CreateQueueResponse> recreated = client().CreateQueue(queue);
  ASSERT_TRUE(recreated.ok()) << Describe(recreated.status);
  EXPECT_TRUE(recreated.response.created());
  EXPECT_EQ(Stats(queue).ready(), 0);
  ExpectNothingReady(queue);
}

TEST_F(E2ETest, UnknownQueueIsNotFound) {
  const std::string queue = UniqueName("never-created");
  EXPECT_TRUE(HasCode(client().GetQueue(queue).status, StatusCode::NOT_FOUND));
  EXPECT_TRUE(
      HasCode(client().GetQueueStats(queue).status, StatusCode::NOT_FOUND));
  EXPECT_TRUE(
      HasCode(client().DeleteQueue(queue).status, StatusCode::NOT_FOUND));
  EXPECT_TRUE(
      HasCode(client().PurgeQueue(queue).status, StatusCode::NOT_FOUND));
  EXPECT_TRUE(
      HasCode(client().SendBodies(queue, {"x"}).status, StatusCode::NOT_FOUND));
  EXPECT_TRUE(HasCode(client().Receive(queue, 1, kLongLeaseMs).status,
                      StatusCode::NOT_FOUND));
  EXPECT_TRUE(HasCode(client().Receive(queue, 1, kLongLeaseMs, 1000).status,
                      StatusCode::NOT_FOUND));

  // A well-formed receipt from another queue, presented for this one.
  const std::string other = NewQueue("receipt-source");
  SendOk(other, {"x"});
  std::vector<Message> leased = ReceiveCount(other, 1, kLongLeaseMs);
  ASSERT_EQ(leased.size(), 1);
  EXPECT_TRUE(
      HasCode(client().Delete(queue, {leased[0].receipt_handle()}).status,
              StatusCode::NOT_FOUND));
  EXPECT_TRUE(
      HasCode(client()
                  .ChangeVisibility(queue, {{leased[0].receipt_handle(), 0}})
                  .status,
              StatusCode::NOT_FOUND));
  EXPECT_EQ(Stats(other).in_flight(), 1);
}

TEST_F(E2ETest, InvalidQueueNamesAreRejected) {
  const std::vector<std::string> bad_names = {
      "", std::string(81, 'q'), "a/b", "\xc3\xa9", "a b", "a.b", "tab\t"};
  for (const std::string& name : bad_names) {
    EXPECT_TRUE(HasCode(client().CreateQueue(name).status,
                        StatusCode::INVALID_ARGUMENT))
        << "name \"" << name << "\"";
  }
  // The limits themselves are fine.
  const std::string longest = std::string(79, 'q') + std::to_string(0);
  ASSERT_EQ(longest.size(), 80);
  Reply<weir::v1::CreateQueueResponse> created = client().CreateQueue(longest);
  EXPECT_TRUE(created.ok()) << Describe(created.status);
  const std::string alphabet = UniqueName("Az09_-");
  created = client().CreateQueue(alphabet);
  EXPECT_TRUE(created.ok()) << Describe(created.status);
  created = client().CreateQueue("x");
  EXPECT_TRUE(created.ok()) << Describe(created.status);
}

TEST_F(E2ETest, OversizedMessageIsRejectedAndNothingAppended) {
  QueueConfig config;
  config.set_max_message_bytes(1024);
  const std::string queue = NewQueue("oversize", config);
  const QueueStats before = Stats(queue);

  EXPECT_TRUE(
      HasCode(client().SendBodies(queue, {std::string(1025, 'x')}).status,
              StatusCode::INVALID_ARGUMENT));
  // Attributes count towards the size.
  SendRequest with_attributes;
  with_attributes.set_queue(queue);
  weir::v1::SendEntry* entry = with_attributes.add_entries();
  entry->set_body(std::string(1000, 'x'));
  (*entry->mutable_attributes())["padding"] = std::string(100, 'p');
  EXPECT_TRUE(HasCode(client().Send(with_attributes).status,
                      StatusCode::INVALID_ARGUMENT));
  // One bad entry refuses the whole batch.
  EXPECT_TRUE(
      HasCode(client()
                  .SendBodies(queue, {"small", std::string(1025, 'x'), "small"})
                  .status,
              StatusCode::INVALID_ARGUMENT));
  // Over the server-wide limit too, whatever the queue says.
  EXPECT_TRUE(HasCode(
      client()
          .SendBodies(queue, {std::string(kMaxMessageBytesLimit + 1, 'x')})
          .status,
      StatusCode::INVALID_ARGUMENT));

  QueueStats after = Stats(queue);
  EXPECT_EQ(after.sent_total(), before.sent_total());
  EXPECT_EQ(after.ready(), 0);
  EXPECT_EQ(after.next_offset(), before.next_offset());
  ExpectNothingReady(queue);

  // Exactly at the limit is accepted.
  std::vector<uint64_t> offsets = SendOk(queue, {std::string(1024, 'x')});
  EXPECT_EQ(offsets.size(), 1);
}

TEST_F(E2ETest, SendBatchSizeIsChecked) {
  const std::string queue = NewQueue("batch-size");
  EXPECT_TRUE(HasCode(client().SendBodies(queue, {}).status,
                      StatusCode::INVALID_ARGUMENT));
  std::vector<std::string> too_many(kMaxBatch + 1, "m");
  EXPECT_TRUE(HasCode(client().SendBodies(queue, too_many).status,
                      StatusCode::INVALID_ARGUMENT));
  EXPECT_EQ(Stats(queue).sent_total(), 0);

  too_many.pop_back();
  std::vector<uint64_t> offsets = SendOk(queue, too_many);
  ASSERT_EQ(offsets.size(), kMaxBatch);
  for (size_t i = 1; i < offsets.size(); ++i) {
    ASSERT_LT(offsets[i - 1], offsets[i]) << "at entry " << i;
  }
  EXPECT_EQ(Stats(queue).sent_total(), kMaxBatch);
}

TEST_F(E2ETest, SendDelayOutOfRangeIsRejected) {
  const std::string queue = NewQueue("send-delay");
  for (int64_t delay_ms : {int64_t{-1}, kMaxDelayMs + 1}) {
    SendRequest request;
    request.set_queue(queue);
    request.add_entries()->set_body("ok");
    weir::v1::SendEntry* entry = request.add_entries();
    entry->set_body("bad delay");
    entry->set_delay_ms(delay_ms);
    EXPECT_TRUE(
        HasCode(client().Send(request).status, StatusCode::INVALID_ARGUMENT))
        << "delay_ms " << delay_ms;
  }
  EXPECT_EQ(Stats(queue).sent_total(), 0);
}

TEST_F(E2ETest, VisibilityTimeoutOutOfRangeIsRejected) {
  const std::string queue = NewQueue("visibility-range");
  SendOk(queue, {"m"});
  for (int64_t timeout_ms : {int64_t{-1}, kMaxVisibilityTimeoutMs + 1}) {
    EXPECT_TRUE(HasCode(client().Receive(queue, 1, timeout_ms).status,
                        StatusCode::INVALID_ARGUMENT))
        << "visibility_timeout_ms " << timeout_ms;
  }
  EXPECT_EQ(Stats(queue).in_flight(), 0) << "a refused Receive leased";

  // Twelve hours is allowed.
  std::vector<Message> leased = ReceiveCount(queue, 1, kMaxVisibilityTimeoutMs);
  ASSERT_EQ(leased.size(), 1);

  // ChangeVisibility checks the same range, for the batch or the entry.
  for (int64_t timeout_ms : {int64_t{-1}, kMaxVisibilityTimeoutMs + 1}) {
    Reply<weir::v1::ChangeVisibilityResponse> changed =
        client().ChangeVisibility(queue,
                                  {{leased[0].receipt_handle(), timeout_ms}});
    if (changed.ok()) {
      ASSERT_EQ(changed.response.results_size(), 1);
      EXPECT_TRUE(
          HasEntryCode(changed.response.results(0), kCodeInvalidArgument))
          << "visibility_timeout_ms " << timeout_ms;
    } else {
      EXPECT_TRUE(HasCode(changed.status, StatusCode::INVALID_ARGUMENT))
          << "visibility_timeout_ms " << timeout_ms;
    }
  }
  // The lease is unchanged: still leased, still deletable.
  ExpectNothingReady(queue);
  Reply<weir::v1::DeleteResponse> deleted =
      client().Delete(queue, {leased[0].receipt_handle()});
  ASSERT_TRUE(deleted.ok()) << Describe(deleted.status);
  EXPECT_TRUE(HasEntryCode(deleted.response.results(0), kCodeOk));
}

TEST_F(E2ETest, WaitTimeOutOfRangeIsRejected) {
  const std::string queue = NewQueue("wait-range");
  for (int64_t wait_ms : {int64_t{-1}, kMaxWaitTimeMs + 1}) {
    const absl::Time start = absl::Now();
    EXPECT_TRUE(
        HasCode(client().Receive(queue, 1, kLongLeaseMs, wait_ms).status,
                StatusCode::INVALID_ARGUMENT))
        << "wait_time_ms " << wait_ms;
    EXPECT_LT(absl::Now() - start, absl::Seconds(5))
        << "a refused Receive waited";
  }
}

TEST_F(E2ETest, MaxMessagesOutOfRangeIsRejected) {
  const std::string queue = NewQueue("max-messages");
  SendOk(queue, {"m"});
  for (int32_t max_messages : {-1, kMaxBatch + 1}) {
    EXPECT_TRUE(
        HasCode(client().Receive(queue, max_messages, kLongLeaseMs).status,
                StatusCode::INVALID_ARGUMENT))
        << "max_messages " << max_messages;
  }
  EXPECT_EQ(Stats(queue).in_flight(), 0) << "a refused Receive leased";
  // 0 means 1; 1000 is allowed.
  Reply<weir::v1::ReceiveResponse> zero =
      client().Receive(queue, 0, kLongLeaseMs, /*wait_time_ms=*/1000);
  ASSERT_TRUE(zero.ok()) << Describe(zero.status);
  EXPECT_EQ(zero.response.messages_size(), 1);
  Reply<weir::v1::ReceiveResponse> most =
      client().Receive(queue, kMaxBatch, kLongLeaseMs);
  ASSERT_TRUE(most.ok()) << Describe(most.status);
  EXPECT_EQ(most.response.messages_size(), 0);
}

TEST_F(E2ETest, DeleteAndChangeVisibilityBatchSizesAreChecked) {
  const std::string queue = NewQueue("receipt-batch");
  EXPECT_TRUE(
      HasCode(client().Delete(queue, {}).status, StatusCode::INVALID_ARGUMENT));
  EXPECT_TRUE(HasCode(client().ChangeVisibility(queue, {}).status,
                      StatusCode::INVALID_ARGUMENT));
  std::vector<std::string> too_many(kMaxBatch + 1, "receipt");
  EXPECT_TRUE(HasCode(client().Delete(queue, too_many).status,
                      StatusCode::INVALID_ARGUMENT));
  std::vector<std::pair<std::string, int64_t>> too_many_changes(kMaxBatch + 1,
                                                                {"receipt", 0});
  EXPECT_TRUE(HasCode(client().ChangeVisibility(queue, too_many_changes).status,
                      StatusCode::INVALID_ARGUMENT));
}

TEST_F(E2ETest, ForgedReceiptsAreRefusedAndChangeNothing) {
  const std::string queue = NewQueue("forged");
  SendOk(queue, {"target", "neighbour"});
  std::vector<Message> leased = ReceiveCount(queue, 2, kLongLeaseMs);
  ASSERT_EQ(leased.size(), 2);
  const std::string real = leased[0].receipt_handle();
  ASSERT_GE(real.size(), 4);

  std::vector<std::string> forgeries;
  // Alter one character at several places (not the last: with base64 its low
  // bits may be padding that a decoder ignores).
  for (size_t pos : {size_t{0}, real.size() / 4, real.size() / 2,
                     3 * real.size() / 4, real.size() - 2}) {
    std::string forged = real;
    forged[pos] = forged[pos] == 'A' ? 'B' : 'A';
    forgeries.push_back(forged);
  }
  // Swap two differing characters.
  for (size_t i = 1; i < real.size(); ++i) {
    if (real[i] != real[0]) {
      std::string swapped = real;
      std::swap(swapped[0], swapped[i]);
      forgeries.push_back(swapped);
      break;
    }
  }
  forgeries.push_back(real.substr(0, real.size() - 1));
  forgeries.push_back(real + "A");
  forgeries.push_back(std::string(real.size(), 'A'));
  forgeries.push_back(std::string(real.size(), '~'));
  forgeries.push_back("\xc3\xa9" + real.substr(2));
  forgeries.push_back(std::string(10'000, 'A'));

  for (const std::string& forged : forgeries) {
    Reply<weir::v1::DeleteResponse> deleted = client().Delete(queue, {forged});
    ASSERT_TRUE(deleted.ok()) << Describe(deleted.status);
    ASSERT_EQ(deleted.response.results_size(), 1);
    const int code = deleted.response.results(0).code();
    EXPECT_TRUE(code == kCodeInvalidArgument || code == kCodeFailedPrecondition)
        << "Delete with forged receipt \"" << forged.substr(0, 100)
        << "\" answered " << CodeName(code) << ": "
        << deleted.response.results(0).message();

    Reply<weir::v1::ChangeVisibilityResponse> changed =
        client().ChangeVisibility(queue, {{forged, 0}});
    ASSERT_TRUE(changed.ok()) << Describe(changed.status);
    ASSERT_EQ(changed.response.results_size(), 1);
    const int change_code = changed.response.results(0).code();
    EXPECT_TRUE(change_code == kCodeInvalidArgument ||
                change_code == kCodeFailedPrecondition)
        << "ChangeVisibility with forged receipt \"" << forged.substr(0, 100)
        << "\" answered " << CodeName(change_code) << ": "
        << changed.response.results(0).message();
  }

  // Both leases are intact.
  QueueStats stats = Stats(queue);
  EXPECT_EQ(stats.in_flight(), 2);
  EXPECT_EQ(stats.deleted_total(), 0);
  ExpectNothingReady(queue);
  Reply<weir::v1::DeleteResponse> deleted = client().Delete(
      queue, {leased[0].receipt_handle(), leased[1].receipt_handle()});
  ASSERT_TRUE(deleted.ok()) << Describe(deleted.status);
  ASSERT_EQ(deleted.response.results_size(), 2);
  EXPECT_TRUE(HasEntryCode(deleted.response.results(0), kCodeOk));
  EXPECT_TRUE(HasEntryCode(deleted.response.results(1), kCodeOk));
}

TEST_F(E2ETest, ConfigOutOfRangeIsRejected) {
  struct Case {
    const char* what;
    int64_t visibility_timeout_ms;
    int64_t max_message_bytes;
    int64_t delay_ms;
  };
  const Case bad[] = {
      {"negative visibility timeout", -1, 0, 0},
      {"visibility timeout over 12 h", kMaxVisibilityTimeoutMs + 1, 0, 0},
      {"negative max message bytes", 0, -1, 0},
      {"max message bytes over 4 MiB", 0, kMaxMessageBytesLimit + 1, 0},
      {"negative delay", 0, 0, -1},
      {"delay over 15 min", 0, 0, kMaxDelayMs + 1},
  };
  for (const Case& c : bad) {
    const std::string name = UniqueName("bad-config");
    QueueConfig config;
    config.set_visibility_timeout_ms(c.visibility_timeout_ms);
    config.set_max_message_bytes(c.max_message_bytes);
    config.set_delay_ms(c.delay_ms);
    EXPECT_TRUE(HasCode(client().CreateQueue(name, config).status,
                        StatusCode::INVALID_ARGUMENT))
        << c.what;
    EXPECT_TRUE(HasCode(client().GetQueue(name).status, StatusCode::NOT_FOUND))
        << c.what << ": the refused queue exists";
  }

  QueueConfig at_limits;
  at_limits.set_visibility_timeout_ms(kMaxVisibilityTimeoutMs);
  at_limits.set_max_message_bytes(kMaxMessageBytesLimit);
  at_limits.set_delay_ms(kMaxDelayMs);
  Reply<weir::v1::CreateQueueResponse> created =
      client().CreateQueue(UniqueName("limits"), at_limits);
  ASSERT_TRUE(created.ok()) << Describe(created.status);
  EXPECT_EQ(created.response.queue().config().visibility_timeout_ms(),
            kMaxVisibilityTimeoutMs);
  EXPECT_EQ(created.response.queue().config().max_message_bytes(),
            kMaxMessageBytesLimit);
  EXPECT_EQ(created.response.queue().config().delay_ms(), kMaxDelayMs);
}

TEST_F(E2ETest, QueueDelayHoldsMessagesBack) {
  QueueConfig config;
  config.set_delay_ms(kLongLeaseMs);
  const std::string queue = NewQueue("queue-delay", config);
  SendOk(queue, {"held"});
  // An explicit zero delay overrides the queue's.
  SendRequest now;
  now.set_queue(queue);
  weir::v1::SendEntry* entry = now.add_entries();
  entry->set_body("now");
  entry->set_delay_ms(0);
  ASSERT_TRUE(client().Send(now).ok());

  QueueStats stats = Stats(queue);
  EXPECT_EQ(stats.delayed(), 1);
  EXPECT_EQ(stats.ready(), 1);
  std::vector<Message> received = ReceiveCount(queue, 1, kLongLeaseMs);
  ASSERT_EQ(received.size(), 1);
  EXPECT_EQ(received[0].body(), "now");
  ExpectNothingReady(queue);
}

// A server of its own: SIGTERM ends it with exit code 0 and a restart on the
// same data directory finds the queue and its messages.
TEST(E2EShutdown, SigtermExitsCleanlyAndKeepsData) {
  absl::StatusOr<std::unique_ptr<ServerProcess>> server =
      ServerProcess::Start();
  ASSERT_TRUE(server.ok()) << server.status();
  {
    TestClient client((*server)->Channel());
    Reply<weir::v1::CreateQueueResponse> created = client.CreateQueue("kept");
    ASSERT_TRUE(created.ok()) << Describe(created.status);
    Reply<weir::v1::SendResponse> sent =
        client.SendBodies("kept", {"survivor"});
    ASSERT_TRUE(sent.ok()) << Describe(sent.status);
  }
  absl::StatusOr<int> exit_code = (*server)->Stop();
  ASSERT_TRUE(exit_code.ok()) << exit_code.status();
  EXPECT_EQ(*exit_code, 0);

  ASSERT_TRUE((*server)->Restart().ok());
  TestClient client((*server)->Channel());
  Reply<weir::v1::Queue> queue = client.GetQueue("kept");
  ASSERT_TRUE(queue.ok()) << Describe(queue.status);
  Reply<weir::v1::ReceiveResponse> received =
      client.Receive("kept", 10, kLongLeaseMs, /*wait_time_ms=*/1000);
  ASSERT_TRUE(received.ok()) << Describe(received.status);
  ASSERT_EQ(received.response.messages_size(), 1);
  EXPECT_EQ(received.response.messages(0).body(), "survivor");
  EXPECT_EQ(received.response.messages(0).receive_count(), 1);

  exit_code = (*server)->Stop();
  ASSERT_TRUE(exit_code.ok()) << exit_code.status();
  EXPECT_EQ(*exit_code, 0);
}

}  // namespace
}  // namespace weir::test
