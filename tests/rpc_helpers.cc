#include "tests/rpc_helpers.h"

#include <algorithm>
#include <iterator>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpcpp/client_context.h"

namespace weir::test {
namespace {

using ::weir::v1::Weir;

void SetDeadline(grpc::ClientContext* context, absl::Duration timeout) {
  context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
}

// Calls a unary method of `stub` with a deadline of kRpcTimeout + `extra`.
template <typename Request, typename Response>
Reply<Response> Call(Weir::Stub& stub,
                     grpc::Status (Weir::Stub::*method)(grpc::ClientContext*,
                                                        const Request&,
                                                        Response*),
                     const Request& request,
                     absl::Duration extra = absl::ZeroDuration()) {
  grpc::ClientContext context;
  SetDeadline(&context, kRpcTimeout + extra);
  Reply<Response> reply;
  reply.status = (stub.*method)(&context, request, &reply.response);
  return reply;
}

}  // namespace

TestClient::TestClient(std::shared_ptr<grpc::Channel> channel)
    : stub_(Weir::NewStub(std::move(channel))) {}

Reply<weir::v1::CreateQueueResponse> TestClient::CreateQueue(
    const std::string& name, const weir::v1::QueueConfig& config) {
  weir::v1::CreateQueueRequest request;
  request.set_name(name);
  *request.mutable_config() = config;
  return Call(*stub_, &Weir::Stub::CreateQueue, request);
}

Reply<weir::v1::Queue> TestClient::GetQueue(const std::string& name) {
  weir::v1::GetQueueRequest request;
  request.set_name(name);
  return Call(*stub_, &Weir::Stub::GetQueue, request);
}

Reply<weir::v1::Queue> TestClient::UpdateQueue(
    const std::string& name, const weir::v1::QueueConfig& config,
    const std::vector<std::string>& paths) {
  weir::v1::UpdateQueueRequest request;
  request.set_name(name);
  *request.mutable_config() = config;
  for (const std::string& p : paths)
    request.mutable_update_mask()->add_paths(p);
  return Call(*stub_, &Weir::Stub::UpdateQueue, request);
}

Reply<weir::v1::ListQueuesResponse> TestClient::ListQueues(
    const weir::v1::ListQueuesRequest& request) {
  return Call(*stub_, &Weir::Stub::ListQueues, request);
}

Reply<weir::v1::DeleteQueueResponse> TestClient::DeleteQueue(
    const std::string& name) {
  weir::v1::DeleteQueueRequest request;
  request.set_name(name);
  return Call(*stub_, &Weir::Stub::DeleteQueue, request);
}

Reply<weir::v1::PurgeQueueResponse> TestClient::PurgeQueue(
    const std::string& name) {
  weir::v1::PurgeQueueRequest request;
  request.set_name(name);
  return Call(*stub_, &Weir::Stub::PurgeQueue, request);
}

Reply<weir::v1::QueueStats> TestClient::GetQueueStats(const std::string& name) {
  weir::v1::GetQueueStatsRequest request;
  request.set_name(name);
  return Call(*stub_, &Weir::Stub::GetQueueStats, request);
}

Reply<weir::v1::QueueStats> TestClient::GetQueueStats(
    const std::string& name, const std::string& group) {
  weir::v1::GetQueueStatsRequest request;
  request.set_name(name);
  request.set_group(group);
  return Call(*stub_, &Weir::Stub::GetQueueStats, request);
}

Reply<weir::v1::SendResponse> TestClient::Send(
    const weir::v1::SendRequest& request) {
  return Call(*stub_, &Weir::Stub::Send, request);
}

Reply<weir::v1::SendResponse> TestClient::SendBodies(
    const std::string& queue, const std::vector<std::string>& bodies) {
  weir::v1::SendRequest request;
  request.set_queue(queue);
  for (const std::string& body : bodies) {
    request.add_entries()->set_body(body);
  }
  return Send(request);
}

Reply<weir::v1::ReceiveResponse> TestClient::Receive(
    const weir::v1::ReceiveRequest& request) {
  return Call(*stub_, &Weir::Stub::Receive, request,
              absl::Milliseconds(std::max<int64_t>(request.wait_time_ms(), 0)));
}

Reply<weir::v1::ReceiveResponse> TestClient::Receive(
    const std::string& queue, int32_t max_messages,
    std::optional<int64_t> visibility_timeout_ms, int64_t wait_time_ms) {
  weir::v1::ReceiveRequest request;
  request.set_queue(queue);
  request.set_max_messages(max_messages);
  if (visibility_timeout_ms.has_value()) {
    request.set_visibility_timeout_ms(*visibility_timeout_ms);
  }
  request.set_wait_time_ms(wait_time_ms);
  return Receive(request);
}

Reply<weir::v1::ReceiveResponse> TestClient::ReceiveFromGroup(
    const std::string& queue, const std::string& group, int32_t max_messages,
    std::optional<int64_t> visibility_timeout_ms, int64_t wait_time_ms) {
  weir::v1::ReceiveRequest request;
  request.set_queue(queue);
  request.set_group(group);
  request.set_max_messages(max_messages);
  if (visibility_timeout_ms.has_value()) {
    request.set_visibility_timeout_ms(*visibility_timeout_ms);
  }
  request.set_wait_time_ms(wait_time_ms);
  return Receive(request);
}

Reply<weir::v1::DeleteResponse> TestClient::Delete(
    const std::string& queue, const std::vector<std::string>& receipts) {
  weir::v1::DeleteRequest request;
  request.set_queue(queue);
  for (const std::string& receipt : receipts) {
    request.add_receipt_handles(receipt);
  }
  return Call(*stub_, &Weir::Stub::Delete, request);
}

Reply<weir::v1::ChangeVisibilityResponse> TestClient::ChangeVisibility(
    const weir::v1::ChangeVisibilityRequest& request) {
  return Call(*stub_, &Weir::Stub::ChangeVisibility, request);
}

Reply<weir::v1::ChangeVisibilityResponse> TestClient::ChangeVisibility(
    const std::string& queue,
    const std::vector<std::pair<std::string, int64_t>>& changes) {
  weir::v1::ChangeVisibilityRequest request;
  request.set_queue(queue);
  for (const auto& [receipt, timeout_ms] : changes) {
    weir::v1::VisibilityChange* change = request.add_entries();
    change->set_receipt_handle(receipt);
    change->set_visibility_timeout_ms(timeout_ms);
  }
  return ChangeVisibility(request);
}

Reply<weir::v1::Group> TestClient::CreateGroup(
    const std::string& queue, const std::string& name,
    const weir::v1::LogPosition& start) {
  weir::v1::CreateGroupRequest request;
  request.set_queue(queue);
  request.set_name(name);
  *request.mutable_start() = start;
  return Call(*stub_, &Weir::Stub::CreateGroup, request);
}

Reply<weir::v1::DeleteGroupResponse> TestClient::DeleteGroup(
    const std::string& queue, const std::string& name) {
  weir::v1::DeleteGroupRequest request;
  request.set_queue(queue);
  request.set_name(name);
  return Call(*stub_, &Weir::Stub::DeleteGroup, request);
}

Reply<weir::v1::ListGroupsResponse> TestClient::ListGroups(
    const std::string& queue) {
  weir::v1::ListGroupsRequest request;
  request.set_queue(queue);
  return Call(*stub_, &Weir::Stub::ListGroups, request);
}

Reply<weir::v1::Group> TestClient::SeekGroup(const std::string& queue,
                                             const std::string& name,
                                             const weir::v1::LogPosition& to) {
  weir::v1::SeekGroupRequest request;
  request.set_queue(queue);
  request.set_name(name);
  *request.mutable_to() = to;
  return Call(*stub_, &Weir::Stub::SeekGroup, request);
}

Reply<weir::v1::ReadResponse> TestClient::Read(
    const weir::v1::ReadRequest& request) {
  return Call(*stub_, &Weir::Stub::Read, request);
}

Reply<weir::v1::ReadResponse> TestClient::Read(
    const std::string& queue, const weir::v1::LogPosition& from,
    int32_t max_messages, int64_t max_bytes) {
  weir::v1::ReadRequest request;
  request.set_queue(queue);
  *request.mutable_from() = from;
  request.set_max_messages(max_messages);
  request.set_max_bytes(max_bytes);
  return Read(request);
}

Reply<weir::v1::RedriveResponse> TestClient::Redrive(
    const std::string& dlq, const std::string& to_queue, int32_t max_messages) {
  weir::v1::RedriveRequest request;
  request.set_queue(dlq);
  request.set_to_queue(to_queue);
  request.set_max_messages(max_messages);
  return Call(*stub_, &Weir::Stub::Redrive, request);
}

weir::v1::LogPosition Earliest() {
  weir::v1::LogPosition position;
  position.set_earliest(true);
  return position;
}

weir::v1::LogPosition Latest() {
  weir::v1::LogPosition position;
  position.set_latest(true);
  return position;
}

weir::v1::LogPosition AtOffset(uint64_t offset) {
  weir::v1::LogPosition position;
  position.set_offset(offset);
  return position;
}

weir::v1::LogPosition AtTime(int64_t unix_ms) {
  weir::v1::LogPosition position;
  position.set_time_ms(unix_ms);
  return position;
}

std::string CodeName(int code) {
  static constexpr const char* kNames[] = {
      "OK",
      "CANCELLED",
      "UNKNOWN",
      "INVALID_ARGUMENT",
      "DEADLINE_EXCEEDED",
      "NOT_FOUND",
      "ALREADY_EXISTS",
      "PERMISSION_DENIED",
      "RESOURCE_EXHAUSTED",
      "FAILED_PRECONDITION",
      "ABORTED",
      "OUT_OF_RANGE",
      "UNIMPLEMENTED",
      "INTERNAL",
      "UNAVAILABLE",
      "DATA_LOSS",
      "UNAUTHENTICATED",
  };
  if (code >= 0 && code < static_cast<int>(std::size(kNames))) {
    return kNames[code];
  }
  return absl::StrCat("CODE_", code);
}

std::string Describe(const grpc::Status& status) {
  return absl::StrCat(CodeName(status.error_code()), ": \"",
                      status.error_message(), "\"");
}

::testing::AssertionResult HasCode(const grpc::Status& status,
                                   grpc::StatusCode code) {
  if (status.error_code() == code) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "expected " << CodeName(code) << ", got " << Describe(status);
}

::testing::AssertionResult HasEntryCode(const weir::v1::EntryResult& result,
                                        int code) {
  if (result.code() == code) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "expected entry code " << CodeName(code) << ", got "
         << CodeName(result.code()) << ": \"" << result.message() << "\"";
}

int64_t NowUnixMs() { return absl::ToUnixMillis(absl::Now()); }

}  // namespace weir::test
