// weir::Client: a typed, synchronous C++ client for the weir.v1.Weir service.
// One method per RPC (Subscribe is used through weir::Consumer); every call
// returns absl::Status / absl::StatusOr with the server's gRPC code and
// message unchanged, and carries a deadline. Calls block their caller; they
// are made through gRPC's callback API and waited for (client/call.h), so
// make them from threads of your own, not from a gRPC callback reaction.
//
//   absl::StatusOr<std::unique_ptr<weir::Client>> client =
//       weir::Client::Connect("127.0.0.1:50051");
//   absl::StatusOr<uint64_t> offset = (*client)->SendBody("orders", "{}");
#ifndef WEIR_CLIENT_CLIENT_H_
#define WEIR_CLIENT_CLIENT_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/channel.h"
#include "grpcpp/support/status.h"
#include "weir/v1/weir.grpc.pb.h"
#include "weir/v1/weir.pb.h"

namespace weir {

// TLS for the channel. Paths name PEM files, read once by Client::Connect.
struct TlsOptions {
  // Certificates that may sign the server's certificate. Empty: gRPC's
  // default roots (GRPC_DEFAULT_SSL_ROOTS_FILE_PATH or the system's).
  std::string root_certs_path;
  // A client certificate chain and its private key, for servers that ask for
  // one (mutual TLS). Both or neither.
  std::string client_cert_path;
  std::string client_key_path;
  // Checks the server's certificate against this name instead of the host
  // of the address (tests and IP addresses).
  std::string server_name_override;
};

struct ClientOptions {
  // Unset: plaintext (the server's default). Set: TLS with these settings.
  std::optional<TlsOptions> tls;
  // The deadline of a call that names none (CallOptions::timeout). A
  // Receive's deadline is this plus its wait time.
  absl::Duration default_timeout = absl::Seconds(30);
  // Longest pause between gRPC's attempts to reconnect the channel after it
  // lost its connection. gRPC's own default is 120 s; a consumer should find
  // a restarted server sooner.
  absl::Duration max_reconnect_backoff = absl::Seconds(2);
  // Give the channel a TCP connection of its own instead of sharing one with
  // other channels to the same address.
  bool dedicated_connection = false;
};

// Per-call settings.
struct CallOptions {
  // The call's deadline from now. Zero: ClientOptions::default_timeout.
  absl::Duration timeout = absl::ZeroDuration();
  // While the channel cannot connect (server down or restarting), wait for
  // it until the deadline instead of failing at once with UNAVAILABLE.
  bool wait_for_ready = false;
};

struct ReceiveOptions {
  // The consumer group; empty for the default group.
  std::string group;
  // 1..1000.
  int32_t max_messages = 1;
  // Lease duration; unset: the queue's visibility timeout.
  std::optional<absl::Duration> visibility_timeout;
  // Long poll: wait up to this long (0..20 s) for a first message.
  absl::Duration wait = absl::ZeroDuration();
};

// The gRPC status as an absl::Status with the same code and message.
absl::Status FromGrpcStatus(const grpc::Status& status);
// The outcome of one entry of a batch call (a google.rpc.Code and message).
absl::Status FromEntryResult(const v1::EntryResult& result);

// Log positions (CreateGroup, SeekGroup, Read).
v1::LogPosition EarliestPosition();
v1::LogPosition LatestPosition();
v1::LogPosition OffsetPosition(uint64_t offset);
v1::LogPosition TimePosition(absl::Time time);

// A connection to one Weir server. Thread-safe: any number of threads may
// call any method at once (they share one gRPC channel, which multiplexes
// the calls). Every method blocks until the server answers or the deadline
// passes (DEADLINE_EXCEEDED); an unreachable server is UNAVAILABLE. Other
// codes are the server's (NOT_FOUND, INVALID_ARGUMENT, ...; see weir.proto).
class Client {
 public:
  // The most entries one call may carry, the server's limit (weir.proto):
  // messages of a Send, receipts of a Delete, changes of a ChangeVisibility,
  // and deletes, extensions and releases of one Subscribe request. Delete
  // and ChangeVisibility below split longer lists themselves.
  static constexpr int kMaxBatchEntries = 1000;

  // Creates a client for `address` ("host:port"). The channel connects
  // lazily, so an unreachable server is reported by the first call, not
  // here. Fails with INVALID_ARGUMENT / NOT_FOUND when a TLS file named in
  // `options` cannot be read or only one of cert and key is given.
  static absl::StatusOr<std::unique_ptr<Client>> Connect(
      const std::string& address, ClientOptions options = {});

