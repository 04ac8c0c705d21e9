#include "client/client.h"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/call.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"

namespace weir {
namespace {

absl::StatusOr<std::string> ReadPemFile(const std::string& path,
                                        const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("cannot read the ", what, " file \"", path, "\""));
  }
  std::stringstream content;
  content << in.rdbuf();
  return content.str();
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> Credentials(
    const ClientOptions& options, grpc::ChannelArguments& args) {
  if (!options.tls.has_value()) return grpc::InsecureChannelCredentials();
  const TlsOptions& tls = *options.tls;
  if (tls.client_cert_path.empty() != tls.client_key_path.empty()) {
    return absl::InvalidArgumentError(
        "TLS client certificate and key: give both or neither");
  }
  grpc::SslCredentialsOptions ssl;
  if (!tls.root_certs_path.empty()) {
    absl::StatusOr<std::string> roots =
        ReadPemFile(tls.root_certs_path, "root certificates");
    if (!roots.ok()) return roots.status();
    ssl.pem_root_certs = *std::move(roots);
  }
  if (!tls.client_cert_path.empty()) {
    absl::StatusOr<std::string> cert =
        ReadPemFile(tls.client_cert_path, "client certificate");
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key =
        ReadPemFile(tls.client_key_path, "client key");
    if (!key.ok()) return key.status();
    ssl.pem_cert_chain = *std::move(cert);
    ssl.pem_private_key = *std::move(key);
  }
  if (!tls.server_name_override.empty()) {
    args.SetSslTargetNameOverride(tls.server_name_override);
  }
  return grpc::SslCredentials(ssl);
}

grpc::ChannelArguments BaseArguments(const ClientOptions& options) {
  grpc::ChannelArguments args;
  // A Receive of 1000 messages can exceed gRPC's 4 MiB default.
  args.SetMaxReceiveMessageSize(-1);
  args.SetInt(
      GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
      static_cast<int>(std::max<int64_t>(
          1, absl::ToInt64Milliseconds(options.max_reconnect_backoff))));
  args.SetInt(
      GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
      static_cast<int>(std::clamp<int64_t>(
          absl::ToInt64Milliseconds(options.max_reconnect_backoff), 1, 100)));
  if (options.dedicated_connection) {
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  }
  return args;
}

absl::Status ResultCountMismatch(int sent, int received) {
  return absl::InternalError(absl::StrCat("the server answered ", received,
                                          " results for ", sent, " entries"));
}

// Appends the per-entry results of one batch call to `out`.
absl::Status AppendResults(
    const google::protobuf::RepeatedPtrField<v1::EntryResult>& results,
    int sent, std::vector<absl::Status>& out) {
  if (results.size() != sent) return ResultCountMismatch(sent, results.size());
  for (const v1::EntryResult& result : results) {
    out.push_back(FromEntryResult(result));
  }
  return absl::OkStatus();
}

// Splits `n` entries into calls of at most Client::kMaxBatchEntries each:
// runs `call(first, end, results)` for every chunk in order (once even for
// none, so the server still validates the request) and stops at the first
// call that fails as a whole.
template <typename ChunkCall>
absl::StatusOr<std::vector<absl::Status>> InChunks(size_t n, ChunkCall call) {
  std::vector<absl::Status> results;
  results.reserve(n);
  size_t first = 0;
  do {
    const size_t end =
        std::min(n, first + static_cast<size_t>(Client::kMaxBatchEntries));
    if (absl::Status s = call(first, end, results); !s.ok()) return s;
    first = end;
  } while (first < n);
  return results;
}

}  // namespace

absl::Status FromGrpcStatus(const grpc::Status& status) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

absl::Status FromEntryResult(const v1::EntryResult& result) {
  return absl::Status(static_cast<absl::StatusCode>(result.code()),
                      result.message());
}

v1::LogPosition EarliestPosition() {
  v1::LogPosition position;
  position.set_earliest(true);
  return position;
}

v1::LogPosition LatestPosition() {
  v1::LogPosition position;
  position.set_latest(true);
  return position;
}

v1::LogPosition OffsetPosition(uint64_t offset) {
  v1::LogPosition position;
  position.set_offset(offset);
  return position;
}

v1::LogPosition TimePosition(absl::Time time) {
  v1::LogPosition position;
  position.set_time_ms(absl::ToUnixMillis(time));
  return position;
}

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(
    const std::string& address, ClientOptions options) {
  grpc::ChannelArguments args = BaseArguments(options);
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
      Credentials(options, args);
  if (!credentials.ok()) return credentials.status();
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateCustomChannel(address, *credentials, args);
  return std::make_unique<Client>(std::move(channel), std::move(options));
}

