// weir::Publisher: sends over one Publish stream instead of one Send call per
// batch. A stream's requests are cheaper for client and server than unary
// calls, and a Publisher may keep many requests in flight (Write, then Read
// their answers), which then share the server's group commits.
//
//   weir::Publisher publisher(*client);
//   absl::StatusOr<std::vector<uint64_t>> offsets =
//       publisher.Send("orders", {entry});
//   absl::Status closed = publisher.Close();
#ifndef WEIR_CLIENT_PUBLISHER_H_
#define WEIR_CLIENT_PUBLISHER_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/client.h"
#include "grpcpp/grpcpp.h"
#include "weir/v1/weir.grpc.pb.h"
#include "weir/v1/weir.pb.h"

namespace weir {

// The answer to one request of a Publish stream.
struct PublishResult {
  // What Write returned for the request.
  uint64_t request_id = 0;
  // OK, or the error a Send call would have returned.
  absl::Status status;
  // When OK, one per entry, in order.
  std::vector<uint64_t> offsets;
};

struct PublisherOptions {
  // The stream's deadline from when it opens. Infinite by default: a stream
  // lives as long as its Publisher. Cancel() ends it from another thread.
  absl::Duration stream_timeout = absl::InfiniteDuration();
  // While the channel cannot connect, wait for it instead of failing the
  // first request with UNAVAILABLE.
  bool wait_for_ready = false;
};

// One Publish stream. A request that fails (unknown queue, bad entry) gets
// its error in its PublishResult and the stream goes on; when the stream
// itself ends (server shutdown, connection lost, deadline, Cancel) Send and
// Write fail with the stream's status; the answers the server sent before
// the end are still returned by Read and Close. Requests not answered by then
// may or may not have been stored: only a dedup_id makes resending them
// safe. Open a new Publisher to go on (ended() says when).
//
// Not thread-safe, except Cancel: use a Publisher from one thread at a time.
// A Write does not wait for the server; keep the number of unanswered
// requests bounded (the server stops reading beyond 1024, or 64 MiB being
// written, and a writer that does not read its answers then blocks).
class Publisher {
 public:
  // Opens the stream on `client`, which must outlive the Publisher. Cannot
  // fail: an unreachable server is reported by the first Send, Write or Read.
  explicit Publisher(Client& client, PublisherOptions options = {});
  Publisher(const Publisher&) = delete;
  Publisher& operator=(const Publisher&) = delete;
  // Cancels the stream if it is still open.
  ~Publisher();

  // Sends `entries` (1..1000) to `queue` and waits for the answer: their
  // offsets, or the request's error. Answers to earlier Writes that arrive
  // meanwhile are kept for Read.
  absl::StatusOr<std::vector<uint64_t>> Send(
      const std::string& queue, const std::vector<v1::SendEntry>& entries);

  // Sends a request without waiting for its answer; returns its request id
  // (1, 2, ... in Write order), which its PublishResult carries.
  absl::StatusOr<uint64_t> Write(const std::string& queue,
                                 const std::vector<v1::SendEntry>& entries);

  // Waits for the next answer to a Write. FAILED_PRECONDITION when no
  // request is unanswered.
  absl::StatusOr<PublishResult> Read();

  // Half-closes the stream, waits for the answers still due and returns
  // them (with any not yet returned by Read) in `rest` when given, and
  // returns the stream's final status: OK when every request was answered.
  // Idempotent.
  absl::Status Close(std::vector<PublishResult>* rest = nullptr);

  // Ends the stream at once. Thread-safe; may be called while another
  // thread is in Send, Write or Read, which then fail with CANCELLED.
  void Cancel() { context_.TryCancel(); }

  // Requests written and not yet returned by Read or Send.
  size_t unanswered() const { return unanswered_ + early_.size(); }

  // True once the stream has ended (see above): Send and Write fail from
  // then on, and Read only returns answers that came before the end.
  bool ended() const { return final_.has_value(); }

 private:
  // Reads one answer from the stream. On a broken stream returns its
  // status (and keeps it for every later call).
  absl::StatusOr<PublishResult> ReadOne();
  // Reads every answer still coming into early_, until the stream ends
  // (which records its status).
  void KeepAnswersUntilTheEnd();
  // Ends the stream and records its status (once). Call only once every
  // answer has been read (gRPC drops unread messages).
  absl::Status FinishStream();
  // The status for a call made after the end: the stream's error, or
  // FAILED_PRECONDITION after a clean close.
  absl::Status EndedStatus() const;

  grpc::ClientContext context_;
  std::unique_ptr<
      grpc::ClientReaderWriter<v1::PublishRequest, v1::PublishResponse>>
      stream_;
  uint64_t next_id_ = 1;
  // Written and not yet read from the stream.
  size_t unanswered_ = 0;
  // Read from the stream by Send while waiting for its own answer.
  std::deque<PublishResult> early_;
  bool half_closed_ = false;
  // Set once the stream has ended.
  std::optional<absl::Status> final_;
};

}  // namespace weir

#endif  // WEIR_CLIENT_PUBLISHER_H_
