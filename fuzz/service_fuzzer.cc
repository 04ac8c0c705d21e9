// Fuzzes every unary request handler of the weir.v1.Weir service
// (rpc/service.h) with arbitrary protobuf bytes, against a real Engine in a
// temporary directory.
//
// An input is a sequence of calls, each `method byte, 16-bit little-endian
// length, that many bytes of the serialized request`; bytes that do not
// parse as the request skip the call. Before each input the engine is reset
// to a small fixed state (queues "q", "dlq"
// and "p" with "dlq" as its dead-letter queue, a group "g" on "q", three
// messages in "q", two of them leased), so that every input runs the same way.
// In Delete, ChangeVisibility and Receive requests (its
// delete_receipt_handles) the handles "#0" and "#1" are replaced by the
// receipts of the two leased messages, to reach past receipt checks.
//
// The callback methods (Send, Delete, Receive) run their reactor against a
// stand-in for gRPC's call object that records the status it finishes with;
// a reactor that has not finished within kFinishWait (a long poll) is
// cancelled as a client would cancel it. Subscribe (a stream) is not driven
// here.
#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "engine/engine.h"
#include "grpcpp/grpcpp.h"
#include "rpc/service.h"
#include "weir/v1/weir.pb.h"

namespace weir {
namespace {

namespace pb = ::weir::v1;

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "service_fuzzer: %s\n", what);
    std::abort();
  }
}

// Stands in for gRPC's unary call object under a callback reactor: records
// the status the reactor finishes with. OnDone is left to the caller, which
// calls it once Finish has happened, as gRPC does after the status is sent.
class FakeUnaryCall : public grpc::ServerCallbackUnary {
 public:
  void Bind(grpc::ServerUnaryReactor* reactor) {
    reactor_ = reactor;
    BindReactor(reactor);
  }

  void Finish(grpc::Status s) override {
    absl::MutexLock lock(&mu_);
    Check(!finished_, "reactor finished twice");
    status_ = std::move(s);
    finished_ = true;
  }
  void SendInitialMetadata() override {}

  // Waits up to `timeout` for Finish; returns whether it happened.
  bool WaitFinished(absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    return mu_.AwaitWithTimeout(absl::Condition(&finished_), timeout);
  }
  grpc::Status status() {
    absl::MutexLock lock(&mu_);
    return status_;
  }

 private:
  grpc::internal::ServerReactor* reactor() override { return reactor_; }
  void CallOnDone() override { reactor_->OnDone(); }

  grpc::ServerUnaryReactor* reactor_ = nullptr;
  absl::Mutex mu_;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status status_ ABSL_GUARDED_BY(mu_);
};

// How long a callback method may take before the harness cancels it.
constexpr absl::Duration kFinishWait = absl::Milliseconds(20);

void CheckStatus(const grpc::Status& s) {
  Check(s.error_code() >= grpc::StatusCode::OK &&
            s.error_code() <= grpc::StatusCode::UNAUTHENTICATED,
        "status code out of range");
  if (!s.ok()) Check(!s.error_message().empty(), "error without a message");
}

class Harness {
 public:
  Harness() {
    const char* base = std::getenv("TEST_TMPDIR");
    std::string templ =
        std::string(base != nullptr ? base : "/tmp") + "/weir-fuzz-XXXXXX";
    Check(mkdtemp(templ.data()) != nullptr, "mkdtemp failed");
    dir_ = templ;
  }

