// loadgen: drives one queue system (Weir, Redis Streams, beanstalkd, NATS
// JetStream or RabbitMQ) with one of four workloads and reports throughput,
// end-to-end latency and the server's CPU time and memory. For example:
//
//   loadgen --system weir --address 127.0.0.1:50051 --workload workqueue
//           --producers 16 --consumers 16 --size 1024 --rate 5000
//           --duration 60 [--server-pid PID] [--json-out FILE] [--tier sync]
//           [--label TEXT]
//
// Latency is measured from each message's intended send time: with --rate,
// the producers follow a fixed schedule and a late send still counts from
// when it should have gone, so a stalled server shows in the latency
// instead of silently slowing the load (no coordinated omission). Without
// --rate, producers send as fast as they can and the intended time is the
// start of the send call.

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <thread>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "bench/loadgen/peer.h"
#include "bench/loadgen/workload.h"

namespace weir {
namespace loadgen {
namespace {

// How long to retry Setup while a freshly started server comes up.
constexpr absl::Duration kSetupTimeout = absl::Seconds(30);

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      absl::StrAppendFormat(&out, "\\u%04x", c);
    } else {
      out += c;
    }
  }
  return out + "\"";
}

double Rate(int64_t n, double seconds) { return seconds > 0 ? n / seconds : 0; }
double Micros(int64_t ns) { return ns / 1e3; }

struct Labels {
  std::string system;
  std::string tier;
  std::string label;
  // --connections: the TCP connections Weir's clients share (0: one each).
  int connections = 0;
};

std::string ToJson(const Labels& labels, const WorkloadConfig& config,
                   const WorkloadResult& r) {
  const double send_rate = Rate(r.sent, r.send_seconds);
  const double consume_rate = Rate(r.consumed, r.consume_seconds);
  auto quantiles = [](const Histogram& h) {
    return absl::StrFormat(
        "{\"count\":%d,\"p50_us\":%.1f,\"p90_us\":%.1f,\"p99_us\":%.1f,"
        "\"p999_us\":%.1f,\"max_us\":%.1f,\"mean_us\":%.1f}",
        h.count(), Micros(h.Quantile(0.5)), Micros(h.Quantile(0.9)),
        Micros(h.Quantile(0.99)), Micros(h.Quantile(0.999)), Micros(h.max()),
        h.mean() / 1e3);
  };
  return absl::StrCat(
      "{\"system\":", JsonString(labels.system),
      ",\"tier\":", JsonString(labels.tier),
      ",\"label\":", JsonString(labels.label),
      ",\"workload\":", JsonString(WorkloadName(config.workload)),
      ",\"connections\":", labels.connections,
      absl::StrFormat(
          ",\"producers\":%d,\"consumers\":%d,\"size\":%d,\"send_batch\":%d,"
          "\"receive_batch\":%d,\"rate\":%.1f,\"duration_s\":%.3f,"
          "\"messages\":%d,\"ack_with_receive\":%s",
          config.producers, config.consumers, config.size, config.send_batch,
          config.receive_batch, config.rate,
          absl::ToDoubleSeconds(config.duration), config.messages,
          config.ack_with_receive ? "true" : "false"),
      absl::StrFormat(
          ",\"sent\":%d,\"send_seconds\":%.3f,\"send_msgs_per_s\":%.1f,"
          "\"send_mb_per_s\":%.3f,\"consumed\":%d,\"consume_seconds\":%.3f,"
          "\"consume_msgs_per_s\":%.1f,\"consume_mb_per_s\":%.3f",
          r.sent, r.send_seconds, send_rate, send_rate * config.size / 1e6,
          r.consumed, r.consume_seconds, consume_rate,
          consume_rate * config.size / 1e6),
      ",\"send_latency\":", quantiles(r.send_latency),
      ",\"e2e_latency\":", quantiles(r.e2e_latency),
      absl::StrFormat(",\"redelivered\":%d,\"duplicates\":%d,\"lost\":%d,"
                      "\"drain_seconds\":%.3f,\"backlog\":%d,\"errors\":%d,"
                      "\"server_cpu_s\":%.3f,\"server_rss_bytes\":%d,"
                      "\"server_peak_rss_bytes\":%d,\"client_cpu_s\":%.3f",
                      r.redelivered, r.duplicates, r.lost, r.drain_seconds,
                      r.backlog, r.errors, r.server_cpu_seconds,
                      r.server_rss_bytes, r.server_peak_rss_bytes,
                      r.client_cpu_seconds),
      ",\"first_error\":", JsonString(r.first_error), "}");
}

