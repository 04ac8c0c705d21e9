// soak: a long run of steady load on a real weir_server, to show that its
// memory and its disk use stay flat once retention applies.
//
//   bazel run -c opt //bench:soak -- --duration=1h --out=/tmp/soak.csv
//
// Starts //rpc:weir_server (sync durability by default) on a loopback port
// with a fresh data directory and creates one queue whose deleted messages
// are physically removed `--keep_deleted` after their deletion. Producers
// send at a fixed total rate on an open-loop schedule; consumers Receive
// with a short visibility timeout and Delete what they got, except for a
// fraction of first deliveries that they leave alone: those leases lapse,
// the messages come back with a higher receive count and are deleted then,
// so nothing piles up. Every `--sample_interval` one CSV row records the
// server's resident memory, the data directory's disk use, the counters and
// the backlog. At the end the producers stop, the consumers drain the queue,
// and every acknowledged send is checked to have been deleted (or to be
// still in the queue).
//
// Exit status: 0 when nothing acknowledged was lost and the harness worked;
// 1 when something failed; 3 when a message was lost; 64 for bad flags. Whether
// RSS and disk are flat is reported, not enforced (a run on a noisy machine is
// a measurement, not a test).

#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/bench_util.h"
#include "bench/loadgen/proc_stats.h"
#include "client/channel.h"
#include "grpcpp/grpcpp.h"
#include "tests/server_process.h"
#include "weir/v1/weir.grpc.pb.h"