  ~Harness() {
    Close();
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  void Run(const uint8_t* data, size_t size) {
    Reset();
    size_t pos = 0;
    for (int calls = 0; calls < 16 && pos + 3 <= size; ++calls) {
      const uint8_t method = data[pos];
      size_t len = data[pos + 1] | (static_cast<size_t>(data[pos + 2]) << 8);
      pos += 3;
      if (len > size - pos) len = size - pos;
      Call(method, data + pos, len);
      pos += len;
    }
  }

 private:
  void Close() {
    service_.reset();
    engine_.reset();
  }

  // Opens a fresh engine in an empty directory.
  void Reopen() {
    Close();
    const std::string data = dir_ + "/data";
    std::error_code ignored;
    std::filesystem::remove_all(data, ignored);
    EngineOptions options;
    options.durability = Durability::kAsync;
    options.delivery_threads = 1;
    absl::StatusOr<std::unique_ptr<Engine>> engine =
        Engine::Open(options, data);
    Check(engine.ok(), "Engine::Open failed");
    engine_ = *std::move(engine);
    service_ = std::make_unique<WeirService>(engine_.get());
  }

  // Deletes every queue, then builds the fixed starting state. The range
  // tombstones deleted queues leave make every later read slower, so every
  // kInputsPerEngine inputs start on a fresh engine instead (opening one
  // per input would cost more than the inputs).
  void Reset() {
    static constexpr int kInputsPerEngine = 64;
    if (engine_ == nullptr || ++inputs_ % kInputsPerEngine == 0) Reopen();
    for (int pass = 0; pass < 4; ++pass) {
      absl::StatusOr<std::vector<QueueInfo>> queues =
          engine_->ListQueues("", "", 100000);
      Check(queues.ok(), "ListQueues failed");
      if (queues->empty()) break;
      // A dead-letter queue goes once the queues that use it are gone.
      for (const QueueInfo& q : *queues) (void)engine_->DeleteQueue(q.name);
    }
    Check(engine_->ListQueues("", "", 1)->empty(), "reset left queues behind");

    Check(engine_->CreateQueue("q", QueueConfig()).ok(), "create q");
    Check(engine_->CreateQueue("dlq", QueueConfig()).ok(), "create dlq");
    QueueConfig p;
    p.max_receives = 1;
    p.dead_letter_queue = "dlq";
    Check(engine_->CreateQueue("p", p).ok(), "create p");
    Check(engine_->CreateGroup("q", "g", LogPosition::Earliest()).ok(),
          "create group");
    std::vector<SendEntry> entries(3);
    entries[0].body = "one";
    entries[1].body = "two";
    entries[1].attributes = {{"k", "v"}};
    entries[2].body = "three";
    entries[2].ordering_key = "key";
    Check(engine_->Send("q", entries).ok(), "send");
    ReceiveOptions ro;
    ro.max_messages = 2;
    absl::StatusOr<std::vector<ReceivedMessage>> got =
        engine_->Receive("q", ro);
    Check(got.ok() && got->size() == 2, "receive");
    receipts_.clear();
    for (const ReceivedMessage& m : *got) receipts_.push_back(m.receipt_handle);
  }

  std::string Substitute(const std::string& handle) const {
    if (handle == "#0") return receipts_[0];
    if (handle == "#1") return receipts_[1];
    return handle;
  }

  template <typename Req, typename Resp, typename Method>
  void Invoke(const uint8_t* data, size_t len, Method method) {
    Req req;
    if (!req.ParseFromArray(data, static_cast<int>(len))) return;
    Fix(&req);
    Resp resp;
    grpc::ServerContext ctx;
    CheckStatus((service_.get()->*method)(&ctx, &req, &resp));
    // Whatever was answered can be sent.
    std::string out;
    Check(resp.SerializeToString(&out), "response does not serialize");
  }

  // Runs a callback method; returns the status it finished with (OK if the
  // bytes do not parse).
  template <typename Req, typename Resp, typename Method>
  grpc::Status InvokeCallback(const uint8_t* data, size_t len, Method method) {
    Req req;
    if (!req.ParseFromArray(data, static_cast<int>(len))) {
      return grpc::Status::OK;
    }
    Fix(&req);
    Resp resp;
    grpc::CallbackServerContext ctx;
    grpc::ServerUnaryReactor* reactor =
        (service_.get()->*method)(&ctx, &req, &resp);
    Check(reactor != nullptr, "no reactor");
    FakeUnaryCall call;
    call.Bind(reactor);
    if (!call.WaitFinished(kFinishWait)) {
      reactor->OnCancel();
      Check(call.WaitFinished(absl::Seconds(60)),
            "reactor did not finish after OnCancel");
    }
    const grpc::Status status = call.status();
    CheckStatus(status);
    std::string out;
    Check(resp.SerializeToString(&out), "response does not serialize");
    reactor->OnDone();
    return status;
  }

  // Messages deleted so far from the fixed queues, in every group of "q".
  uint64_t DeletedTotal() {
    uint64_t total = 0;
    for (const auto& [queue, group] :
         {std::pair<const char*, const char*>{"q", ""},
          {"q", "g"},
          {"p", ""},
          {"dlq", ""}}) {
      absl::StatusOr<QueueStats> stats = engine_->GetQueueStats(queue, group);
      if (stats.ok()) total += stats->deleted_total;
    }
    return total;
  }

  // A Receive, which may carry deletes. One that fails for any reason but
  // CANCELLED (the harness's own cancel of a long poll, which comes after
  // the deletes are applied) was refused before it deleted anything.
  void InvokeReceive(const uint8_t* data, size_t len) {
    const uint64_t deleted_before = DeletedTotal();
    const grpc::Status status =
        InvokeCallback<pb::ReceiveRequest, pb::ReceiveResponse>(
            data, len, &WeirService::Receive);
    if (!status.ok() && status.error_code() != grpc::StatusCode::CANCELLED) {
      Check(DeletedTotal() == deleted_before,
            "a refused Receive deleted messages");
    }
  }

  template <typename Req>
  void Fix(Req*) {}
  void Fix(pb::DeleteRequest* req) {
    for (std::string& h : *req->mutable_receipt_handles()) h = Substitute(h);
  }
  void Fix(pb::ReceiveRequest* req) {
    for (std::string& h : *req->mutable_delete_receipt_handles()) {
      h = Substitute(h);
    }
  }
  void Fix(pb::ChangeVisibilityRequest* req) {
    for (pb::VisibilityChange& c : *req->mutable_entries()) {
      c.set_receipt_handle(Substitute(c.receipt_handle()));
    }
  }

  void Call(uint8_t method, const uint8_t* data, size_t len) {
    switch (method % 17) {
      case 0:
        return Invoke<pb::CreateQueueRequest, pb::CreateQueueResponse>(
            data, len, &WeirService::CreateQueue);
      case 1:
        return Invoke<pb::GetQueueRequest, pb::Queue>(data, len,
                                                      &WeirService::GetQueue);
      case 2:
        return Invoke<pb::UpdateQueueRequest, pb::Queue>(
            data, len, &WeirService::UpdateQueue);
      case 3:
        return Invoke<pb::ListQueuesRequest, pb::ListQueuesResponse>(
            data, len, &WeirService::ListQueues);
      case 4:
        return Invoke<pb::DeleteQueueRequest, pb::DeleteQueueResponse>(
            data, len, &WeirService::DeleteQueue);
      case 5:
        return Invoke<pb::PurgeQueueRequest, pb::PurgeQueueResponse>(
            data, len, &WeirService::PurgeQueue);
      case 6:
        return Invoke<pb::GetQueueStatsRequest, pb::QueueStats>(
            data, len, &WeirService::GetQueueStats);
      case 7:
        (void)InvokeCallback<pb::SendRequest, pb::SendResponse>(
            data, len, &WeirService::Send);
        return;
      case 8:
        (void)InvokeCallback<pb::DeleteRequest, pb::DeleteResponse>(
            data, len, &WeirService::Delete);
        return;
      case 9:
        return Invoke<pb::ChangeVisibilityRequest,
                      pb::ChangeVisibilityResponse>(
            data, len, &WeirService::ChangeVisibility);
      case 10:
        return Invoke<pb::CreateGroupRequest, pb::Group>(
            data, len, &WeirService::CreateGroup);
      case 11:
        return Invoke<pb::DeleteGroupRequest, pb::DeleteGroupResponse>(
            data, len, &WeirService::DeleteGroup);
      case 12:
        return Invoke<pb::ListGroupsRequest, pb::ListGroupsResponse>(
            data, len, &WeirService::ListGroups);
      case 13:
        return Invoke<pb::SeekGroupRequest, pb::Group>(data, len,
                                                       &WeirService::SeekGroup);
      case 14:
        return Invoke<pb::ReadRequest, pb::ReadResponse>(data, len,
                                                         &WeirService::Read);
      case 15:
        return Invoke<pb::RedriveRequest, pb::RedriveResponse>(
            data, len, &WeirService::Redrive);
      case 16:
        return InvokeReceive(data, len);
    }
  }

  std::string dir_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<WeirService> service_;
  std::vector<std::string> receipts_;
  int inputs_ = 0;
};

Harness* harness = nullptr;

void DestroyHarness() {
  delete harness;
  harness = nullptr;
}

}  // namespace
}  // namespace weir

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const bool first = weir::harness == nullptr;
  if (first) weir::harness = new weir::Harness();
  weir::harness->Run(data, size);
  // Registered once an engine has been opened: exit handlers run in reverse
  // order, so the engine then closes before the function-local statics
  // RocksDB created while opening it are destroyed.
  if (first) std::atexit(weir::DestroyHarness);
  return 0;
}