Client::Client(std::shared_ptr<grpc::Channel> channel, ClientOptions options)
    : options_(std::move(options)),
      channel_(std::move(channel)),
      stub_(v1::Weir::NewStub(channel_)) {}

void Client::SetDeadline(grpc::ClientContext& context, const CallOptions& call,
                         absl::Duration extra) const {
  const absl::Duration timeout = call.timeout > absl::ZeroDuration()
                                     ? call.timeout
                                     : options_.default_timeout;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout + extra));
  context.set_wait_for_ready(call.wait_for_ready);
}

absl::StatusOr<v1::CreateQueueResponse> Client::CreateQueue(
    const std::string& name, const v1::QueueConfig& config,
    const CallOptions& call) {
  v1::CreateQueueRequest request;
  request.set_name(name);
  *request.mutable_config() = config;
  v1::CreateQueueResponse response;
  grpc::ClientContext context;
  SetDeadline(context, call);
  grpc::Status status =
      CallAndWait(stub_->async(), &v1::Weir::Stub::async::CreateQueue, &context,
                  request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

absl::StatusOr<v1::Queue> Client::GetQueue(const std::string& name,
                                           const CallOptions& call) {
  v1::GetQueueRequest request;
  request.set_name(name);
  v1::Queue response;
  grpc::ClientContext context;
  SetDeadline(context, call);
  grpc::Status status =
      CallAndWait(stub_->async(), &v1::Weir::Stub::async::GetQueue, &context,
                  request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

absl::StatusOr<v1::Queue> Client::UpdateQueue(
    const std::string& name, const v1::QueueConfig& config,
    const std::vector<std::string>& paths, const CallOptions& call) {
  v1::UpdateQueueRequest request;
  request.set_name(name);
  *request.mutable_config() = config;
  for (const std::string& path : paths) {
    request.mutable_update_mask()->add_paths(path);
  }
  v1::Queue response;
  grpc::ClientContext context;
  SetDeadline(context, call);
  grpc::Status status =
      CallAndWait(stub_->async(), &v1::Weir::Stub::async::UpdateQueue, &context,
                  request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

absl::StatusOr<std::vector<v1::Queue>> Client::ListQueues(
    const std::string& prefix, const CallOptions& call) {
  std::vector<v1::Queue> queues;
  v1::ListQueuesRequest request;
  request.set_prefix(prefix);
  do {
    v1::ListQueuesResponse response;
    grpc::ClientContext context;
    SetDeadline(context, call);
    grpc::Status status =
        CallAndWait(stub_->async(), &v1::Weir::Stub::async::ListQueues,
                    &context, request, &response);
    if (!status.ok()) return FromGrpcStatus(status);
    for (v1::Queue& queue : *response.mutable_queues()) {
      queues.push_back(std::move(queue));
    }
    request.set_page_token(response.next_page_token());
  } while (!request.page_token().empty());
  return queues;
}

absl::Status Client::DeleteQueue(const std::string& name,
                                 const CallOptions& call) {
  v1::DeleteQueueRequest request;
  request.set_name(name);
  v1::DeleteQueueResponse response;
  grpc::ClientContext context;
  SetDeadline(context, call);
  return FromGrpcStatus(CallAndWait(stub_->async(),
                                    &v1::Weir::Stub::async::DeleteQueue,
                                    &context, request, &response));
}

absl::StatusOr<uint64_t> Client::PurgeQueue(const std::string& name,
                                            const CallOptions& call) {
  v1::PurgeQueueRequest request;
  request.set_name(name);
  v1::PurgeQueueResponse response;
  grpc::ClientContext context;
  SetDeadline(context, call);
  grpc::Status status =
      CallAndWait(stub_->async(), &v1::Weir::Stub::async::PurgeQueue, &context,
                  request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response.purged();
}

absl::StatusOr<v1::QueueStats> Client::GetQueueStats(const std::string& queue,
                                                     const std::string& group,
                                                     const CallOptions& call) {
  v1::GetQueueStatsRequest request;
  request.set_name(queue);
  request.set_group(group);
  v1::QueueStats response;
  grpc::ClientContext context;
  SetDeadline(context, call);
  grpc::Status status =
      CallAndWait(stub_->async(), &v1::Weir::Stub::async::GetQueueStats,
                  &context, request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

absl::StatusOr<std::vector<uint64_t>> Client::Send(
    const std::string& queue, const std::vector<v1::SendEntry>& entries,
    const CallOptions& call) {
  v1::SendRequest request;
  request.set_queue(queue);
  request.mutable_entries()->Reserve(static_cast<int>(entries.size()));
  for (const v1::SendEntry& entry : entries) *request.add_entries() = entry;
  v1::SendResponse response;
  grpc::ClientContext context;
  SetDeadline(context, call);
  grpc::Status status =
      CallAndWait(stub_->async(), &v1::Weir::Stub::async::Send, &context,
                  request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  if (response.offsets_size() != request.entries_size()) {
    return ResultCountMismatch(request.entries_size(), response.offsets_size());
  }
  return std::vector<uint64_t>(response.offsets().begin(),
                               response.offsets().end());
}

absl::StatusOr<uint64_t> Client::SendBody(
    const std::string& queue, const std::string& body,
    const std::map<std::string, std::string>& attributes,
    const CallOptions& call) {
  std::vector<v1::SendEntry> entries(1);
  entries[0].set_body(body);
  entries[0].mutable_attributes()->insert(attributes.begin(), attributes.end());
  absl::StatusOr<std::vector<uint64_t>> offsets = Send(queue, entries, call);
  if (!offsets.ok()) return offsets.status();
  return offsets->front();
}

namespace {

v1::ReceiveRequest ReceiveRequestOf(const std::string& queue,
                                    const ReceiveOptions& options) {
  v1::ReceiveRequest request;
  request.set_queue(queue);
  request.set_group(options.group);
  request.set_max_messages(options.max_messages);
  if (options.visibility_timeout.has_value()) {
    request.set_visibility_timeout_ms(
        absl::ToInt64Milliseconds(*options.visibility_timeout));
  }
  request.set_wait_time_ms(absl::ToInt64Milliseconds(options.wait));
  return request;
}

std::vector<v1::Message> TakeMessages(v1::ReceiveResponse& response) {
  return std::vector<v1::Message>(
      std::make_move_iterator(response.mutable_messages()->begin()),
      std::make_move_iterator(response.mutable_messages()->end()));
}

}  // namespace

grpc::Status Client::CallReceive(const v1::ReceiveRequest& request,
                                 absl::Duration wait, const CallOptions& call,
                                 v1::ReceiveResponse* response) {
  grpc::ClientContext context;
  // The long poll may use all of its wait before the server answers.
  SetDeadline(context, call, std::max(wait, absl::ZeroDuration()));
  return CallAndWait(stub_->async(), &v1::Weir::Stub::async::Receive, &context,
                     request, response);
}

absl::StatusOr<std::vector<v1::Message>> Client::Receive(
    const std::string& queue, const ReceiveOptions& options,
    const CallOptions& call) {
  v1::ReceiveResponse response;
  grpc::Status status = CallReceive(ReceiveRequestOf(queue, options),
                                    options.wait, call, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return TakeMessages(response);
}

absl::StatusOr<Client::DeleteAndReceiveResult> Client::DeleteAndReceive(
    const std::string& queue, const std::vector<std::string>& receipts,
    const ReceiveOptions& options, const CallOptions& call) {
  v1::ReceiveRequest request = ReceiveRequestOf(queue, options);
  for (const std::string& r : receipts) request.add_delete_receipt_handles(r);
  v1::ReceiveResponse response;
  grpc::Status status = CallReceive(request, options.wait, call, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  DeleteAndReceiveResult result;
  if (absl::Status s =
          AppendResults(response.delete_results(),
                        request.delete_receipt_handles_size(), result.deletes);
      !s.ok()) {
    return s;
  }
  result.messages = TakeMessages(response);
  return result;
}

absl::StatusOr<std::vector<absl::Status>> Client::Delete(
    const std::string& queue, const std::vector<std::string>& receipts,
    const CallOptions& call) {
  return InChunks(receipts.size(), [&](size_t first, size_t end,
                                       std::vector<absl::Status>& results) {
    v1::DeleteRequest request;
    request.set_queue(queue);
    for (size_t i = first; i < end; ++i) {
      request.add_receipt_handles(receipts[i]);
    }
    v1::DeleteResponse response;
    grpc::ClientContext context;
    SetDeadline(context, call);
    grpc::Status status =
        CallAndWait(stub_->async(), &v1::Weir::Stub::async::Delete, &context,
                    request, &response);
    if (!status.ok()) return FromGrpcStatus(status);
    return AppendResults(response.results(), request.receipt_handles_size(),
                         results);
  });
}

absl::StatusOr<std::vector<absl::Status>> Client::ChangeVisibility(
    const std::string& queue, const std::vector<v1::VisibilityChange>& changes,
    const CallOptions& call) {
  return InChunks(changes.size(), [&](size_t first, size_t end,
                                      std::vector<absl::Status>& results) {
    v1::ChangeVisibilityRequest request;
    request.set_queue(queue);
    for (size_t i = first; i < end; ++i) *request.add_entries() = changes[i];
    v1::ChangeVisibilityResponse response;
    grpc::ClientContext context;
    SetDeadline(context, call);
    grpc::Status status =
        CallAndWait(stub_->async(), &v1::Weir::Stub::async::ChangeVisibility,
                    &context, request, &response);
    if (!status.ok()) return FromGrpcStatus(status);
    return AppendResults(response.results(), request.entries_size(), results);
  });
}

absl::StatusOr<v1::Group> Client::CreateGroup(const std::string& queue,
                                              const std::string& name,
                                              const v1::LogPosition& start,
                                              const CallOptions& call) {
  v1::CreateGroupRequest request;
  request.set_queue(queue);
  request.set_name(name);
  *request.mutable_start() = start;
  v1::Group response;
  grpc::ClientContext context;
  SetDeadline(context, call);
  grpc::Status status =
      CallAndWait(stub_->async(), &v1::Weir::Stub::async::CreateGroup, &context,
                  request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

absl::Status Client::DeleteGroup(const std::string& queue,
                                 const std::string& name,
                                 const CallOptions& call) {
  v1::DeleteGroupRequest request;
  request.set_queue(queue);
  request.set_name(name);
  v1::DeleteGroupResponse response;
  grpc::ClientContext context;
  SetDeadline(context, call);
  return FromGrpcStatus(CallAndWait(stub_->async(),
                                    &v1::Weir::Stub::async::DeleteGroup,
                                    &context, request, &response));
}

absl::StatusOr<std::vector<v1::Group>> Client::ListGroups(
    const std::string& queue, const CallOptions& call) {
  v1::ListGroupsRequest request;
  request.set_queue(queue);
  v1::ListGroupsResponse response;
  grpc::ClientContext context;
  SetDeadline(context, call);
  grpc::Status status =
      CallAndWait(stub_->async(), &v1::Weir::Stub::async::ListGroups, &context,
                  request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return std::vector<v1::Group>(response.groups().begin(),
                                response.groups().end());
}

absl::StatusOr<v1::Group> Client::SeekGroup(const std::string& queue,
                                            const std::string& name,
                                            const v1::LogPosition& to,
                                            const CallOptions& call) {
  v1::SeekGroupRequest request;
  request.set_queue(queue);
  request.set_name(name);
  *request.mutable_to() = to;
  v1::Group response;
  grpc::ClientContext context;
  SetDeadline(context, call);
  grpc::Status status =
      CallAndWait(stub_->async(), &v1::Weir::Stub::async::SeekGroup, &context,
                  request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

absl::StatusOr<v1::ReadResponse> Client::Read(const std::string& queue,
                                              const v1::LogPosition& from,
                                              int32_t max_messages,
                                              int64_t max_bytes,
                                              const CallOptions& call) {
  v1::ReadRequest request;
  request.set_queue(queue);
  *request.mutable_from() = from;
  request.set_max_messages(max_messages);
  request.set_max_bytes(max_bytes);
  v1::ReadResponse response;
  grpc::ClientContext context;
  SetDeadline(context, call);
  grpc::Status status =
      CallAndWait(stub_->async(), &v1::Weir::Stub::async::Read, &context,
                  request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

absl::StatusOr<uint64_t> Client::Redrive(const std::string& dlq,
                                         const std::string& to_queue,
                                         int32_t max_messages,
                                         const CallOptions& call) {
  v1::RedriveRequest request;
  request.set_queue(dlq);
  request.set_to_queue(to_queue);
  request.set_max_messages(max_messages);
  v1::RedriveResponse response;
  grpc::ClientContext context;
  SetDeadline(context, call);
  grpc::Status status =
      CallAndWait(stub_->async(), &v1::Weir::Stub::async::Redrive, &context,
                  request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response.moved();
}

}  // namespace weir
