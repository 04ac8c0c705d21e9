// What a gRPC call costs on this machine with no queue behind it: a server
// whose Send (and Publish) answers at once (no engine, no disk), and N
// clients calling it one call at a time each, as the load generator's
// producers do. The calls per second and the CPU each side spends per call
// are the floor under any Weir figure that sends one message per call.
//
//   bazel build -c opt //bench:grpc_floor
//   bazel-bin/bench/grpc_floor --serve 127.0.0.1:50090 --server-api callback &
//   bazel-bin/bench/grpc_floor --target 127.0.0.1:50090 --server-pid PID
//       --clients 64 [--connections 1] --client-api sync --seconds 5
//
// --client-api: sync (a blocking stub call), callback-wait (the callback API,
// waited for: client/call.h), callback (each completion starts the next
// call; no thread waits) or stream (one Publish stream per client, each
// request answered before the next; needs --server-api callback).

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "bench/loadgen/proc_stats.h"
#include "client/call.h"
#include "client/channel.h"
#include "grpcpp/grpcpp.h"
#include "weir/v1/weir.grpc.pb.h"

namespace weir {
namespace {

// Send answers at once with one made-up offset per entry.
class CallbackFloor final : public v1::Weir::CallbackService {
 public:
  grpc::ServerUnaryReactor* Send(grpc::CallbackServerContext* context,
                                 const v1::SendRequest* request,
                                 v1::SendResponse* response) override {
    for (int i = 0; i < request->entries_size(); ++i) {
      response->add_offsets(next_.fetch_add(1, std::memory_order_relaxed));
    }
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  grpc::ServerBidiReactor<v1::PublishRequest, v1::PublishResponse>* Publish(
      grpc::CallbackServerContext*) override {
    return new PublishFloor(&next_);
  }

 private:
  // Answers each request of a Publish stream as soon as it is read, one at
  // a time (the clients here wait for each answer anyway).
  class PublishFloor final
      : public grpc::ServerBidiReactor<v1::PublishRequest,
                                       v1::PublishResponse> {
   public:
    explicit PublishFloor(std::atomic<uint64_t>* next) : next_(next) {
      StartRead(&request_);
    }
    void OnReadDone(bool ok) override {
      if (!ok) {
        Finish(grpc::Status::OK);
        return;
      }
      response_.Clear();
      response_.set_request_id(request_.request_id());
      for (int i = 0; i < request_.entries_size(); ++i) {
        response_.add_offsets(next_->fetch_add(1, std::memory_order_relaxed));
      }
      StartWrite(&response_);
    }
    void OnWriteDone(bool ok) override {
      if (ok) {
        StartRead(&request_);
      } else {
        Finish(grpc::Status::OK);
      }
    }
    void OnDone() override { delete this; }

   private:
    std::atomic<uint64_t>* const next_;
    v1::PublishRequest request_;
    v1::PublishResponse response_;
  };

  std::atomic<uint64_t> next_{0};
};

// The same on the completion-queue API: `threads` threads, each polling a
// completion queue of its own with a pool of pending calls.
class AsyncFloor {
 public:
  AsyncFloor(grpc::ServerBuilder& builder, int threads) {
    builder.RegisterService(&service_);
    for (int i = 0; i < threads; ++i)
      cqs_.push_back(builder.AddCompletionQueue());
  }

  void Run() {
    std::vector<std::thread> threads;
    for (auto& cq : cqs_) {
      threads.emplace_back([this, cq = cq.get()] { Poll(cq); });
    }
    for (std::thread& t : threads) t.join();
  }

 private:
  struct Call {
    grpc::ServerContext context;
    v1::SendRequest request;
    v1::SendResponse response;
    grpc::ServerAsyncResponseWriter<v1::SendResponse> writer{&context};
    bool finishing = false;
  };

  void Arm(grpc::ServerCompletionQueue* cq) {
    Call* call = new Call;
    service_.RequestSend(&call->context, &call->request, &call->writer, cq, cq,
                         call);
  }

  void Poll(grpc::ServerCompletionQueue* cq) {
    for (int i = 0; i < 128; ++i) Arm(cq);
    void* tag;
    bool ok;
    while (cq->Next(&tag, &ok)) {
      Call* call = static_cast<Call*>(tag);
      if (call->finishing || !ok) {
        delete call;
        continue;
      }
      Arm(cq);
      for (int i = 0; i < call->request.entries_size(); ++i) {
        call->response.add_offsets(
            next_.fetch_add(1, std::memory_order_relaxed));
      }
      call->finishing = true;
      call->writer.Finish(call->response, grpc::Status::OK, call);
    }
  }

