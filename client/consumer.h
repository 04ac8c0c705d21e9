// weir::Consumer: runs a handler for every message of a queue (or of one
// consumer group) delivered over the Subscribe stream, and does the chores
// around it: N messages in flight on a pool of N handler threads, lease
// heartbeats while a handler runs, delete on success, release with
// exponential back-off on failure, reconnect when the stream breaks, and a
// graceful stop.
//
//   weir::Consumer consumer(*client, {.queue = "orders"},
//                           [](const weir::v1::Message& m) {
//                             return Process(m.body());  // absl::Status
//                           });
//   consumer.Start();
//   ...
//   consumer.Stop();
#ifndef WEIR_CLIENT_CONSUMER_H_
#define WEIR_CLIENT_CONSUMER_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "weir/v1/weir.pb.h"

namespace weir {

// Exponential back-off: the n-th wait (n = 1, 2, ...) is
// min(max, initial * multiplier^(n-1)).
struct Backoff {
  absl::Duration initial = absl::Seconds(1);
  absl::Duration max = absl::Minutes(5);
  double multiplier = 2.0;

  absl::Duration Delay(uint32_t attempt) const;
};

struct ConsumerOptions {
  std::string queue;
  // The consumer group; empty for the default group.
  std::string group;
  // Messages held at once (the stream's credit) and handler threads.
  // 1..1000.
  int max_in_flight = 8;
  // The lease of every delivered message, renewed while its handler runs.
  // 0 < timeout <= 12 h.
  absl::Duration visibility_timeout = absl::Seconds(30);
  // A held message's lease is extended (to visibility_timeout from then)
  // each time this fraction of visibility_timeout has passed since the last
  // extension. 0 < fraction < 1.
  double heartbeat_fraction = 1.0 / 3;
  // When a handler fails, the message is released with a retry delay of
  // retry_backoff.Delay(its receive count): the first failure waits
  // `initial`, each further one `multiplier` times longer, up to `max`
  // (capped at the server's 12 h).
  Backoff retry_backoff;
  // Pauses between attempts to reopen a broken stream; reset once a stream
  // has delivered a message or an ack.
  Backoff reconnect_backoff = {absl::Milliseconds(100), absl::Seconds(5), 2.0};
  // How long Stop waits for running handlers and for the server to confirm
  // the deletes and releases; what is left is released by the server when
  // the stream closes, or lapses with its lease.
  absl::Duration stop_timeout = absl::Seconds(30);
  // Called (from the consumer's stream thread) when a stream ends with an
  // error, before reconnecting; for logging. May be empty.
  std::function<void(const absl::Status&)> on_stream_error;
};

// Counters, for monitoring and tests.
struct ConsumerStats {
  uint64_t delivered = 0;      // messages pushed to this consumer
  uint64_t succeeded = 0;      // handler returned OK
  uint64_t failed = 0;         // handler returned an error (or threw)
  uint64_t deleted = 0;        // deletes the server confirmed
  uint64_t delete_errors = 0;  // deletes the server refused (lease lost)
  uint64_t released = 0;       // releases the server confirmed
  uint64_t extend_errors = 0;  // extensions refused (lease lost)
  uint64_t streams_opened = 0;
  uint64_t stream_errors = 0;
};

// Delivery is at least once: a handler may see a message again when its
// lease was lost (stream broke before the delete was confirmed, the
// heartbeat came too late). Make handlers idempotent.
//
// Reconnecting: when the stream ends with any error other than those below
// (UNAVAILABLE on server shutdown or restart, a cut connection, ...), the
// consumer reopens it after reconnect_backoff, as long as it is not stopped.
// Handlers running meanwhile go on; their deletes and releases are sent on
// the next stream (a delete not confirmed before a break is sent again: a
// repeated delete is harmless). It gives up, and status() says why, on
// INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED, UNAUTHENTICATED and
// UNIMPLEMENTED: retrying those cannot help.
//
// Thread safety: Start, Stop, stats and status may be called from any
// thread; Stop must not be called from the handler. The handler runs on up
// to max_in_flight threads at once and must be thread-safe.
class Consumer {
 public:
  // Returns OK to have the message deleted, an error to have it retried
  // after the back-off. A handler that throws counts as failed.
  using Handler = std::function<absl::Status(const v1::Message&)>;

  // `client` must outlive the consumer. Nothing happens before Start.
  Consumer(Client& client, ConsumerOptions options, Handler handler);
  Consumer(const Consumer&) = delete;
  Consumer& operator=(const Consumer&) = delete;
  // Stop().
  ~Consumer();

  // Opens the stream and starts the handler threads. INVALID_ARGUMENT for
  // bad options, FAILED_PRECONDITION if started before. Errors of the
  // stream itself come later, through status() and on_stream_error.
  absl::Status Start();

  // Stops gracefully and blocks until done: no new messages are taken (no
  // more credit); messages delivered but not started are released at once;
  // running handlers finish and their messages are deleted or released;
  // once the server has confirmed those (or stop_timeout passed) the stream
  // is closed. Idempotent.
  void Stop();

  // OK while running or after a Stop; the error that made the consumer give
  // up otherwise (see above).
  absl::Status status() const;
  // True once the consumer has given up on a non-retryable error.
  bool failed() const;
  // True once Stop has been called: a long handler may check it and return
  // early (an error releases its message for another consumer).
  bool stopping() const;
  ConsumerStats stats() const;

 private:
  // A message delivered and not yet deleted or released.
  struct Held {
    absl::Time last_extended;
  };
  // A request waiting to be sent or to be acknowledged.
  struct Op {
    std::vector<std::string> deletes;
    std::vector<v1::VisibilityChange> releases;
  };
  class Stream;

  void RunStreams();
  // Runs one stream until it ends; returns its status.
  absl::Status RunStream(absl::Time& last_useful);
  void RunWorker();
  void Finish(const v1::Message& message, const absl::Status& result);
  void OnAck(const v1::SubscribeAck& ack);
  // What the writer should send now, if anything: credit, deletes and
  // releases from the outbox, due extensions.
  bool TakeRequest(v1::SubscribeRequest& request, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool Drained() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Time NextHeartbeat() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Client& client_;
  const ConsumerOptions options_;
  const Handler handler_;
  const absl::Duration heartbeat_interval_;

  mutable absl::Mutex mu_;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // Set when Stop gives up waiting (stop_timeout) or the consumer failed.
  bool abandon_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
  ConsumerStats stats_ ABSL_GUARDED_BY(mu_);

  // By receipt handle.
  absl::flat_hash_map<std::string, Held> held_ ABSL_GUARDED_BY(mu_);
  // Messages waiting for a handler thread, oldest first.
  std::deque<v1::Message> ready_ ABSL_GUARDED_BY(mu_);
  // Credit to grant on the current stream.
  int pending_credit_ ABSL_GUARDED_BY(mu_) = 0;
  // Deletes and releases not yet sent.
  Op outbox_ ABSL_GUARDED_BY(mu_);
  // Sent on the current stream and not yet acknowledged, by request id.
  std::map<uint64_t, Op> unacked_ ABSL_GUARDED_BY(mu_);
  uint64_t next_request_id_ ABSL_GUARDED_BY(mu_) = 1;
  // The stream in use, if any; the writer waits on mu_ for work.
  Stream* stream_ ABSL_GUARDED_BY(mu_) = nullptr;
  // Bumped on every change a waiting writer must look at.
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;

  std::once_flag stop_once_;
  std::thread stream_thread_;
  std::vector<std::thread> workers_;
};

}  // namespace weir

#endif  // WEIR_CLIENT_CONSUMER_H_