namespace weir {
namespace soak {
namespace {

constexpr char kQueue[] = "soak";
// Deadline of a call beyond its own long-poll wait.
constexpr absl::Duration kCallTimeout = absl::Seconds(30);
// A body opens with its sequence number in this many hex digits.
constexpr int kSeqDigits = 16;
constexpr double kMiB = 1024.0 * 1024.0;

struct Config {
  absl::Duration duration = absl::Hours(1);
  absl::Duration sample_interval = absl::Seconds(10);
  std::string out = "soak.csv";
  int producers = 4;
  int consumers = 4;
  double rate = 1000;
  int size = 1024;
  int send_batch = 10;
  int receive_batch = 10;
  absl::Duration visibility_timeout = absl::Seconds(2);
  absl::Duration keep_deleted = absl::Minutes(2);
  absl::Duration max_age = absl::ZeroDuration();
  double skip_fraction = 0.1;
  absl::Duration drain_timeout = absl::Minutes(2);
  std::string durability = "sync";
  double flat_tolerance = 0.10;
};

// Per message: bit 0 once its Send was acknowledged, bit 1 once a Delete of
// it returned OK, bit 2 once a Delete call naming it failed as a whole (it
// may or may not have been applied).
constexpr uint8_t kAcked = 1;
constexpr uint8_t kDeleted = 2;
constexpr uint8_t kDeleteUnknown = 4;

struct Counters {
  std::atomic<int64_t> sent{0};  // acknowledged
  std::atomic<int64_t> send_errors{0};
  std::atomic<int64_t> received{0};       // deliveries
  std::atomic<int64_t> redelivered{0};    // deliveries with receive count > 1
  std::atomic<int64_t> skipped{0};        // first deliveries left to lapse
  std::atomic<int64_t> deleted{0};        // messages deleted for the first time
  std::atomic<int64_t> stale_deletes{0};  // receipt refused: lease lapsed
  std::atomic<int64_t> after_delete{0};   // delivered again after a Delete
  std::atomic<int64_t> call_errors{0};    // failed Receive or Delete calls
};

struct Shared {
  Config config;
  std::string address;
  int64_t capacity = 0;
  std::unique_ptr<std::atomic<uint8_t>[]> state;
  std::atomic<int64_t> next_seq{0};
  std::atomic<bool> consuming{true};
  Counters counters;
};

void SetDeadline(grpc::ClientContext& context, absl::Duration extra) {
  context.set_deadline(absl::ToChronoTime(absl::Now() + kCallTimeout + extra));
}

std::unique_ptr<v1::Weir::Stub> NewStub(const std::string& address) {
  ChannelOptions options;
  options.dedicated_connection = true;
  return v1::Weir::NewStub(CreateChannel(address, options));
}

std::string Body(int64_t seq, const std::string& filler) {
  std::string body = absl::StrFormat("%016x", seq);
  body.append(filler, 0, filler.size() - kSeqDigits);
  return body;
}

bool ParseSeq(absl::string_view body, int64_t* seq) {
  uint64_t value = 0;
  if (body.size() < kSeqDigits ||
      !absl::SimpleHexAtoi(body.substr(0, kSeqDigits), &value)) {
    return false;
  }
  *seq = static_cast<int64_t>(value);
  return true;
}

// Whether the first delivery of `seq` is left to lapse: a multiplicative
// hash spreads the skipped ones evenly over producers and batches.
bool Skip(int64_t seq, double fraction) {
  const uint64_t h = static_cast<uint64_t>(seq) * 0x9E3779B97F4A7C15ull;
  return (h >> 11) * 0x1.0p-53 < fraction;
}

// Producer `index` of config.producers: one batch every
// producers * send_batch / rate seconds, on a fixed schedule from `start`. A
// late batch goes at once and the schedule is kept, so a stall is caught up
// afterwards rather than lowering the rate.
void Produce(Shared& shared, int index, absl::Time start) {
  const Config& c = shared.config;
  auto stub = NewStub(shared.address);
  const std::string filler = bench::Body(c.size);
  const absl::Duration period =
      absl::Seconds(c.producers * c.send_batch / c.rate);
  absl::Time next = start + period * index / c.producers;
  const absl::Time end = start + c.duration;
  while (next < end) {
    const absl::Time now = absl::Now();
    if (next > now) absl::SleepFor(next - now);
    next += period;
    const int64_t first = shared.next_seq.fetch_add(c.send_batch);
    if (first + c.send_batch > shared.capacity) break;
    v1::SendRequest request;
    request.set_queue(kQueue);
    for (int i = 0; i < c.send_batch; ++i) {
      request.add_entries()->set_body(Body(first + i, filler));
    }
    v1::SendResponse response;
    grpc::ClientContext context;
    SetDeadline(context, absl::ZeroDuration());
    if (!stub->Send(&context, request, &response).ok()) {
      shared.counters.send_errors.fetch_add(c.send_batch);
      continue;
    }
    for (int i = 0; i < c.send_batch; ++i) {
      shared.state[first + i].fetch_or(kAcked);
    }
    shared.counters.sent.fetch_add(c.send_batch);
  }
}

void Consume(Shared& shared) {
  const Config& c = shared.config;
  Counters& n = shared.counters;
  auto stub = NewStub(shared.address);
  const absl::Duration wait = absl::Seconds(1);
  std::vector<int64_t> seqs;
  while (shared.consuming.load()) {
    v1::ReceiveRequest request;
    request.set_queue(kQueue);
    request.set_max_messages(c.receive_batch);
    request.set_wait_time_ms(absl::ToInt64Milliseconds(wait));
    v1::ReceiveResponse response;
    grpc::ClientContext context;
    SetDeadline(context, wait);
    if (!stub->Receive(&context, request, &response).ok()) {
      n.call_errors.fetch_add(1);
      absl::SleepFor(absl::Milliseconds(100));
      continue;
    }
    v1::DeleteRequest del;
    del.set_queue(kQueue);
    seqs.clear();
    for (const v1::Message& m : response.messages()) {
      n.received.fetch_add(1);
      int64_t seq = -1;
      if (!ParseSeq(m.body(), &seq) || seq < 0 || seq >= shared.capacity) {
        std::cerr << "soak: a message with an unknown body at offset "
                  << m.offset() << std::endl;
        std::exit(1);
      }
      if (m.receive_count() > 1) n.redelivered.fetch_add(1);
      if (shared.state[seq].load() & kDeleted) n.after_delete.fetch_add(1);
      if (m.receive_count() == 1 && Skip(seq, c.skip_fraction)) {
        n.skipped.fetch_add(1);
        continue;
      }
      del.add_receipt_handles(m.receipt_handle());
      seqs.push_back(seq);
    }
    if (seqs.empty()) continue;
    v1::DeleteResponse answer;
    grpc::ClientContext del_context;
    SetDeadline(del_context, absl::ZeroDuration());
    if (!stub->Delete(&del_context, del, &answer).ok() ||
        answer.results_size() != static_cast<int>(seqs.size())) {
      // Most likely not deleted: the leases lapse and the messages come
      // back. A failed call may still have been applied, though; the end
      // check does not count such a message as lost.
      n.call_errors.fetch_add(1);
      for (int64_t seq : seqs) shared.state[seq].fetch_or(kDeleteUnknown);
      continue;
    }
    for (size_t i = 0; i < seqs.size(); ++i) {
      const int code = answer.results(i).code();
      if (code == grpc::StatusCode::OK) {
        if (!(shared.state[seqs[i]].fetch_or(kDeleted) & kDeleted)) {
          n.deleted.fetch_add(1);
        }
      } else if (code == grpc::StatusCode::FAILED_PRECONDITION) {
        n.stale_deletes.fetch_add(1);
      } else {
        n.call_errors.fetch_add(1);
      }
    }
  }
}

// Ready, in flight and delayed messages of the queue; -1 if unknown.
int64_t Backlog(v1::Weir::Stub& stub) {
  v1::GetQueueStatsRequest request;
  request.set_name(kQueue);
  v1::QueueStats stats;
  grpc::ClientContext context;
  SetDeadline(context, absl::ZeroDuration());
  if (!stub.GetQueueStats(&context, request, &stats).ok()) return -1;
  return static_cast<int64_t>(stats.ready() + stats.in_flight() +
                              stats.delayed());
}

struct Sample {
  double elapsed_s = 0;
  int64_t rss_bytes = 0;
  int64_t disk_bytes = 0;
  double server_cpu_s = 0;
  int64_t sent = 0;
  int64_t deleted = 0;
  int64_t redelivered = 0;
  int64_t backlog = 0;
};

constexpr char kCsvHeader[] =
    "elapsed_s,rss_bytes,disk_bytes,server_cpu_s,sent,deleted,redelivered,"
    "backlog";

std::string CsvRow(const Sample& s) {
  return absl::StrFormat("%.1f,%d,%d,%.2f,%d,%d,%d,%d", s.elapsed_s,
                         s.rss_bytes, s.disk_bytes, s.server_cpu_s, s.sent,
                         s.deleted, s.redelivered, s.backlog);
}

// The sample nearest to `seconds` into the run.
const Sample& At(const std::vector<Sample>& samples, double seconds) {
  const Sample* found = &samples.front();
  for (const Sample& s : samples) {
    if (std::abs(s.elapsed_s - seconds) <
        std::abs(found->elapsed_s - seconds)) {
      found = &s;
    }
  }
  return *found;
}

struct Flatness {
  double min = 0, max = 0, ratio = 0;
  // Least-squares growth over the second half, as a fraction of its mean.
  double trend = 0;
  // The median of the last quarter's samples against the third quarter's,
  // less one: whether the level climbs, whatever a single spike does.
  double median_growth = 0;
  bool flat = false;
};

// Over the samples of the second half of the run. A steady level swings
// with memtable flushes, log file switches and compactions, so a max/min
// bound says little (it is reported, not judged). Flat: the fitted line
// rises by less than `tolerance` of the mean from the half's start to its
// end, and the last quarter's median is less than `tolerance` above the
// third quarter's.
Flatness SecondHalf(const std::vector<Sample>& samples, double duration_s,
                    int64_t Sample::*field, double tolerance) {
  std::vector<std::pair<double, double>> points;
  std::vector<double> q3, q4;
  for (const Sample& s : samples) {
    if (s.elapsed_s < duration_s / 2) continue;
    const double y = static_cast<double>(s.*field);
    points.emplace_back(s.elapsed_s, y);
    (s.elapsed_s < duration_s * 3 / 4 ? q3 : q4).push_back(y);
  }
  Flatness f;
  if (points.size() < 2) return f;
  double sx = 0, sy = 0, sxx = 0, sxy = 0;
  f.min = f.max = points.front().second;
  for (const auto& [x, y] : points) {
    f.min = std::min(f.min, y);
    f.max = std::max(f.max, y);
    sx += x;
    sy += y;
    sxx += x * x;
    sxy += x * y;
  }
  const double k = static_cast<double>(points.size());
  const double mean = sy / k;
  const double denom = k * sxx - sx * sx;
  const double slope = denom != 0 ? (k * sxy - sx * sy) / denom : 0;
  const double span = points.back().first - points.front().first;
  f.ratio = f.min > 0 ? f.max / f.min : 0;
  f.trend = mean > 0 ? slope * span / mean : 0;
  const double q3_median = q3.empty() ? 0 : bench::Percentile(q3, 50);
  const double q4_median = q4.empty() ? 0 : bench::Percentile(q4, 50);
  f.median_growth = q3_median > 0 ? q4_median / q3_median - 1 : 0;
  f.flat = f.min > 0 && f.trend < tolerance && f.median_growth < tolerance;
  return f;
}

// Prints RSS and disk use at 25%, 50%, 75% and 100% of the run and the
// verdict on the second half; returns whether both are flat.
bool PrintLevels(const std::vector<Sample>& samples, double duration_s,
                 double tolerance) {
  std::cout << "\nsoak: summary (server RSS, data directory disk use)\n";
  std::cout << absl::StrFormat("  %-6s %9s %10s %10s %10s %9s\n", "at",
                               "elapsed", "RSS MiB", "disk MiB", "sent",
                               "backlog");
  for (int q : {25, 50, 75, 100}) {
    const Sample& s = At(samples, duration_s * q / 100);
    std::cout << absl::StrFormat("  %5d%% %8.0fs %10.1f %10.1f %10d %9d\n", q,
                                 s.elapsed_s, s.rss_bytes / kMiB,
                                 s.disk_bytes / kMiB, s.sent, s.backlog);
  }
  bool all_flat = true;
  for (const auto& [name, field] :
       {std::pair<const char*, int64_t Sample::*>{"RSS", &Sample::rss_bytes},
        std::pair<const char*, int64_t Sample::*>{"disk",
                                                  &Sample::disk_bytes}}) {
    const Flatness f = SecondHalf(samples, duration_s, field, tolerance);
    all_flat = all_flat && f.flat;
    std::cout << absl::StrFormat(
        "  %-4s second half: min %.1f MiB, max %.1f MiB (max/min %.2f), "
        "trend %+.1f%%, last quarter's median %+.1f%% -> %s\n",
        name, f.min / kMiB, f.max / kMiB, f.ratio, f.trend * 100,
        f.median_growth * 100, f.flat ? "flat" : "NOT flat");
  }
  std::cout << absl::StrFormat(
      "  flat means: over the second half the least-squares line rises by "
      "less than %.0f%% of the mean, and the last quarter's median is less "
      "than %.0f%% above the third quarter's\n",
      tolerance * 100, tolerance * 100);
  return all_flat;
}

// Reads a CSV written by a run (the columns of kCsvHeader).
absl::StatusOr<std::vector<Sample>> ReadCsv(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::string line;
  std::getline(in, line);
  if (line != kCsvHeader) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a soak CSV (header: ", line, ")"));
  }
  std::vector<Sample> samples;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    Sample s;
    if (std::sscanf(line.c_str(),
                    "%lf,%" SCNd64 ",%" SCNd64 ",%lf,%" SCNd64 ",%" SCNd64
                    ",%" SCNd64 ",%" SCNd64,
                    &s.elapsed_s, &s.rss_bytes, &s.disk_bytes, &s.server_cpu_s,
                    &s.sent, &s.deleted, &s.redelivered, &s.backlog) != 8) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": bad row: ", line));
    }
    samples.push_back(s);
  }
  if (samples.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": no samples"));
  }
  return samples;
}

