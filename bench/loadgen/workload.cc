#include "bench/loadgen/workload.h"

#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "bench/loadgen/proc_stats.h"
#include "bench/random_text.h"

namespace weir {
namespace loadgen {
namespace {

// Every body opens with the intended send time (steady clock, ns) and a
// sequence number, so consumers measure latency and count what they get.
constexpr int kHeaderBytes = 16;
// Redelivery: the first receipt of one message in this many is not deleted.
constexpr uint64_t kUndeletedEvery = 10;
// Pause after a failed call, so a broken server does not spin the client.
constexpr auto kErrorPause = std::chrono::milliseconds(10);

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void SleepUntilNs(int64_t t) {
  std::this_thread::sleep_until(
      std::chrono::steady_clock::time_point(std::chrono::nanoseconds(t)));
}

double CpuSecondsOfSelf() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_utime.tv_sec + usage.ru_stime.tv_sec +
         (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

void Stamp(std::string& body, int64_t intended_ns, uint64_t seq) {
  std::memcpy(&body[0], &intended_ns, 8);
  std::memcpy(&body[8], &seq, 8);
}

bool ParseStamp(const std::string& body, int64_t* intended_ns, uint64_t* seq) {
  if (body.size() < kHeaderBytes) return false;
  std::memcpy(intended_ns, body.data(), 8);
  std::memcpy(seq, body.data() + 8, 8);
  return true;
}

// What one thread counts; merged once the threads are done.
struct ThreadStats {
  Histogram latency;
  int64_t in_window = 0;
  int64_t total = 0;
  int64_t last_done_ns = 0;
  int64_t redelivered = 0;
  int64_t duplicates = 0;
  int64_t errors = 0;
  std::string first_error;

  void Fail(const absl::Status& status) {
    if (errors++ == 0) first_error = status.ToString();
    std::this_thread::sleep_for(kErrorPause);
  }
};

// The state of one run, shared by its threads.
class Run {
 public:
  Run(const WorkloadConfig& config) : config_(config) {
    counted_ = config.workload == Workload::kDrain ||
               config.workload == Workload::kRedelivery;
    if (counted_) {
      states_ = std::make_unique<std::atomic<uint8_t>[]>(config.messages);
      for (int64_t i = 0; i < config.messages; ++i) states_[i] = 0;
    }
  }

  // Producer `index` of `count`, sending batches of `batch` until its
  // schedule ends (duration modes) or every message was claimed (count
  // modes).
  void Produce(PeerClient& client, int index, int count, int batch,
               int64_t start_ns, bool open_loop, ThreadStats& stats) {
    std::vector<std::string> bodies(batch);
    const std::string text = bench::RandomText(
        std::max(config_.size, kHeaderBytes) + 4096, index + 1);
    // The schedule: this producer's batches are `interval` apart, offset
    // so that the producers together send evenly.
    const double interval_ns =
        open_loop ? 1e9 * batch * count / config_.rate : 0;
    const int64_t offset_ns = static_cast<int64_t>(interval_ns * index / count);
    for (int64_t k = 0;; ++k) {
      int n = batch;
      uint64_t first_seq;
      if (counted_) {
        first_seq = next_seq_.fetch_add(batch);
        if (first_seq >= static_cast<uint64_t>(config_.messages)) break;
        n = static_cast<int>(
            std::min<int64_t>(batch, config_.messages - first_seq));
      } else {
        first_seq = next_seq_.fetch_add(batch);
      }
      int64_t intended;
      if (open_loop) {
        intended = start_ns + offset_ns + static_cast<int64_t>(k * interval_ns);
        if (!counted_ && intended >= window_end_ns_) break;
        SleepUntilNs(intended);
      } else {
        intended = NowNs();
        if (!counted_ && intended >= window_end_ns_) break;
      }
      bodies.resize(n);
      for (int i = 0; i < n; ++i) {
        const size_t shift = (first_seq + i) % 4096;
        bodies[i].assign(text, shift, std::max(config_.size, kHeaderBytes));
        Stamp(bodies[i], intended, first_seq + i);
      }
      const absl::Status status = client.Send(bodies);
      const int64_t done = NowNs();
      if (!status.ok()) {
        stats.Fail(status);
        continue;
      }
      sent_total_.fetch_add(n, std::memory_order_relaxed);
      stats.total += n;
      stats.last_done_ns = done;
      if (done >= window_start_ns_ && done <= window_end_ns_) {
        stats.in_window += n;
      }
      if (intended >= window_start_ns_) {
        for (int i = 0; i < n; ++i) stats.latency.Record(done - intended);
      }
    }
  }

  void Consume(PeerClient& client, ThreadStats& stats) {
    std::vector<Delivery> deliveries;
    // What to delete: from `deliveries`, the last receive's.
    std::vector<const Delivery*> done;
    std::vector<uint64_t> done_seqs;
    const bool carry = config_.ack_with_receive;
    while (!ConsumersDone()) {
      absl::Status status;
      if (carry) {
        status = client.DeleteAndReceive(done, config_.receive_batch,
                                         config_.receive_wait, &deliveries);
        // Deletes that failed with the call come back once their leases
        // lapse, and are counted then.
        if (status.ok()) CountDeleted(done_seqs, NowNs(), stats);
      } else {
        status = client.Receive(config_.receive_batch, config_.receive_wait,
                                &deliveries);
      }
      const int64_t now = NowNs();
      done.clear();
      done_seqs.clear();
      if (!status.ok()) {
        stats.Fail(status);
        continue;
      }
      for (const Delivery& delivery : deliveries) {
        int64_t intended = 0;
        uint64_t seq = 0;
        if (!ParseStamp(delivery.body, &intended, &seq)) {
          stats.Fail(absl::DataLossError("a message without its stamp"));
          continue;
        }
        bool first_receipt = true;
        if (counted_ && seq < static_cast<uint64_t>(config_.messages)) {
          const uint8_t state = states_[seq].load();
          first_receipt = state == 0;
          if (state == 1) ++stats.redelivered;
          if (state == 2) ++stats.duplicates;
          if (state == 0 && config_.workload == Workload::kRedelivery &&
              seq % kUndeletedEvery == 0) {
            states_[seq].store(1);
            stats.latency.Record(now - intended);
            continue;  // never deleted: its lease lapses
          }
        }
        if (first_receipt && intended >= window_start_ns_) {
          stats.latency.Record(now - intended);
        }
        done.push_back(&delivery);
        done_seqs.push_back(seq);
      }
      if (carry || done.empty()) continue;
      const absl::Status deleted = client.Delete(done);
      if (!deleted.ok()) {
        stats.Fail(deleted);
        continue;
      }
      CountDeleted(done_seqs, NowNs(), stats);
    }
    // What the last receive leased and no later call carried.
    if (carry && !done.empty()) {
      const absl::Status deleted = client.Delete(done);
      if (deleted.ok()) {
        CountDeleted(done_seqs, NowNs(), stats);
      } else {
        stats.Fail(deleted);
      }
    }
  }

  // Counts the messages `seqs` as consumed (deleted) at `at`.
  void CountDeleted(const std::vector<uint64_t>& seqs, int64_t at,
                    ThreadStats& stats) {
    if (seqs.empty()) return;
    if (counted_) {
      for (uint64_t seq : seqs) {
        if (seq < static_cast<uint64_t>(config_.messages) &&
            states_[seq].exchange(2) != 2) {
          deleted_unique_.fetch_add(1);
        }
      }
    }
    consumed_total_.fetch_add(seqs.size(), std::memory_order_relaxed);
    stats.total += seqs.size();
    stats.last_done_ns = at;
    if (at >= window_start_ns_ && at <= window_end_ns_) {
      stats.in_window += seqs.size();
    }
  }

  bool ConsumersDone() const {
    const int64_t now = NowNs();
    if (counted_) {
      return deleted_unique_.load() >= config_.messages || now >= deadline_ns_;
    }
    if (now < window_end_ns_) return false;
    if (config_.rate <= 0) return true;
    return (producers_done_.load() &&
            consumed_total_.load() >= sent_total_.load()) ||
           now >= window_end_ns_ + absl::ToInt64Nanoseconds(config_.grace);
  }

  void SetWindow(int64_t start_ns, int64_t end_ns) {
    window_start_ns_ = start_ns;
    window_end_ns_ = end_ns;
  }
  void SetDeadline(int64_t deadline_ns) { deadline_ns_ = deadline_ns; }
  void ProducersDone() { producers_done_.store(true); }
  int64_t deleted_unique() const { return deleted_unique_.load(); }

 private:
  const WorkloadConfig& config_;
  bool counted_ = false;
  // Drain and redelivery: per message, 0 not yet received, 1 received and
  // held (not deleted), 2 deleted.
  std::unique_ptr<std::atomic<uint8_t>[]> states_;
  std::atomic<uint64_t> next_seq_{0};
  std::atomic<int64_t> sent_total_{0};
  std::atomic<int64_t> consumed_total_{0};
  std::atomic<int64_t> deleted_unique_{0};
  std::atomic<bool> producers_done_{false};
  // Written before the threads start, read-only while they run.
  int64_t window_start_ns_ = 0;
  int64_t window_end_ns_ = INT64_MAX;
  int64_t deadline_ns_ = INT64_MAX;
};

absl::StatusOr<std::vector<std::unique_ptr<PeerClient>>> ConnectAll(Peer& peer,
                                                                    int n) {
  std::vector<std::unique_ptr<PeerClient>> clients;
  for (int i = 0; i < n; ++i) {
    absl::StatusOr<std::unique_ptr<PeerClient>> client = peer.Connect();
    if (!client.ok()) return client.status();
    clients.push_back(*std::move(client));
  }
  return clients;
}

void Merge(std::vector<ThreadStats>& stats, Histogram& latency,
           WorkloadResult& result, int64_t* in_window, int64_t* total,
           int64_t* last_done_ns) {
  *in_window = *total = *last_done_ns = 0;
  for (ThreadStats& s : stats) {
    latency.Merge(s.latency);
    *in_window += s.in_window;
    *total += s.total;
    *last_done_ns = std::max(*last_done_ns, s.last_done_ns);
    result.redelivered += s.redelivered;
    result.duplicates += s.duplicates;
    if (s.errors > 0 && result.errors == 0) result.first_error = s.first_error;
    result.errors += s.errors;
  }
}

// Server CPU time and memory between Begin and End, when its pid is known.
class ServerMeter {
 public:
  explicit ServerMeter(pid_t pid) : pid_(pid) {}
  void Begin() {
    client_cpu_ = CpuSecondsOfSelf();
    if (pid_ == 0) return;
    absl::StatusOr<ProcSample> sample = SampleProcess(pid_);
    if (sample.ok()) begin_ = *sample;
    ok_ = sample.ok();
  }
  void End(WorkloadResult& result) {
    result.client_cpu_seconds = CpuSecondsOfSelf() - client_cpu_;
    if (pid_ == 0 || !ok_) return;
    absl::StatusOr<ProcSample> sample = SampleProcess(pid_);
    if (!sample.ok()) return;
    result.server_cpu_seconds = sample->cpu_seconds - begin_.cpu_seconds;
    result.server_rss_bytes = sample->rss_bytes;
    result.server_peak_rss_bytes = sample->peak_rss_bytes;
  }

 private:
  const pid_t pid_;
  bool ok_ = false;
  ProcSample begin_;
  double client_cpu_ = 0;
};

}  // namespace

absl::StatusOr<Workload> ParseWorkload(const std::string& name) {
  if (name == "ingest") return Workload::kIngest;
  if (name == "workqueue") return Workload::kWorkQueue;
  if (name == "drain") return Workload::kDrain;
  if (name == "redelivery") return Workload::kRedelivery;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown workload \"", name,
                   "\"; known: ingest, workqueue, drain, redelivery"));
}

std::string WorkloadName(Workload workload) {
  switch (workload) {
    case Workload::kIngest:
      return "ingest";
    case Workload::kWorkQueue:
      return "workqueue";
    case Workload::kDrain:
      return "drain";
    case Workload::kRedelivery:
      return "redelivery";
  }
  return "unknown";
}

absl::Status CheckWorkloadApplies(Workload workload, const Peer& peer) {
  if (workload == Workload::kRedelivery && !peer.LeasesLapse()) {
    return absl::FailedPreconditionError(
        "this system does not redeliver a message whose lease lapsed, so the "
        "redelivery workload does not apply to it");
  }
  return absl::OkStatus();
}

absl::StatusOr<WorkloadResult> RunWorkload(const WorkloadConfig& config,
                                           Peer& peer) {
  if (config.size < kHeaderBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "message size ", config.size, " is below the minimum ", kHeaderBytes));
  }
  if (absl::Status s = CheckWorkloadApplies(config.workload, peer); !s.ok()) {
    return s;
  }
  const int consumers =
      config.workload == Workload::kIngest ? 0 : config.consumers;
  absl::StatusOr<std::vector<std::unique_ptr<PeerClient>>> producer_clients =
      ConnectAll(peer, config.producers);
  if (!producer_clients.ok()) return producer_clients.status();
  absl::StatusOr<std::vector<std::unique_ptr<PeerClient>>> consumer_clients =
      ConnectAll(peer, consumers);
  if (!consumer_clients.ok()) return consumer_clients.status();

  Run run(config);
  WorkloadResult result;
  ServerMeter meter(config.server_pid);
  std::vector<ThreadStats> producer_stats(config.producers);
  std::vector<ThreadStats> consumer_stats(consumers);
  std::vector<std::thread> producers, consumer_threads;
  const bool open_loop = config.rate > 0;

  auto start_producers = [&](int batch, int64_t start_ns, bool paced) {
    for (int i = 0; i < config.producers; ++i) {
      producers.emplace_back([&, i, batch, start_ns, paced] {
        run.Produce(*(*producer_clients)[i], i, config.producers, batch,
                    start_ns, paced, producer_stats[i]);
      });
    }
  };
  auto start_consumers = [&] {
    for (int i = 0; i < consumers; ++i) {
      consumer_threads.emplace_back(
          [&, i] { run.Consume(*(*consumer_clients)[i], consumer_stats[i]); });
    }
  };
  auto join = [](std::vector<std::thread>& threads) {
    for (std::thread& t : threads) t.join();
    threads.clear();
  };

  // Threads start a little later than now, all on the same schedule.
  const int64_t start_ns = NowNs() + 50'000'000;
  int64_t send_last_ns = 0, consume_last_ns = 0;
  if (config.workload == Workload::kIngest ||
      config.workload == Workload::kWorkQueue) {
    const int64_t window_start =
        start_ns + absl::ToInt64Nanoseconds(config.warmup);
    const int64_t window_end =
        start_ns + absl::ToInt64Nanoseconds(config.duration);
    run.SetWindow(window_start, window_end);
    start_producers(config.send_batch, start_ns, open_loop);
    start_consumers();
    SleepUntilNs(window_start);
    meter.Begin();
    SleepUntilNs(window_end);
    meter.End(result);
    join(producers);
    run.ProducersDone();
    join(consumer_threads);
    result.send_seconds = result.consume_seconds =
        (window_end - window_start) / 1e9;
  } else if (config.workload == Workload::kDrain) {
    // Fill the queue first, as fast as the producers go; nothing of it is
    // measured but its count.
    run.SetWindow(INT64_MAX, INT64_MAX);
    start_producers(config.preload_batch, start_ns, false);
    join(producers);
    run.ProducersDone();
    const int64_t drain_start = NowNs();
    run.SetWindow(0, INT64_MAX);
    run.SetDeadline(drain_start + absl::ToInt64Nanoseconds(config.timeout));
    meter.Begin();
    start_consumers();
    join(consumer_threads);
    meter.End(result);
    for (const ThreadStats& s : consumer_stats) {
      consume_last_ns = std::max(consume_last_ns, s.last_done_ns);
    }
    result.drain_seconds = result.consume_seconds =
        (consume_last_ns - drain_start) / 1e9;
    result.send_seconds = 0;
  } else {  // kRedelivery
    run.SetWindow(0, INT64_MAX);
    run.SetDeadline(start_ns + absl::ToInt64Nanoseconds(config.timeout));
    meter.Begin();
    start_producers(config.send_batch, start_ns, open_loop);
    start_consumers();
    join(producers);
    run.ProducersDone();
    join(consumer_threads);
    meter.End(result);
  }

  int64_t in_window = 0, total = 0;
  Merge(producer_stats, result.send_latency, result, &in_window, &total,
        &send_last_ns);
  // Drain: the preload is not a measured send.
  result.sent = config.workload == Workload::kDrain        ? 0
                : config.workload == Workload::kRedelivery ? total
                                                           : in_window;
  if (config.workload == Workload::kDrain) result.send_latency = Histogram();
  if (config.workload == Workload::kRedelivery) {
    result.send_seconds = (send_last_ns - start_ns) / 1e9;
  }
  Merge(consumer_stats, result.e2e_latency, result, &in_window, &total,
        &consume_last_ns);
  switch (config.workload) {
    case Workload::kIngest:
    case Workload::kWorkQueue:
      result.consumed = in_window;
      break;
    case Workload::kDrain:
      result.consumed = total;
      break;
    case Workload::kRedelivery:
      result.consumed = total;
      result.consume_seconds = (consume_last_ns - start_ns) / 1e9;
      break;
  }
  if (config.workload == Workload::kDrain ||
      config.workload == Workload::kRedelivery) {
    result.lost = config.messages - run.deleted_unique();
  }
  result.backlog = peer.Backlog();
  return result;
}

}  // namespace loadgen
}  // namespace weir
