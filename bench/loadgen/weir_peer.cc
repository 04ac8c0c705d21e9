// Weir over gRPC: Send, Receive (long poll) and Delete, one channel with a
// connection of its own per client.

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "bench/loadgen/peer.h"
#include "client/channel.h"
#include "grpcpp/grpcpp.h"
#include "weir/v1/weir.grpc.pb.h"

namespace weir {
namespace loadgen {
namespace {

// Deadline of a call beyond its own long-poll wait.
constexpr absl::Duration kCallTimeout = absl::Seconds(30);

absl::Status FromGrpc(const grpc::Status& status, absl::string_view what) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      absl::StrCat(what, ": ", status.error_message()));
}

void SetDeadline(grpc::ClientContext& context, absl::Duration extra) {
  context.set_deadline(absl::ToChronoTime(absl::Now() + kCallTimeout + extra));
}

class WeirClient : public PeerClient {
 public:
  WeirClient(std::unique_ptr<v1::Weir::Stub> stub, std::string queue)
      : stub_(std::move(stub)), queue_(std::move(queue)) {}

  absl::Status Send(const std::vector<std::string>& bodies) override {
    v1::SendRequest request;
    request.set_queue(queue_);
    for (const std::string& body : bodies) {
      request.add_entries()->set_body(body);
    }
    v1::SendResponse response;
    grpc::ClientContext context;
    SetDeadline(context, absl::ZeroDuration());
    return FromGrpc(stub_->Send(&context, request, &response), "Send");
  }

  absl::Status Receive(int max, absl::Duration wait,
                       std::vector<Delivery>* out) override {
    out->clear();
    v1::ReceiveRequest request;
    request.set_queue(queue_);
    request.set_max_messages(max);
    request.set_wait_time_ms(absl::ToInt64Milliseconds(wait));
    v1::ReceiveResponse response;
    grpc::ClientContext context;
    SetDeadline(context, wait);
    absl::Status status =
        FromGrpc(stub_->Receive(&context, request, &response), "Receive");
    if (!status.ok()) return status;
    out->reserve(response.messages_size());
    for (v1::Message& message : *response.mutable_messages()) {
      out->push_back(Delivery{std::move(*message.mutable_body()),
                              std::move(*message.mutable_receipt_handle())});
    }
    return absl::OkStatus();
  }

  absl::Status Delete(const std::vector<const Delivery*>& done) override {
    if (done.empty()) return absl::OkStatus();
    v1::DeleteRequest request;
    request.set_queue(queue_);
    for (const Delivery* delivery : done) {
      request.add_receipt_handles(delivery->handle);
    }
    v1::DeleteResponse response;
    grpc::ClientContext context;
    SetDeadline(context, absl::ZeroDuration());
    // A handle whose lease lapsed is refused per entry; the message comes
    // back and is counted again by the workload, so that is not an error.
    return FromGrpc(stub_->Delete(&context, request, &response), "Delete");
  }

 private:
  std::unique_ptr<v1::Weir::Stub> stub_;
  const std::string queue_;
};

class WeirPeer : public Peer {
 public:
  explicit WeirPeer(std::string address) : address_(std::move(address)) {}

  absl::Status Setup(const QueueSpec& spec) override {
    queue_ = spec.name;
    auto stub = v1::Weir::NewStub(CreateChannel(address_));
    v1::CreateQueueRequest request;
    request.set_name(spec.name);
    request.mutable_config()->set_visibility_timeout_ms(
        absl::ToInt64Milliseconds(spec.lease));
    v1::CreateQueueResponse response;
    grpc::ClientContext context;
    SetDeadline(context, absl::ZeroDuration());
    return FromGrpc(stub->CreateQueue(&context, request, &response),
                    "CreateQueue");
  }

  absl::StatusOr<std::unique_ptr<PeerClient>> Connect() override {
    ChannelOptions options;
    options.dedicated_connection = true;
    std::shared_ptr<grpc::Channel> channel = CreateChannel(address_, options);
    if (!channel->WaitForConnected(
            absl::ToChronoTime(absl::Now() + kCallTimeout))) {
      return absl::UnavailableError(
          absl::StrCat("cannot connect to Weir at ", address_));
    }
    return std::make_unique<WeirClient>(v1::Weir::NewStub(channel), queue_);
  }

  int64_t Backlog() override {
    auto stub = v1::Weir::NewStub(CreateChannel(address_));
    v1::GetQueueStatsRequest request;
    request.set_name(queue_);
    v1::QueueStats stats;
    grpc::ClientContext context;
    SetDeadline(context, absl::ZeroDuration());
    if (!stub->GetQueueStats(&context, request, &stats).ok()) return -1;
    return stats.ready() + stats.in_flight() + stats.delayed();
  }

 private:
  const std::string address_;
  std::string queue_;
};

}  // namespace

std::unique_ptr<Peer> MakeWeirPeer(const std::string& address) {
  return std::make_unique<WeirPeer>(address);
}

}  // namespace loadgen
}  // namespace weir
