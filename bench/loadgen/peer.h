// The one interface through which the load generator drives every system it
// compares (Weir, Redis Streams, beanstalkd, NATS JetStream, RabbitMQ), so
// that the workload code is shared and only the wire calls differ.
//
// A Peer describes one running server and makes clients for it; a
// PeerClient is one connection, used by one thread at a time.

#ifndef WEIR_BENCH_LOADGEN_PEER_H_
#define WEIR_BENCH_LOADGEN_PEER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace weir {
namespace loadgen {

// What a workload needs from the queue it runs on.
struct QueueSpec {
  // The name of the queue (Weir queue, Redis stream, beanstalkd tube,
  // JetStream stream and subject).
  std::string name = "bench";
  // How long a received message stays leased before it is delivered again:
  // Weir's visibility timeout, beanstalkd's TTR (rounded up to whole
  // seconds), JetStream's AckWait, and the idle time after which Redis
  // consumers claim each other's pending entries with XAUTOCLAIM.
  absl::Duration lease = absl::Seconds(60);
  // RabbitMQ: the type of queue to declare, "quorum" (replicated log, fsync
  // before a publish is confirmed) or "classic". Other systems ignore it.
  std::string queue_type = "quorum";
};

// One message handed to a consumer.
struct Delivery {
  std::string body;
  // What Delete needs to remove the message: a receipt handle, a stream
  // entry id, a job id, or an index into the client's own table.
  std::string handle;
};

// One connection to the server. Not thread-safe: each load generator thread
// has its own client.
class PeerClient {
 public:
  virtual ~PeerClient() = default;

  // Sends `bodies` as one batch (one call, or one pipeline where the system
  // has no batch call) and returns once the server acknowledged all of them.
  virtual absl::Status Send(const std::vector<std::string>& bodies) = 0;

  // Receives up to `max` messages into `out` (cleared first), waiting up to
  // `wait` for the first. An empty `out` with an OK status means none came.
  // Deliveries from the previous Receive that were not deleted stay leased
  // and come back once their lease lapses.
  virtual absl::Status Receive(int max, absl::Duration wait,
                               std::vector<Delivery>* out) = 0;

  // Removes the given messages, all from this client's last Receive, for
  // good (acknowledges them). Returns once the server has them.
  virtual absl::Status Delete(const std::vector<const Delivery*>& done) = 0;

  // Delete(done), then Receive(max, wait, out), with the acknowledgements
  // carried in the receive's own round trip where the system allows it
  // (the load generator's --ack-with-receive). `done` (may be empty) points
  // into `out`, which is overwritten. The default calls the two in turn.
  virtual absl::Status DeleteAndReceive(
      const std::vector<const Delivery*>& done, int max, absl::Duration wait,
      std::vector<Delivery>* out);
};

// A system under test, reached at one address.
class Peer {
 public:
  virtual ~Peer() = default;

  // Creates the queue (and whatever the system needs to consume from it:
  // a consumer group, a durable consumer). Called once before any client
  // connects. May be retried while the server starts.
  virtual absl::Status Setup(const QueueSpec& spec) = 0;

  // A new client, ready to use: a connection of its own, or with
  // PeerOptions::connections one of the shared ones. Called from one thread
  // at a time.
  virtual absl::StatusOr<std::unique_ptr<PeerClient>> Connect() = 0;

  // Messages still in the queue (ready, leased or delayed), if the system
  // can say; -1 otherwise.
  virtual int64_t Backlog() { return -1; }

  // Whether a delivery that is never deleted comes back by itself once its
  // lease lapses (the redelivery workload needs it).
  virtual bool LeasesLapse() const { return true; }
};

// How the load generator reaches a system, beyond its address.
struct PeerOptions {
  // Weir only: the clients share this many TCP connections (gRPC channels),
  // handed out round robin, as the threads of one process share a channel;
  // 0 gives every client a connection of its own, as separate processes
  // would have. Other systems refuse anything but 0.
  int connections = 0;
};

// Systems the load generator knows, by the name used on its command line.
inline const std::vector<std::string>& PeerNames() {
  static const auto* names = new std::vector<std::string>{
      "weir", "weir-stream", "redis", "beanstalkd", "nats", "rabbitmq"};
  return *names;
}

// The Peer of system `name` (one of PeerNames()) at `address` ("host:port").
// INVALID_ARGUMENT for an unknown name or options the system cannot take.
absl::StatusOr<std::unique_ptr<Peer>> MakePeer(
    const std::string& name, const std::string& address,
    const PeerOptions& options = PeerOptions());

// The adapters, one per file. Weir sends with Send calls and consumes
// through Receive and Delete, or with `streams` sends over one Publish
// stream per producer and consumes through one Subscribe stream per
// consumer. With `connections` > 0 the clients share that many connections.
std::unique_ptr<Peer> MakeWeirPeer(const std::string& address, bool streams,
                                   int connections);
std::unique_ptr<Peer> MakeRedisPeer(const std::string& address);
std::unique_ptr<Peer> MakeBeanstalkdPeer(const std::string& address);
std::unique_ptr<Peer> MakeNatsPeer(const std::string& address);
std::unique_ptr<Peer> MakeRabbitmqPeer(const std::string& address);

}  // namespace loadgen
}  // namespace weir

#endif  // WEIR_BENCH_LOADGEN_PEER_H_
