// weir::Producer: sends messages to one queue in batches. Messages are
// collected until a batch is full (by count or bytes) or the oldest one has
// waited `linger`, then sent in one Send call; each message gets its own
// result (its offset, or the error) through a future or a callback.
//
//   weir::Producer producer(*client, {.queue = "orders"});
//   std::future<absl::StatusOr<uint64_t>> offset = producer.Send(entry);
//   producer.Flush();
#ifndef WEIR_CLIENT_PRODUCER_H_
#define WEIR_CLIENT_PRODUCER_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "weir/v1/weir.pb.h"

namespace weir {

struct ProducerOptions {
  // The queue every message goes to.
  std::string queue;
  // A batch is sent once it holds this many messages (1..1000)...
  int max_batch_messages = 100;
  // ...or this many bytes of bodies, attributes and keys (a message bigger
  // than this goes in a batch of its own)...
  size_t max_batch_bytes = size_t{1} << 20;
  // ...or once its first message has waited this long. Zero: send as soon as
  // the previous batch is answered.
  absl::Duration linger = absl::Milliseconds(5);
  // Bounded memory: at most this many messages / bytes wait for their result.
  // A Send beyond either limit blocks until room frees up, or, with
  // block_when_full = false, fails at once with RESOURCE_EXHAUSTED.
  size_t max_pending_messages = 10000;
  size_t max_pending_bytes = size_t{64} << 20;
  bool block_when_full = true;
  // The deadline of each Send call.
  CallOptions call;
};

// Counters, for monitoring and tests.
struct ProducerStats {
  uint64_t batches = 0;        // Send calls made (retries of single entries
                               // after an INVALID_ARGUMENT batch included)
  uint64_t largest_batch = 0;  // most messages in one Send call
  uint64_t succeeded = 0;      // messages stored
  uint64_t failed = 0;         // messages that got an error
};

// Batches are sent one at a time, in the order the messages were given, so
// the offsets of one producer's messages increase in Send order.
//
// Results: a message gets its offset once the server has stored it. A batch
// refused whole reports the error to each of its messages; when the refusal
// is INVALID_ARGUMENT (one bad entry, say a body above the queue's maximum)
// and the batch held several messages, each is retried alone so that only
// the bad ones fail. Other errors (NOT_FOUND for an unknown queue,
// UNAVAILABLE, DEADLINE_EXCEEDED) are not retried: a Send that timed out
// may have been stored, and only a dedup_id makes a retry safe.
//
// Thread-safe: any number of threads may call Send and Flush at once.
// Callbacks run on the producer's sending thread, one at a time; they must
// not block for long and must not call Flush or Close (Send is fine unless
// the producer is full and blocking).
class Producer {
 public:
  using Callback = std::function<void(absl::StatusOr<uint64_t>)>;

  // `client` must outlive the producer. Starts the sending thread.
  Producer(Client& client, ProducerOptions options);
  Producer(const Producer&) = delete;
  Producer& operator=(const Producer&) = delete;
  // Close().
  ~Producer();

  // Queues `entry`; the future is ready with its offset or error.
  std::future<absl::StatusOr<uint64_t>> Send(v1::SendEntry entry);
  // Queues `entry`; `done` is called with its offset or error. After Close,
  // `done` is called at once with FAILED_PRECONDITION.
  void Send(v1::SendEntry entry, Callback done);

  // Sends what is queued without waiting for linger and returns once every
  // message queued before the call has its result.
  void Flush();

  // Flushes, then stops the sending thread. Later Sends fail with
  // FAILED_PRECONDITION. Idempotent.
  void Close();

  ProducerStats stats() const;

 private:
  struct Pending {
    v1::SendEntry entry;
    size_t bytes;
    Callback done;
    absl::Time queued;
  };

  void Run();
  // Sends `batch` and reports every result.
  void SendBatch(std::deque<Pending>& batch);
  // One Send call, counted in stats_.
  absl::StatusOr<std::vector<uint64_t>> SendCall(
      const std::vector<v1::SendEntry>& entries);
  // Calls `pending.done` with `result`, counted in stats_.
  void Report(Pending& pending, absl::StatusOr<uint64_t> result);
  // True when the sending thread should take a batch now.
  bool BatchReady() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Client& client_;
  const ProducerOptions options_;

  mutable absl::Mutex mu_;
  std::deque<Pending> queue_ ABSL_GUARDED_BY(mu_);
  // Bytes of the messages queued or being sent.
  size_t pending_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  // Bytes of the messages in queue_ (not yet taken into a batch).
  size_t queue_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  // Messages given to Send and not yet answered.
  size_t PendingMessagesLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return static_cast<size_t>(queued_total_ - answered_total_);
  }
  // Messages ever queued / ever answered; Flush waits for the second to
  // reach the first.
  uint64_t queued_total_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t answered_total_ ABSL_GUARDED_BY(mu_) = 0;
  // The sending thread ignores linger until answered_total_ reaches this.
  uint64_t flush_until_ ABSL_GUARDED_BY(mu_) = 0;
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  ProducerStats stats_ ABSL_GUARDED_BY(mu_);

  std::once_flag close_once_;
  std::thread sender_;
};

}  // namespace weir

#endif  // WEIR_CLIENT_PRODUCER_H_
