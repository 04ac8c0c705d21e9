// Helpers for tests that call the Weir service over gRPC: every call carries
// a deadline, so a hung server fails the test instead of hanging it, and
// returns its status together with its response.
#ifndef WEIR_TESTS_RPC_HELPERS_H_
#define WEIR_TESTS_RPC_HELPERS_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "grpcpp/channel.h"
#include "grpcpp/support/status.h"
#include "gtest/gtest.h"
#include "weir/v1/weir.grpc.pb.h"
#include "weir/v1/weir.pb.h"

namespace weir::test {

// The deadline of every call, on top of a Receive's wait time.
inline constexpr absl::Duration kRpcTimeout = absl::Seconds(30);

// google.rpc.Code values as EntryResult.code carries them.
inline constexpr int kCodeOk = 0;
inline constexpr int kCodeInvalidArgument = 3;
inline constexpr int kCodeFailedPrecondition = 9;

template <typename T>
struct Reply {
  grpc::Status status;
  T response;

  bool ok() const { return status.ok(); }
};

// A synchronous client on one channel. Thread-safe, like the stub it wraps.
class TestClient {
 public:
  explicit TestClient(std::shared_ptr<grpc::Channel> channel);

  Reply<weir::v1::CreateQueueResponse> CreateQueue(
      const std::string& name, const weir::v1::QueueConfig& config = {});
  Reply<weir::v1::Queue> GetQueue(const std::string& name);
  // UpdateQueue with an update_mask of `paths`.
  Reply<weir::v1::Queue> UpdateQueue(const std::string& name,
                                     const weir::v1::QueueConfig& config,
                                     const std::vector<std::string>& paths);
  Reply<weir::v1::ListQueuesResponse> ListQueues(
      const weir::v1::ListQueuesRequest& request);
  Reply<weir::v1::DeleteQueueResponse> DeleteQueue(const std::string& name);
  Reply<weir::v1::PurgeQueueResponse> PurgeQueue(const std::string& name);
  Reply<weir::v1::QueueStats> GetQueueStats(const std::string& name);
  // The stats of consumer group `group` (empty: the default group).
  Reply<weir::v1::QueueStats> GetQueueStats(const std::string& name,
                                            const std::string& group);

  Reply<weir::v1::SendResponse> Send(const weir::v1::SendRequest& request);
  // Sends one entry per body, without attributes or delay.
  Reply<weir::v1::SendResponse> SendBodies(
      const std::string& queue, const std::vector<std::string>& bodies);

  Reply<weir::v1::ReceiveResponse> Receive(
      const weir::v1::ReceiveRequest& request);
  Reply<weir::v1::ReceiveResponse> Receive(
      const std::string& queue, int32_t max_messages,
      std::optional<int64_t> visibility_timeout_ms, int64_t wait_time_ms = 0);
  // Receive on consumer group `group` (empty: the default group).
  Reply<weir::v1::ReceiveResponse> ReceiveFromGroup(
      const std::string& queue, const std::string& group, int32_t max_messages,
      std::optional<int64_t> visibility_timeout_ms, int64_t wait_time_ms = 0);

  Reply<weir::v1::DeleteResponse> Delete(
      const std::string& queue, const std::vector<std::string>& receipts);
  Reply<weir::v1::ChangeVisibilityResponse> ChangeVisibility(
      const weir::v1::ChangeVisibilityRequest& request);
  // One entry per (receipt, visibility_timeout_ms) pair.
  Reply<weir::v1::ChangeVisibilityResponse> ChangeVisibility(
      const std::string& queue,
      const std::vector<std::pair<std::string, int64_t>>& changes);

  Reply<weir::v1::Group> CreateGroup(const std::string& queue,
                                     const std::string& name,
                                     const weir::v1::LogPosition& start);
  Reply<weir::v1::DeleteGroupResponse> DeleteGroup(const std::string& queue,
                                                   const std::string& name);
  Reply<weir::v1::ListGroupsResponse> ListGroups(const std::string& queue);
  Reply<weir::v1::Group> SeekGroup(const std::string& queue,
                                   const std::string& name,
                                   const weir::v1::LogPosition& to);
  Reply<weir::v1::ReadResponse> Read(const weir::v1::ReadRequest& request);
  Reply<weir::v1::ReadResponse> Read(const std::string& queue,
                                     const weir::v1::LogPosition& from,
                                     int32_t max_messages = 0,
                                     int64_t max_bytes = 0);

  Reply<weir::v1::RedriveResponse> Redrive(const std::string& dlq,
                                           const std::string& to_queue = "",
                                           int32_t max_messages = 0);

  weir::v1::Weir::Stub& stub() { return *stub_; }

 private:
  std::unique_ptr<weir::v1::Weir::Stub> stub_;
};

// LogPosition values: the earliest retained message, the end of the log, an
// offset, a Unix time in milliseconds.
weir::v1::LogPosition Earliest();
weir::v1::LogPosition Latest();
weir::v1::LogPosition AtOffset(uint64_t offset);
weir::v1::LogPosition AtTime(int64_t unix_ms);

// "NOT_FOUND" for grpc::StatusCode::NOT_FOUND (5), "CODE_<n>" if unknown.
std::string CodeName(int code);

// "NOT_FOUND: <message>".
std::string Describe(const grpc::Status& status);

// Succeeds if `status` has `code`; the failure message shows what it had.
::testing::AssertionResult HasCode(const grpc::Status& status,
                                   grpc::StatusCode code);

// Succeeds if `result` has `code` (a google.rpc.Code value).
::testing::AssertionResult HasEntryCode(const weir::v1::EntryResult& result,
                                        int code);

// Milliseconds since the Unix epoch, as the API reports times.
int64_t NowUnixMs();

}  // namespace weir::test

#endif  // WEIR_TESTS_RPC_HELPERS_H_