  v1::Weir::AsyncService service_;
  std::vector<std::unique_ptr<grpc::ServerCompletionQueue>> cqs_;
  std::atomic<uint64_t> next_{0};
};

// Integer channel arguments given with --arg, set on the server (with
// --serve) or on every client channel (with --target).
std::vector<std::pair<std::string, int>> channel_args;

int Serve(const std::string& address, const std::string& api, int threads) {
  grpc::ServerBuilder builder;
  for (const auto& [key, value] : channel_args) {
    builder.AddChannelArgument(key, value);
  }
  int port = 0;
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &port);
  CallbackFloor callback;
  std::unique_ptr<AsyncFloor> async;
  if (api == "callback") {
    builder.RegisterService(&callback);
  } else {
    async = std::make_unique<AsyncFloor>(builder, threads);
  }
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::fprintf(stderr, "cannot listen on %s\n", address.c_str());
    return 1;
  }
  // The port is the one bound (the address may ask for port 0).
  std::printf("serving on port %d (%s)\n", port, api.c_str());
  std::fflush(stdout);
  if (async != nullptr) {
    async->Run();
  } else {
    server->Wait();
  }
  return 0;
}

// CPU seconds of process `pid` so far; 0 for none (pid 0) or when it cannot
// be read.
double CpuSecondsOf(pid_t pid) {
  if (pid <= 0) return 0;
  absl::StatusOr<loadgen::ProcSample> sample = loadgen::SampleProcess(pid);
  return sample.ok() ? sample->cpu_seconds : 0;
}

v1::SendRequest OneMessage() {
  v1::SendRequest request;
  request.set_queue("q");
  request.add_entries()->set_body(std::string(256, 'x'));
  return request;
}

// A channel on a TCP connection of its own.
std::shared_ptr<grpc::Channel> NewChannel(const std::string& target) {
  return CreateChannel(target, ChannelOptions{.dedicated_connection = true,
                                              .int_args = channel_args});
}

// One client: calls Send until `stop`, one call at a time, counting them,
// on a blocking stub or, with `callback`, through the callback API waited
// for (CallAndWait, as weir::Client calls).
void UnaryClient(std::shared_ptr<grpc::Channel> channel, bool callback,
                 const std::atomic<bool>& stop, std::atomic<uint64_t>& calls) {
  auto stub = v1::Weir::NewStub(channel);
  const v1::SendRequest request = OneMessage();
  while (!stop.load(std::memory_order_relaxed)) {
    grpc::ClientContext context;
    v1::SendResponse response;
    const grpc::Status status =
        callback ? CallAndWait(stub->async(), &v1::Weir::Stub::async::Send,
                               &context, request, &response)
                 : stub->Send(&context, request, &response);
    if (!status.ok()) return;
    calls.fetch_add(1, std::memory_order_relaxed);
  }
}

// The same over one Publish stream per client, each request answered
// before the next is written (as the load generator's weir-stream does).
void StreamClient(std::shared_ptr<grpc::Channel> channel,
                  const std::atomic<bool>& stop, std::atomic<uint64_t>& calls) {
  auto stub = v1::Weir::NewStub(channel);
  grpc::ClientContext context;
  auto stream = stub->Publish(&context);
  const v1::SendRequest one = OneMessage();
  v1::PublishRequest request;
  request.set_queue(one.queue());
  *request.mutable_entries() = one.entries();
  uint64_t id = 0;
  while (!stop.load(std::memory_order_relaxed)) {
    request.set_request_id(++id);
    v1::PublishResponse response;
    if (!stream->Write(request) || !stream->Read(&response)) break;
    calls.fetch_add(1, std::memory_order_relaxed);
  }
  stream->WritesDone();
  v1::PublishResponse ignored;
  while (stream->Read(&ignored)) {
  }
  stream->Finish().IgnoreError();
}

// The same on the callback API: each call's completion starts the next, and
// no thread of ours waits.
class CallbackClient {
 public:
  CallbackClient(std::shared_ptr<grpc::Channel> channel,
                 const std::atomic<bool>& stop, std::atomic<uint64_t>& calls)
      : stub_(v1::Weir::NewStub(channel)),
        request_(OneMessage()),
        stop_(stop),
        calls_(calls) {}

  void Start() { Next(); }
  void Wait() { done_.WaitForNotification(); }

 private:
  void Next() {
    context_ = std::make_unique<grpc::ClientContext>();
    response_.Clear();
    stub_->async()->Send(
        context_.get(), &request_, &response_, [this](grpc::Status status) {
          if (!status.ok() || stop_.load(std::memory_order_relaxed)) {
            done_.Notify();
            return;
          }
          calls_.fetch_add(1, std::memory_order_relaxed);
          Next();
        });
  }