void PrintText(const Labels& labels, const WorkloadConfig& config,
               const WorkloadResult& r) {
  const double send_rate = Rate(r.sent, r.send_seconds);
  const double consume_rate = Rate(r.consumed, r.consume_seconds);
  auto line = [](const char* what, const Histogram& h) {
    if (h.count() == 0) return;
    std::cout << absl::StrFormat(
        "  %-8s latency µs: p50 %.0f  p90 %.0f  p99 %.0f  p99.9 %.0f  max "
        "%.0f  (%d samples)\n",
        what, Micros(h.Quantile(0.5)), Micros(h.Quantile(0.9)),
        Micros(h.Quantile(0.99)), Micros(h.Quantile(0.999)), Micros(h.max()),
        h.count());
  };
  std::cout << absl::StrFormat(
      "%s [%s] %s: %d producers (batch %d), %d consumers (batch %d), %d B, "
      "rate %s\n",
      labels.system, labels.tier, WorkloadName(config.workload),
      config.producers, config.send_batch, config.consumers,
      config.receive_batch, config.size,
      config.rate > 0 ? absl::StrFormat("%.0f/s", config.rate) : "max");
  if (labels.connections > 0) {
    std::cout << "  clients share " << labels.connections << " connections\n";
  }
  if (r.sent > 0) {
    std::cout << absl::StrFormat("  send     %10.0f msg/s  %8.2f MB/s  (%d)\n",
                                 send_rate, send_rate * config.size / 1e6,
                                 r.sent);
  }
  if (r.consumed > 0) {
    std::cout << absl::StrFormat("  consume  %10.0f msg/s  %8.2f MB/s  (%d)\n",
                                 consume_rate, consume_rate * config.size / 1e6,
                                 r.consumed);
  }
  line("send", r.send_latency);
  line("e2e", r.e2e_latency);
  if (config.workload == Workload::kDrain) {
    std::cout << absl::StrFormat("  drained %d messages in %.2f s\n",
                                 config.messages, r.drain_seconds);
  }
  if (config.workload == Workload::kRedelivery ||
      config.workload == Workload::kDrain) {
    std::cout << absl::StrFormat(
        "  redelivered %d (%.0f/s), duplicates %d, lost %d\n", r.redelivered,
        Rate(r.redelivered, r.consume_seconds), r.duplicates, r.lost);
  }
  if (r.server_cpu_seconds >= 0) {
    std::cout << absl::StrFormat(
        "  server CPU %.2f s, RSS %.1f MiB (peak %.1f MiB); loadgen CPU %.2f "
        "s\n",
        r.server_cpu_seconds, r.server_rss_bytes / 1048576.0,
        r.server_peak_rss_bytes / 1048576.0, r.client_cpu_seconds);
  }
  if (r.backlog >= 0) std::cout << "  left in queue: " << r.backlog << "\n";
  if (r.errors > 0) {
    std::cout << "  " << r.errors << " failed calls; first: " << r.first_error
              << "\n";
  }
}