// A path given on the command line of `bazel run` is relative to where it
// was typed, not to the runfiles directory the binary runs in.
std::string FromCaller(const std::string& path) {
  const char* dir = std::getenv("BUILD_WORKING_DIRECTORY");
  if (path.empty() || path[0] == '/' || dir == nullptr || dir[0] == '\0') {
    return path;
  }
  return absl::StrCat(dir, "/", path);
}

absl::Duration ParseDurationOrDie(const std::string& text, const char* flag) {
  absl::Duration d;
  // A bare number is seconds.
  double seconds = 0;
  if (absl::SimpleAtod(text, &seconds)) return absl::Seconds(seconds);
  if (!absl::ParseDuration(text, &d)) {
    std::cerr << "soak: --" << flag << ": not a duration: " << text
              << " (e.g. 90s, 15m, 1h)" << std::endl;
    std::exit(64);
  }
  return d;
}

int Main(int argc, char** argv) {
  CLI::App app{
      "Soak: steady load with lapsing leases on a weir_server it starts; "
      "samples its memory and disk use"};
  Config c;
  std::string duration = "1h", sample_interval = "10s", visibility = "2s",
              keep_deleted = "2m", max_age = "0", drain_timeout = "2m";
  std::string server_binary;
  bool keep_data = false;
  app.add_option("--duration", duration, "length of the load, e.g. 1h, 15s")
      ->capture_default_str();
  app.add_option("--sample_interval", sample_interval)->capture_default_str();
  app.add_option("--out", c.out, "CSV of the samples")->capture_default_str();
  app.add_option("--producers", c.producers)->capture_default_str();
  app.add_option("--consumers", c.consumers)->capture_default_str();
  app.add_option("--rate", c.rate, "messages/s over all producers")
      ->capture_default_str();
  app.add_option("--size", c.size, "message body bytes (>= 16)")
      ->capture_default_str();
  app.add_option("--send_batch", c.send_batch)->capture_default_str();
  app.add_option("--receive_batch", c.receive_batch)->capture_default_str();
  app.add_option("--visibility_timeout", visibility)->capture_default_str();
  app.add_option("--skip_fraction", c.skip_fraction,
                 "share of first deliveries never deleted (their leases "
                 "lapse)")
      ->capture_default_str();
  app.add_option("--keep_deleted", keep_deleted,
                 "the queue's retention_keep_deleted_for")
      ->capture_default_str();
  app.add_option("--max_age", max_age,
                 "the queue's retention_max_age (0: none)")
      ->capture_default_str();
  app.add_option("--drain_timeout", drain_timeout)->capture_default_str();
  app.add_option("--durability", c.durability, "sync or async")
      ->check(CLI::IsMember({"sync", "async"}))
      ->capture_default_str();
  app.add_option("--flat_tolerance", c.flat_tolerance,
                 "second half: most rise (trend, peaks) still called flat")
      ->capture_default_str();
  app.add_option("--server_binary", server_binary,
                 "weir_server to run (default: from the runfiles)");
  app.add_flag("--keep_data", keep_data,
               "leave the data directory (and RocksDB's LOG) in place");
  std::string from_csv;
  app.add_option("--from_csv", from_csv,
                 "only print the summary of a run's CSV (no server, no load)");
  CLI11_PARSE(app, argc, argv);
  if (!from_csv.empty()) {
    absl::StatusOr<std::vector<Sample>> samples = ReadCsv(FromCaller(from_csv));
    if (!samples.ok()) {
      std::cerr << "soak: " << samples.status() << std::endl;
      return 1;
    }
    PrintLevels(*samples, samples->back().elapsed_s, c.flat_tolerance);
    return 0;
  }
  c.duration = ParseDurationOrDie(duration, "duration");
  c.sample_interval = ParseDurationOrDie(sample_interval, "sample_interval");
  c.visibility_timeout = ParseDurationOrDie(visibility, "visibility_timeout");
  c.keep_deleted = ParseDurationOrDie(keep_deleted, "keep_deleted");
  c.max_age = ParseDurationOrDie(max_age, "max_age");
  c.drain_timeout = ParseDurationOrDie(drain_timeout, "drain_timeout");
  c.out = FromCaller(c.out);
  if (c.size < kSeqDigits || c.rate <= 0 || c.producers < 1 ||
      c.consumers < 1 || c.send_batch < 1 || c.receive_batch < 1 ||
      c.duration <= absl::ZeroDuration() ||
      c.sample_interval <= absl::ZeroDuration()) {
    std::cerr << "soak: bad flags (size >= 16, positive rate, counts and "
                 "durations)"
              << std::endl;
    return 64;
  }
  if (!server_binary.empty()) {
    setenv("WEIR_SERVER_BINARY", FromCaller(server_binary).c_str(), 1);
  }

  test::ServerOptions server_options;
  server_options.durability = c.durability;
  absl::StatusOr<std::unique_ptr<test::ServerProcess>> started =
      test::ServerProcess::Start(server_options);
  if (!started.ok()) {
    std::cerr << "soak: cannot start weir_server: " << started.status()
              << std::endl;
    return 1;
  }
  test::ServerProcess& server = **started;

  std::ofstream csv(c.out, std::ios::trunc);
  if (!csv) {
    std::cerr << "soak: cannot write " << c.out << std::endl;
    return 1;
  }
  csv << kCsvHeader << "\n";

  auto admin = NewStub(server.address());
  {
    v1::CreateQueueRequest request;
    request.set_name(kQueue);
    v1::QueueConfig* qc = request.mutable_config();
    qc->set_visibility_timeout_ms(
        absl::ToInt64Milliseconds(c.visibility_timeout));
    qc->set_retention_keep_deleted_for_ms(
        absl::ToInt64Milliseconds(c.keep_deleted));
    qc->set_retention_max_age_ms(absl::ToInt64Milliseconds(c.max_age));
    v1::CreateQueueResponse response;
    grpc::ClientContext context;
    SetDeadline(context, absl::ZeroDuration());
    grpc::Status status = admin->CreateQueue(&context, request, &response);
    if (!status.ok()) {
      std::cerr << "soak: CreateQueue: " << FormatStatus(status) << std::endl;
      return 1;
    }
  }

  Shared shared;
  shared.config = c;
  shared.address = server.address();
  shared.capacity = static_cast<int64_t>(
                        std::ceil(c.rate * absl::ToDoubleSeconds(c.duration))) +
                    c.producers * c.send_batch;
  shared.state.reset(new std::atomic<uint8_t>[shared.capacity]());

  std::cout << absl::StrFormat(
                   "soak: weir_server pid %d at %s (%s), data %s\n"
                   "soak: %s of %.0f msg/s x %d B, %d producers (batch %d), "
                   "%d consumers (batch %d), visibility %s, %.0f%% of first "
                   "deliveries left to lapse, keep deleted %s, max age %s\n"
                   "soak: samples every %s to %s",
                   server.pid(), server.address(), c.durability,
                   server.data_dir(), absl::FormatDuration(c.duration), c.rate,
                   c.size, c.producers, c.send_batch, c.consumers,
                   c.receive_batch, absl::FormatDuration(c.visibility_timeout),
                   c.skip_fraction * 100, absl::FormatDuration(c.keep_deleted),
                   absl::FormatDuration(c.max_age),
                   absl::FormatDuration(c.sample_interval), c.out)
            << std::endl;

  const pid_t pid = server.pid();
  auto take_sample = [&](absl::Time start) {
    Sample s;
    s.elapsed_s = absl::ToDoubleSeconds(absl::Now() - start);
    absl::StatusOr<loadgen::ProcSample> proc = loadgen::SampleProcess(pid);
    if (proc.ok()) {
      s.rss_bytes = proc->rss_bytes;
      s.server_cpu_s = proc->cpu_seconds;
    }
    s.disk_bytes =
        static_cast<int64_t>(bench::DiskUsageBytes(server.data_dir()));
    s.sent = shared.counters.sent.load();
    s.deleted = shared.counters.deleted.load();
    s.redelivered = shared.counters.redelivered.load();
    s.backlog = Backlog(*admin);
    return s;
  };

  const absl::Time start = absl::Now();
  std::vector<std::thread> consumers, producers;
  for (int i = 0; i < c.consumers; ++i) {
    consumers.emplace_back([&shared] { Consume(shared); });
  }
  for (int i = 0; i < c.producers; ++i) {
    producers.emplace_back([&shared, i, start] { Produce(shared, i, start); });
  }

  std::vector<Sample> samples;
  samples.push_back(take_sample(start));
  csv << CsvRow(samples.back()) << std::endl;
  // Every interval, and once more at the end when the interval does not
  // divide the duration.
  for (int64_t k = 1;; ++k) {
    absl::Time at = start + c.sample_interval * k;
    const absl::Time end = start + c.duration;
    if (at > end) {
      if (at - c.sample_interval >= end) break;
      at = end;
    }
    absl::SleepFor(at - absl::Now());
    samples.push_back(take_sample(start));
    const Sample& s = samples.back();
    csv << CsvRow(s) << std::endl;
    std::cout << absl::StrFormat(
                     "%7.0f s  RSS %7.1f MiB  disk %7.1f MiB  sent %d  "
                     "deleted %d  redelivered %d  backlog %d",
                     s.elapsed_s, s.rss_bytes / kMiB, s.disk_bytes / kMiB,
                     s.sent, s.deleted, s.redelivered, s.backlog)
              << std::endl;
    if (server.Exited()) {
      std::cerr << "soak: weir_server is gone" << std::endl;
      return 1;
    }
  }
  // Producers stop by themselves at the end of their schedule; one that
  // fell behind sends what it still owes first.
  for (std::thread& t : producers) t.join();
  const absl::Time load_end = absl::Now();

  // Drain: the consumers go on (the lapsed leases come back and are
  // deleted) until every acknowledged message is deleted and the queue is
  // empty, or the drain times out.
  const int64_t sent = shared.counters.sent.load();
  int64_t backlog = -1;
  const absl::Time drain_deadline = load_end + c.drain_timeout;
  // An empty queue ends it at once when every acknowledged message was
  // seen deleted, else after a second of staying empty (a Delete call that
  // failed may have been applied all the same).
  int empty_polls = 0;
  while (absl::Now() < drain_deadline) {
    backlog = Backlog(*admin);
    empty_polls = backlog == 0 ? empty_polls + 1 : 0;
    if (empty_polls > 0 &&
        (shared.counters.deleted.load() >= sent || empty_polls >= 5)) {
      break;
    }
    absl::SleepFor(absl::Milliseconds(200));
  }
  const double drain_s = absl::ToDoubleSeconds(absl::Now() - load_end);
  shared.consuming = false;
  for (std::thread& t : consumers) t.join();
  Sample end_sample = take_sample(start);
  backlog = end_sample.backlog;

  const int64_t issued = std::min(shared.next_seq.load(), shared.capacity);
  int64_t acked = 0, acked_not_deleted = 0, deleted_unacked = 0,
          maybe_deleted = 0;
  for (int64_t i = 0; i < issued; ++i) {
    const uint8_t st = shared.state[i].load();
    if (st & kAcked) {
      ++acked;
      if (!(st & kDeleted)) {
        ++acked_not_deleted;
        if (st & kDeleteUnknown) ++maybe_deleted;
      }
    } else if (st & kDeleted) {
      ++deleted_unacked;  // its Send failed on the client's side but landed
    }
  }
  // What is neither deleted, nor perhaps deleted by a call that failed, nor
  // in the queue any more is lost.
  const int64_t lost = std::max<int64_t>(
      0, acked_not_deleted - maybe_deleted - std::max<int64_t>(backlog, 0));

  const Counters& n = shared.counters;
  const double d = absl::ToDoubleSeconds(c.duration);

  const bool all_flat = PrintLevels(samples, d, c.flat_tolerance);
  std::cout << absl::StrFormat(
      "  drained in %.0f s: RSS %.1f MiB, disk %.1f MiB, backlog %d\n", drain_s,
      end_sample.rss_bytes / kMiB, end_sample.disk_bytes / kMiB, backlog);
  std::cout << absl::StrFormat(
      "  messages: %d sent (acknowledged), %d send failures, %d deliveries, "
      "%d redelivered, %d left to lapse, %d deleted, %d deletes refused as "
      "stale, %d deliveries after a delete, %d failed calls\n",
      sent, n.send_errors.load(), n.received.load(), n.redelivered.load(),
      n.skipped.load(), n.deleted.load(), n.stale_deletes.load(),
      n.after_delete.load(), n.call_errors.load());
  std::cout << absl::StrFormat(
      "  after draining: %d acknowledged, %d of them not deleted (%d named "
      "in a failed Delete call), %d still in the queue, %d lost; %d deleted "
      "whose Send reported a failure\n",
      acked, acked_not_deleted, maybe_deleted, backlog, lost, deleted_unacked);
  std::cout << absl::StrFormat("soak: %s; %s\n",
                               lost == 0 ? "nothing acknowledged was lost"
                                         : "ACKNOWLEDGED MESSAGES WERE LOST",
                               all_flat ? "RSS and disk flat in the second half"
                                        : "RSS or disk NOT flat in the second "
                                          "half");

  absl::StatusOr<int> stopped = server.Stop();
  if (!stopped.ok() || *stopped != 0) {
    std::cerr << "soak: weir_server did not stop cleanly: "
              << (stopped.ok() ? absl::StrCat("exit code ", *stopped)
                               : stopped.status().ToString())
              << std::endl;
    return 1;
  }
  if (keep_data) {
    std::cout << "soak: data directory kept: " << server.data_dir() << "\n";
  } else {
    std::error_code ec;
    std::filesystem::remove_all(server.data_dir(), ec);
  }
  if (lost > 0) return 3;
  if (backlog != 0) {
    std::cerr << "soak: the queue did not drain within "
              << absl::FormatDuration(c.drain_timeout) << std::endl;
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace soak
}  // namespace weir

int main(int argc, char** argv) { return weir::soak::Main(argc, argv); }