  std::unique_ptr<v1::Weir::Stub> stub_;
  const v1::SendRequest request_;
  const std::atomic<bool>& stop_;
  std::atomic<uint64_t>& calls_;
  std::unique_ptr<grpc::ClientContext> context_;
  v1::SendResponse response_;
  absl::Notification done_;
};

int Drive(const std::string& target, int server_pid, int clients,
          int connections, const std::string& api, double seconds) {
  // Client i calls on connection i % connections.
  if (connections <= 0 || connections > clients) connections = clients;
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (int i = 0; i < connections; ++i) channels.push_back(NewChannel(target));
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> calls{0};
  std::vector<std::thread> threads;
  std::vector<std::unique_ptr<CallbackClient>> callback_clients;
  for (int i = 0; i < clients; ++i) {
    if (api == "sync" || api == "callback-wait") {
      threads.emplace_back(UnaryClient, channels[i % connections],
                           api == "callback-wait", std::cref(stop),
                           std::ref(calls));
    } else if (api == "stream") {
      threads.emplace_back(StreamClient, channels[i % connections],
                           std::cref(stop), std::ref(calls));
    } else {
      callback_clients.push_back(std::make_unique<CallbackClient>(
          channels[i % connections], stop, calls));
      callback_clients.back()->Start();
    }
  }
  absl::SleepFor(absl::Seconds(1));  // connect and warm up
  const uint64_t calls0 = calls.load();
  const double own0 = CpuSecondsOf(getpid());
  const double server0 = CpuSecondsOf(server_pid);
  const absl::Time t0 = absl::Now();
  absl::SleepFor(absl::Seconds(seconds));
  const double elapsed = absl::ToDoubleSeconds(absl::Now() - t0);
  const uint64_t n = calls.load() - calls0;
  const double own = CpuSecondsOf(getpid()) - own0;
  const double server = CpuSecondsOf(server_pid) - server0;
  stop = true;
  for (std::thread& t : threads) t.join();
  for (auto& c : callback_clients) c->Wait();
  if (n == 0) {
    std::fprintf(stderr, "no call completed in %.1f s\n", elapsed);
    return 1;
  }
  std::printf(
      "clients %d on %d connections (%s): %.0f calls/s; client %.2f cores, "
      "%.1f us/call; server %.2f cores, %.1f us/call\n",
      clients, connections, api.c_str(), n / elapsed, own / elapsed,
      own / n * 1e6, server / elapsed, server / n * 1e6);
  return 0;
}

}  // namespace
}  // namespace weir

int main(int argc, char** argv) {
  CLI::App app{"The cost of a unary gRPC call with nothing behind it"};
  std::string serve, target, server_api = "callback", client_api = "sync";
  int server_threads = 2, clients = 64, server_pid = 0, connections = 0;
  double seconds = 5;
  app.add_option("--serve", serve, "host:port to serve on");
  app.add_option("--server-api", server_api, "callback or async")
      ->check(CLI::IsMember({"callback", "async"}));
  app.add_option("--server-threads", server_threads,
                 "completion-queue threads (async)")
      ->check(CLI::Range(1, 64));
  app.add_option("--target", target, "host:port of a --serve process");
  app.add_option("--server-pid", server_pid, "its pid, for its CPU time");
  app.add_option("--clients", clients)->check(CLI::Range(1, 1024));
  app.add_option("--connections", connections,
                 "TCP connections the clients share, round robin (default: "
                 "one each)")
      ->check(CLI::Range(0, 1024));
  app.add_option(
         "--client-api", client_api,
         "sync, callback-wait, callback (unary Send) or stream (Publish)")
      ->check(CLI::IsMember({"sync", "callback-wait", "callback", "stream"}));
  app.add_option("--seconds", seconds)->check(CLI::Range(0.1, 3600.0));
  std::vector<std::string> args;
  app.add_option("--arg", args,
                 "KEY=INT: a gRPC channel argument for the server (--serve) "
                 "or the clients (--target); repeatable");
  CLI11_PARSE(app, argc, argv);
  for (const std::string& arg : args) {
    const size_t eq = arg.find('=');
    int value = 0;
    if (eq == std::string::npos || eq == 0 ||
        !absl::SimpleAtoi(arg.substr(eq + 1), &value)) {
      std::fprintf(stderr, "--arg wants KEY=INT, got %s\n", arg.c_str());
      return 2;
    }
    weir::channel_args.emplace_back(arg.substr(0, eq), value);
  }
  if (serve.empty() == target.empty()) {
    std::fprintf(stderr, "give one of --serve and --target\n");
    return 2;
  }
  if (!serve.empty()) {
    return weir::Serve(serve, server_api, server_threads);
  }
  return weir::Drive(target, server_pid, clients, connections, client_api,
                     seconds);
}