  // A client on an existing channel (tests; sharing a channel).
  Client(std::shared_ptr<grpc::Channel> channel, ClientOptions options = {});

  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Queues.
  absl::StatusOr<v1::CreateQueueResponse> CreateQueue(
      const std::string& name, const v1::QueueConfig& config = {},
      const CallOptions& call = {});
  absl::StatusOr<v1::Queue> GetQueue(const std::string& name,
                                     const CallOptions& call = {});
  // Sets the QueueConfig fields named in `paths` (e.g.
  // "visibility_timeout_ms") from `config`.
  absl::StatusOr<v1::Queue> UpdateQueue(const std::string& name,
                                        const v1::QueueConfig& config,
                                        const std::vector<std::string>& paths,
                                        const CallOptions& call = {});
  // Every queue whose name starts with `prefix`, following the pages; each
  // page gets a deadline of its own.
  absl::StatusOr<std::vector<v1::Queue>> ListQueues(
      const std::string& prefix = "", const CallOptions& call = {});
  absl::Status DeleteQueue(const std::string& name,
                           const CallOptions& call = {});
  // Returns how many messages were removed.
  absl::StatusOr<uint64_t> PurgeQueue(const std::string& name,
                                      const CallOptions& call = {});
  absl::StatusOr<v1::QueueStats> GetQueueStats(const std::string& queue,
                                               const std::string& group = "",
                                               const CallOptions& call = {});

  // Appends `entries` (1..1000) atomically; returns their offsets in order.
  // All or nothing: one bad entry refuses the batch.
  absl::StatusOr<std::vector<uint64_t>> Send(
      const std::string& queue, const std::vector<v1::SendEntry>& entries,
      const CallOptions& call = {});
  // Sends one message; returns its offset.
  absl::StatusOr<uint64_t> SendBody(
      const std::string& queue, const std::string& body,
      const std::map<std::string, std::string>& attributes = {},
      const CallOptions& call = {});
  // Leases up to options.max_messages messages; may return none when nothing
  // is ready within options.wait.
  absl::StatusOr<std::vector<v1::Message>> Receive(
      const std::string& queue, const ReceiveOptions& options = {},
      const CallOptions& call = {});
  // Deletes `receipts` (at most 1000), then leases as Receive does, in one
  // call: a consumer acknowledges its last batch and takes the next. A call
  // refused for its options deletes nothing; one that fails later
  // (cancelled, deadline) may have deleted them, and deleting again is
  // harmless.
  struct DeleteAndReceiveResult {
    // One per receipt, in order, as from Delete.
    std::vector<absl::Status> deletes;
    std::vector<v1::Message> messages;
  };
  absl::StatusOr<DeleteAndReceiveResult> DeleteAndReceive(
      const std::string& queue, const std::vector<std::string>& receipts,
      const ReceiveOptions& options = {}, const CallOptions& call = {});
  // Deletes by receipt. The outer status is the call's; the vector has one
  // status per receipt, in order (FAILED_PRECONDITION: the lease ended).
  // More than 1000 receipts are sent as several calls.
  absl::StatusOr<std::vector<absl::Status>> Delete(
      const std::string& queue, const std::vector<std::string>& receipts,
      const CallOptions& call = {});
  // Extends, releases (0) or postpones leases; results as for Delete.
  absl::StatusOr<std::vector<absl::Status>> ChangeVisibility(
      const std::string& queue,
      const std::vector<v1::VisibilityChange>& changes,
      const CallOptions& call = {});

  // Consumer groups and replay.
  absl::StatusOr<v1::Group> CreateGroup(const std::string& queue,
                                        const std::string& name,
                                        const v1::LogPosition& start = {},
                                        const CallOptions& call = {});
  absl::Status DeleteGroup(const std::string& queue, const std::string& name,
                           const CallOptions& call = {});
  absl::StatusOr<std::vector<v1::Group>> ListGroups(
      const std::string& queue, const CallOptions& call = {});
  absl::StatusOr<v1::Group> SeekGroup(const std::string& queue,
                                      const std::string& name,
                                      const v1::LogPosition& to,
                                      const CallOptions& call = {});
  // Up to max_messages (0 = 100) retained messages from `from` on, without
  // leasing them, and where the next Read should start.
  absl::StatusOr<v1::ReadResponse> Read(const std::string& queue,
                                        const v1::LogPosition& from,
                                        int32_t max_messages = 0,
                                        int64_t max_bytes = 0,
                                        const CallOptions& call = {});
  // Moves up to max_messages (0 = all) messages out of dead-letter queue
  // `dlq`; returns how many moved.
  absl::StatusOr<uint64_t> Redrive(const std::string& dlq,
                                   const std::string& to_queue = "",
                                   int32_t max_messages = 0,
                                   const CallOptions& call = {});

  // The generated stub, for what has no method here (Subscribe). Thread-safe.
  v1::Weir::Stub& stub() { return *stub_; }
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }
  const ClientOptions& options() const { return options_; }

  // Sets `context`'s deadline from `call` (or the default timeout), plus
  // `extra`, and its wait_for_ready.
  void SetDeadline(grpc::ClientContext& context, const CallOptions& call,
                   absl::Duration extra = absl::ZeroDuration()) const;

 private:
  // One Receive call, its deadline stretched by `wait`.
  grpc::Status CallReceive(const v1::ReceiveRequest& request,
                           absl::Duration wait, const CallOptions& call,
                           v1::ReceiveResponse* response);

  ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Weir::Stub> stub_;
};

}  // namespace weir

#endif  // WEIR_CLIENT_CLIENT_H_