int Main(int argc, char** argv) {
  CLI::App app{"Load generator for Weir and the queues it is compared with"};
  Labels labels;
  labels.system = "weir";
  std::string address = "127.0.0.1:50051";
  std::string workload = "workqueue";
  WorkloadConfig config;
  double duration_s = 10, warmup_s = -1, lease_s = -1, wait_s = 1, grace_s = 5,
         timeout_s = 600;
  std::string json_out;
  bool json_only = false;
  int server_pid = 0;
  app.add_option("--system", labels.system,
                 "weir (unary calls), weir-stream (Publish and Subscribe), "
                 "redis, beanstalkd, nats or rabbitmq")
      ->check(CLI::IsMember(PeerNames()))
      ->capture_default_str();
  app.add_option("--address", address, "host:port of the server")
      ->capture_default_str();
  app.add_option("--connections", labels.connections,
                 "weir, weir-stream: the clients share this many TCP "
                 "connections, round robin (default 0: one each)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--workload", workload,
                 "ingest, workqueue, drain or redelivery")
      ->capture_default_str();
  app.add_option("--producers,-p", config.producers)->capture_default_str();
  app.add_option("--consumers,-c", config.consumers)->capture_default_str();
  app.add_option("--size", config.size, "message size in bytes (>= 16)")
      ->capture_default_str();
  app.add_option("--send-batch", config.send_batch)->capture_default_str();
  app.add_option("--receive-batch", config.receive_batch)
      ->capture_default_str();
  app.add_option("--rate", config.rate,
                 "messages/s over all producers (open loop); 0: max")
      ->capture_default_str();
  app.add_option("--duration", duration_s, "seconds (ingest, workqueue)")
      ->capture_default_str();
  app.add_option("--warmup", warmup_s,
                 "seconds not measured (default: a tenth of the duration, at "
                 "most 5)");
  app.add_option("--messages", config.messages, "drain, redelivery")
      ->capture_default_str();
  app.add_option("--preload-batch", config.preload_batch,
                 "send batch of the drain's preload")
      ->capture_default_str();
  app.add_option("--lease", lease_s,
                 "visibility timeout in seconds (default 2 for redelivery, "
                 "else 60)");
  app.add_option("--receive-wait", wait_s, "long-poll wait in seconds")
      ->capture_default_str();
  app.add_flag("--ack-with-receive", config.ack_with_receive,
               "acknowledge each batch in the call that receives the next "
               "(Weir: Receive's delete_receipt_handles; Redis, beanstalkd, "
               "JetStream: the acks pipelined ahead of the read)");
  app.add_option("--grace", grace_s,
                 "seconds consumers may go on after the producers stopped "
                 "(workqueue with --rate)")
      ->capture_default_str();
  app.add_option("--timeout", timeout_s, "drain, redelivery: at most seconds")
      ->capture_default_str();
  app.add_option("--server-pid", server_pid,
                 "the server's process id, for its CPU time and memory");
  app.add_option("--rabbitmq-queue-type", config.queue.queue_type,
                 "rabbitmq: quorum (fsync before confirming) or classic")
      ->check(CLI::IsMember({"quorum", "classic"}))
      ->capture_default_str();
  app.add_option("--tier", labels.tier, "durability tier, as reported");
  app.add_option("--label", labels.label, "free text, as reported");
  app.add_option("--json-out", json_out, "append the result as a JSON line");
  app.add_flag("--json", json_only, "print only the JSON line");
  bool check_only = false;
  app.add_flag("--check", check_only,
               "only say whether the workload applies to the system, "
               "connecting to nothing: exit 0 if it does, 2 (and why) if not");
  CLI11_PARSE(app, argc, argv);

  absl::StatusOr<Workload> parsed = ParseWorkload(workload);
  if (!parsed.ok()) {
    std::cerr << "loadgen: " << parsed.status() << std::endl;
    return 64;
  }
  config.workload = *parsed;
  config.duration = absl::Seconds(duration_s);
  config.warmup =
      absl::Seconds(warmup_s >= 0 ? warmup_s : std::min(5.0, duration_s / 10));
  config.queue.lease = absl::Seconds(
      lease_s > 0 ? lease_s
                  : (config.workload == Workload::kRedelivery ? 2 : 60));
  config.receive_wait = absl::Seconds(wait_s);
  config.grace = absl::Seconds(grace_s);
  config.timeout = absl::Seconds(timeout_s);
  config.server_pid = server_pid;

  PeerOptions peer_options;
  peer_options.connections = labels.connections;
  absl::StatusOr<std::unique_ptr<Peer>> peer =
      MakePeer(labels.system, address, peer_options);
  if (!peer.ok()) {
    std::cerr << "loadgen: " << peer.status() << std::endl;
    return 64;
  }
  if (check_only) {
    absl::Status applies = CheckWorkloadApplies(config.workload, **peer);
    if (applies.ok()) return 0;
    std::cerr << "loadgen: " << labels.system << ", " << workload << ": "
              << applies.message() << std::endl;
    return 2;
  }
  const absl::Time setup_deadline = absl::Now() + kSetupTimeout;
  absl::Status setup;
  while (!(setup = (*peer)->Setup(config.queue)).ok() &&
         absl::Now() < setup_deadline) {
    absl::SleepFor(absl::Milliseconds(100));
  }
  if (!setup.ok()) {
    std::cerr << "loadgen: setup of " << labels.system << " at " << address
              << " failed: " << setup << std::endl;
    return 1;
  }
  absl::StatusOr<WorkloadResult> result = RunWorkload(config, **peer);
  if (!result.ok()) {
    std::cerr << "loadgen: " << result.status() << std::endl;
    return 1;
  }
  const std::string json = ToJson(labels, config, *result);
  if (json_only) {
    std::cout << json << std::endl;
  } else {
    PrintText(labels, config, *result);
  }
  if (!json_out.empty()) {
    std::ofstream out(json_out, std::ios::app);
    out << json << "\n";
    if (!out) {
      std::cerr << "loadgen: cannot write " << json_out << std::endl;
      return 1;
    }
  }
  return result->errors > 0 || result->lost > 0 ? 3 : 0;
}

}  // namespace
}  // namespace loadgen
}  // namespace weir

int main(int argc, char** argv) { return weir::loadgen::Main(argc, argv); }
