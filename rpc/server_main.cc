// weir_server: serves the weir.v1.Weir API over gRPC on one RocksDB data
// directory.
//
//   weir_server [--listen ADDR] [--data-dir DIR] [--durability sync|async]
//               [--async-sync-interval DURATION] [--ready-file PATH]
//
// Flags default to $WEIR_LISTEN, $WEIR_DATA_DIR, $WEIR_DURABILITY,
// $WEIR_ASYNC_SYNC_INTERVAL, then to 127.0.0.1:50051, ./weir-data, sync and
// 100ms. SIGINT or SIGTERM shuts the server
// down cleanly: calls in progress finish (up to a grace period) and the
// database is closed.
#include <signal.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <thread>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "engine/engine.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "rpc/service.h"

namespace {

// Writes `content` to `path` atomically (temp file + rename), so a reader
// never sees a partial file.
bool WriteFileAtomically(const std::string& path, const std::string& content) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << content << "\n";
    if (!out.good()) return false;
  }
  return std::rename(tmp.c_str(), path.c_str()) == 0;
}

// The address actually bound: the requested host with the selected port.
std::string BoundAddress(const std::string& listen, int port) {
  const size_t colon = listen.rfind(':');
  const std::string host =
      colon == std::string::npos ? listen : listen.substr(0, colon);
  return absl::StrCat(host, ":", port);
}

// The async write-ahead log fsync interval, from its flag or environment
// variable: a duration in [0, 10s].
absl::StatusOr<absl::Duration> ParseSyncInterval(const std::string& text) {
  absl::Duration d;
  if (!absl::ParseDuration(text, &d)) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", text, "\" is not a duration (e.g. 100ms, 1s, 0)"));
  }
  if (d < absl::ZeroDuration() || d > absl::Seconds(10)) {
    return absl::InvalidArgumentError(
        absl::StrCat(text, " is out of range [0, 10s]"));
  }
  return d;
}

}  // namespace

int main(int argc, char** argv) {
  // Debian's Abseil is built with its debug checks on, which makes every
  // Mutex acquisition update a lock graph for deadlock detection. The tests
  // keep it; the server does not pay for it.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  CLI::App app{"Weir: a persistent, log-structured message queue server"};
  // A flag not given is taken from its environment variable (envname), and
  // checked the same way.
  std::string listen = "127.0.0.1:50051";
  std::string data_dir = "./weir-data";
  std::string durability = "sync";
  std::string async_sync_interval = "100ms";
  std::string ready_file;
  int memtable_budget_mib = 0;
  app.add_option("--listen", listen,
                 "address to serve on, host:port (port 0 picks a free one)")
      ->envname("WEIR_LISTEN")
      ->capture_default_str();
  app.add_option("--data-dir", data_dir, "directory holding the data")
      ->envname("WEIR_DATA_DIR")
      ->capture_default_str();
  app.add_option("--durability", durability,
                 "sync: fsync before acknowledging; async: write only")
      ->envname("WEIR_DURABILITY")
      ->check(CLI::IsMember({"sync", "async"}))
      ->capture_default_str();
  app.add_option("--async-sync-interval", async_sync_interval,
                 "async: how often the write-ahead log is fsynced in the "
                 "background (0 to 10s, e.g. 100ms; 0: never, RocksDB syncs "
                 "it only when it starts a new log)")
      ->envname("WEIR_ASYNC_SYNC_INTERVAL")
      ->check([](const std::string& text) -> std::string {
        absl::StatusOr<absl::Duration> d = ParseSyncInterval(text);
        return d.ok() ? "" : std::string(d.status().message());
      })
      ->capture_default_str();
  app.add_option("--memtable-budget-mib", memtable_budget_mib,
                 "MiB RocksDB's memtables may hold in all (16 to 65536), "
                 "bounding memory under a high write rate at some cost in "
                 "flushes; 0: RocksDB's defaults")
      ->envname("WEIR_MEMTABLE_BUDGET_MIB")
      ->check([](const std::string& text) -> std::string {
        int v = 0;
        if (!absl::SimpleAtoi(text, &v) || (v != 0 && (v < 16 || v > 65536))) {
          return absl::StrCat("\"", text,
                              "\" is not 0 or a whole number of MiB from 16 "
                              "to 65536");
        }
        return "";
      })
      ->capture_default_str();
  app.add_option("--ready-file", ready_file,
                 "once serving, write the bound address to this file");
  CLI11_PARSE(app, argc, argv);

  // Signals are taken by one thread with sigwait; every other thread,
  // including those RocksDB and gRPC start, inherits the blocked mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  weir::EngineOptions options;
  // Engine threads run Subscribe deliveries (each may wait for an fsync;
  // concurrent ones share it) and the passes of woken long polls.
  options.delivery_threads = 16;
  options.durability = durability == "async" ? weir::Durability::kAsync
                                             : weir::Durability::kSync;
  // Checked by the option's validator, from the flag or the environment.
  options.async_wal_sync_interval = *ParseSyncInterval(async_sync_interval);
  options.memtable_budget_bytes =
      size_t{static_cast<unsigned>(memtable_budget_mib)} << 20;
  absl::StatusOr<std::unique_ptr<weir::Engine>> engine =
      weir::Engine::Open(options, data_dir);
  if (!engine.ok()) {
    std::cerr << "weir: cannot open data directory " << data_dir << ": "
              << engine.status() << std::endl;
    return 1;
  }

  weir::WeirService service(engine->get());
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  // Larger than any valid request, so an oversized message is answered by
  // Weir's own check with a clear INVALID_ARGUMENT.
  builder.SetMaxReceiveMessageSize(64 << 20);
  builder.SetMaxSendMessageSize(64 << 20);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::cerr << "weir: cannot listen on " << listen << std::endl;
    return 1;
  }
  const std::string bound = BoundAddress(listen, port);
  std::cerr << "weir: listening on " << bound << ", data in " << data_dir
            << " (durability " << durability;
  if (options.durability == weir::Durability::kAsync) {
    std::cerr << ", WAL fsynced "
              << (options.async_wal_sync_interval == absl::ZeroDuration()
                      ? std::string("only at new log files")
                      : absl::StrCat("every ",
                                     absl::FormatDuration(
                                         options.async_wal_sync_interval)));
  }
  if (memtable_budget_mib > 0) {
    std::cerr << ", memtables " << memtable_budget_mib << " MiB in all";
  }
  std::cerr << ")" << std::endl;
  if (!ready_file.empty() && !WriteFileAtomically(ready_file, bound)) {
    std::cerr << "weir: cannot write " << ready_file << std::endl;
    return 1;
  }

  absl::Time shutdown_start;
  std::thread signal_thread([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    shutdown_start = absl::Now();
    std::cerr << "weir: " << (sig == SIGINT ? "SIGINT" : "SIGTERM")
              << ", shutting down" << std::endl;
    // Long polls end at once; other calls get up to 5 s to finish.
    engine->get()->BeginShutdown();
    service.BeginShutdown();
    server->Shutdown(std::chrono::system_clock::now() +
                     std::chrono::seconds(5));
  });
  server->Wait();
  signal_thread.join();
  std::cerr << "weir: calls drained in "
            << absl::FormatDuration(absl::Now() - shutdown_start)
            << ", closing the database" << std::endl;
  const absl::Time close_start = absl::Now();
  engine->reset();
  std::cerr << "weir: stopped (database closed in "
            << absl::FormatDuration(absl::Now() - close_start) << ")"
            << std::endl;
  return 0;
}
