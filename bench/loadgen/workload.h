// The workloads of the load generator, run against any Peer: producers and
// consumers on threads of their own, each with its own connection, sending
// on an open-loop schedule (or as fast as they can) and measuring end-to-end
// latency from a message's intended send time to its receipt.

#ifndef WEIR_BENCH_LOADGEN_WORKLOAD_H_
#define WEIR_BENCH_LOADGEN_WORKLOAD_H_

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "bench/loadgen/histogram.h"
#include "bench/loadgen/peer.h"

namespace weir {
namespace loadgen {

enum class Workload {
  // Producers only, for `duration`.
  kIngest,
  // Producers and consumers together, for `duration`.
  kWorkQueue,
  // `messages` are sent first (batches of `preload_batch`), then consumers
  // start and receive and delete until the queue is empty.
  kDrain,
  // Producers send `messages` while consumers receive them; the first
  // receipt of every tenth message is never deleted, so its lease lapses and
  // it comes back. Ends when every message has been deleted.
  kRedelivery,
};

absl::StatusOr<Workload> ParseWorkload(const std::string& name);
std::string WorkloadName(Workload workload);

struct WorkloadConfig {
  Workload workload = Workload::kWorkQueue;
  int producers = 1;
  int consumers = 1;
  // Message body size; at least 16 (the intended send time and a sequence
  // number open every body).
  int size = 256;
  int send_batch = 1;
  int receive_batch = 1;
  // Messages per second over all producers, on an open-loop schedule; 0 for
  // as fast as the producers go.
  double rate = 0;
  // Ingest and work queue: how long producers send. The first `warmup` of
  // it is not measured.
  absl::Duration duration = absl::Seconds(10);
  absl::Duration warmup = absl::Seconds(1);
  // Drain and redelivery: how many messages.
  int64_t messages = 100'000;
  int preload_batch = 100;
  // Longest wait of one Receive call.
  absl::Duration receive_wait = absl::Seconds(1);
  // Consumers acknowledge each batch in the call that receives the next
  // (PeerClient::DeleteAndReceive) instead of a Delete call of its own.
  bool ack_with_receive = false;
  // Work queue at a target rate: how long consumers may go on after the
  // producers stopped to receive what is still queued. Drain and
  // redelivery: how long the whole run may take.
  absl::Duration grace = absl::Seconds(5);
  absl::Duration timeout = absl::Minutes(10);
  QueueSpec queue;
  // The server's process, for its CPU time and memory; 0 when unknown.
  pid_t server_pid = 0;
};

struct WorkloadResult {
  // Throughput over the measured window.
  int64_t sent = 0;
  double send_seconds = 0;
  int64_t consumed = 0;
  double consume_seconds = 0;
  // Send call latency (intended send time to acknowledgement) and
  // end-to-end latency (intended send time to receipt), nanoseconds.
  Histogram send_latency;
  Histogram e2e_latency;
  // Redelivery and drain: messages delivered again after a lapsed lease,
  // deliveries of an already deleted message, and messages never deleted.
  int64_t redelivered = 0;
  int64_t duplicates = 0;
  int64_t lost = 0;
  // Drain: from the consumers' start until the last message was deleted.
  double drain_seconds = 0;
  // Failed calls, and the first failure.
  int64_t errors = 0;
  std::string first_error;
  // The server's CPU time over the measured phase and its memory at the end
  // (-1 when not known); the load generator's own CPU time.
  double server_cpu_seconds = -1;
  int64_t server_rss_bytes = -1;
  int64_t server_peak_rss_bytes = -1;
  double client_cpu_seconds = 0;
  // What the queue still held at the end, -1 when the system cannot say.
  int64_t backlog = -1;
};

// OK, or FAILED_PRECONDITION saying why when `workload` cannot run on
// `peer`'s system (the redelivery workload on a system whose leases never
// lapse). Connects to nothing.
absl::Status CheckWorkloadApplies(Workload workload, const Peer& peer);

// Runs one workload against `peer` (Setup already done). Fails only when
// clients cannot connect; failed calls are counted in the result.
absl::StatusOr<WorkloadResult> RunWorkload(const WorkloadConfig& config,
                                           Peer& peer);

}  // namespace loadgen
}  // namespace weir

#endif  // WEIR_BENCH_LOADGEN_WORKLOAD_H_
