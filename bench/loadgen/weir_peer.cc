// Weir over gRPC, one channel with a connection of its own per client (or
// clients sharing a few, with --connections): either unary calls (Send, Receive
// long poll, Delete), or streams (a Publish stream for sends, and a Subscribe
// stream that pushes messages against credit and takes deletes on the same
// stream).

#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "bench/loadgen/peer.h"
#include "client/call.h"
#include "client/channel.h"
#include "client/client.h"
#include "client/publisher.h"
#include "grpcpp/grpcpp.h"
#include "weir/v1/weir.grpc.pb.h"

namespace weir {
namespace loadgen {
namespace {

// Deadline of a call beyond its own long-poll wait.
constexpr absl::Duration kCallTimeout = absl::Seconds(30);

// The client library's mapping, with `what` in front of the message.
absl::Status FromGrpc(const grpc::Status& status, absl::string_view what) {
  absl::Status s = FromGrpcStatus(status);
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat(what, ": ", s.message()));
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
    return FromGrpc(CallAndWait(stub_->async(), &v1::Weir::Stub::async::Send,
                                &context, request, &response),
                    "Send");
  }

  absl::Status Receive(int max, absl::Duration wait,
                       std::vector<Delivery>* out) override {
    // Qualified: a subclass's DeleteAndReceive is not this plain Receive.
    return WeirClient::DeleteAndReceive({}, max, wait, out);
  }

  // One Receive call, carrying the deletes (delete_receipt_handles).
  absl::Status DeleteAndReceive(const std::vector<const Delivery*>& done,
                                int max, absl::Duration wait,
                                std::vector<Delivery>* out) override {
    v1::ReceiveRequest request;
    request.set_queue(queue_);
    request.set_max_messages(max);
    request.set_wait_time_ms(absl::ToInt64Milliseconds(wait));
    // As for Delete, a refused entry is not an error here.
    for (const Delivery* delivery : done) {
      request.add_delete_receipt_handles(delivery->handle);
    }
    out->clear();
    v1::ReceiveResponse response;
    grpc::ClientContext context;
    SetDeadline(context, wait);
    absl::Status status =
        FromGrpc(CallAndWait(stub_->async(), &v1::Weir::Stub::async::Receive,
                             &context, request, &response),
                 "Receive");
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
    return FromGrpc(CallAndWait(stub_->async(), &v1::Weir::Stub::async::Delete,
                                &context, request, &response),
                    "Delete");
  }

 protected:
  v1::Weir::Stub& stub() { return *stub_; }
  const std::string& queue() const { return queue_; }

 private:
  std::unique_ptr<v1::Weir::Stub> stub_;
  const std::string queue_;
};

// Sends over one Publish stream (weir::Publisher), one request at a time,
// each answered before the next, like a unary Send. The stream is opened by
// the first Send (a consumer never opens one), and again after it ended.
class WeirPublishClient : public WeirClient {
 public:
  WeirPublishClient(std::shared_ptr<grpc::Channel> channel, std::string queue)
      : WeirClient(v1::Weir::NewStub(channel), std::move(queue)),
        client_(std::move(channel)) {}

  absl::Status Send(const std::vector<std::string>& bodies) override {
    std::vector<v1::SendEntry> entries(bodies.size());
    for (size_t i = 0; i < bodies.size(); ++i) entries[i].set_body(bodies[i]);
    if (publisher_ == nullptr || publisher_->ended()) {
      publisher_ = std::make_unique<Publisher>(client_);
    }
    absl::StatusOr<std::vector<uint64_t>> offsets =
        publisher_->Send(queue(), entries);
    if (offsets.ok()) return absl::OkStatus();
    return absl::Status(offsets.status().code(),
                        absl::StrCat("Publish: ", offsets.status().message()));
  }

 private:
  Client client_;
  std::unique_ptr<Publisher> publisher_;
};

// Consumes through one Subscribe stream. A reader thread takes what the
// server pushes (messages and acks); Receive hands out buffered messages and
// Delete sends the handles with as much new credit as messages were handed
// out since the last grant, then waits for the server's ack.
class WeirSubscribeClient : public WeirPublishClient {
 public:
  WeirSubscribeClient(std::shared_ptr<grpc::Channel> channel, std::string queue)
      : WeirPublishClient(std::move(channel), std::move(queue)) {}

  ~WeirSubscribeClient() override {
    if (stream_ == nullptr) return;
    stream_->WritesDone();
    context_.TryCancel();
    if (reader_.joinable()) {
      reader_.join();
    } else {
      // The first write failed: drain what the server still sends.
      v1::SubscribeResponse ignored;
      while (stream_->Read(&ignored)) {
      }
    }
    stream_->Finish().IgnoreError();
  }

  absl::Status Receive(int max, absl::Duration wait,
                       std::vector<Delivery>* out) override {
    out->clear();
    if (stream_ == nullptr) {
      absl::Status status = Start(max);
      if (!status.ok()) return status;
    } else if (owed_credit_ > 0) {
      v1::SubscribeRequest request;
      request.set_credit(owed_credit_);
      if (!stream_->Write(request)) return Broken();
      owed_credit_ = 0;
    }
    absl::MutexLock lock(&mu_);
    auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return !buffered_.empty() || ended_;
    };
    mu_.AwaitWithTimeout(absl::Condition(&ready), wait);
    while (!buffered_.empty() && static_cast<int>(out->size()) < max) {
      out->push_back(std::move(buffered_.front()));
      buffered_.pop_front();
    }
    owed_credit_ += static_cast<int>(out->size());
    if (out->empty() && ended_) return EndedStatus();
    return absl::OkStatus();
  }

  absl::Status Delete(const std::vector<const Delivery*>& done) override {
    absl::StatusOr<uint64_t> id = SendDeletes(done);
    if (!id.ok()) return id.status();
    return AwaitAck(*id);
  }

  // The deletes go out first; the messages are taken while their ack is on
  // its way, and the call returns once it came.
  absl::Status DeleteAndReceive(const std::vector<const Delivery*>& done,
                                int max, absl::Duration wait,
                                std::vector<Delivery>* out) override {
    if (done.empty()) return Receive(max, wait, out);
    absl::StatusOr<uint64_t> id = SendDeletes(done);
    if (!id.ok()) return id.status();
    const absl::Status received = Receive(max, wait, out);
    const absl::Status acked = AwaitAck(*id);
    return acked.ok() ? received : acked;
  }

 private:
  // Writes one request with the deletes and the credit owed; returns its id.
  absl::StatusOr<uint64_t> SendDeletes(
      const std::vector<const Delivery*>& done) {
    v1::SubscribeRequest request;
    const uint64_t id = ++last_request_id_;
    request.set_request_id(id);
    request.set_credit(owed_credit_);
    owed_credit_ = 0;
    for (const Delivery* delivery : done) {
      request.add_delete_receipt_handles(delivery->handle);
    }
    if (!stream_->Write(request)) return Broken();
    return id;
  }

  // Waits for the server's ack of request `id`.
  absl::Status AwaitAck(uint64_t id) {
    absl::MutexLock lock(&mu_);
    auto acked = [this, id]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return acked_ >= id || ended_;
    };
    if (!mu_.AwaitWithTimeout(absl::Condition(&acked), kCallTimeout)) {
      return absl::DeadlineExceededError("Subscribe: no ack for a delete");
    }
    if (acked_ < id) return EndedStatus();
    return absl::OkStatus();
  }

  absl::Status Start(int max) {
    // Enough credit for two batches, so the next one is on its way while
    // this one is handled.
    const int window = std::max(16, 2 * max);
    stream_ = stub().Subscribe(&context_);
    v1::SubscribeRequest request;
    request.mutable_start()->set_queue(queue());
    request.set_credit(window);
    if (!stream_->Write(request)) return Broken();
    reader_ = std::thread([this] { ReadLoop(); });
    return absl::OkStatus();
  }

  void ReadLoop() {
    v1::SubscribeResponse response;
    while (stream_->Read(&response)) {
      absl::MutexLock lock(&mu_);
      for (v1::Message& message : *response.mutable_messages()) {
        buffered_.push_back(
            Delivery{std::move(*message.mutable_body()),
                     std::move(*message.mutable_receipt_handle())});
      }
      if (response.has_ack()) {
        acked_ = std::max(acked_, response.ack().request_id());
      }
    }
    absl::MutexLock lock(&mu_);
    ended_ = true;
  }

  absl::Status Broken() {
    return absl::UnavailableError("Subscribe: the stream broke");
  }
  absl::Status EndedStatus() {
    return absl::UnavailableError("Subscribe: the server ended the stream");
  }

  grpc::ClientContext context_;
  std::unique_ptr<
      grpc::ClientReaderWriter<v1::SubscribeRequest, v1::SubscribeResponse>>
      stream_;
  std::thread reader_;
  // Written by the consumer thread alone.
  int owed_credit_ = 0;
  uint64_t last_request_id_ = 0;

  absl::Mutex mu_;
  std::deque<Delivery> buffered_ ABSL_GUARDED_BY(mu_);
  uint64_t acked_ ABSL_GUARDED_BY(mu_) = 0;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
};

class WeirPeer : public Peer {
 public:
  WeirPeer(std::string address, bool streams, int connections)
      : address_(std::move(address)),
        streams_(streams),
        connections_(connections) {}

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
    std::shared_ptr<grpc::Channel> channel;
    if (connections_ > 0 &&
        static_cast<int>(channels_.size()) == connections_) {
      channel = channels_[clients_ % connections_];
    } else {
      ChannelOptions options;
      options.dedicated_connection = true;
      channel = CreateChannel(address_, options);
      if (!channel->WaitForConnected(
              absl::ToChronoTime(absl::Now() + kCallTimeout))) {
        return absl::UnavailableError(
            absl::StrCat("cannot connect to Weir at ", address_));
      }
      if (connections_ > 0) channels_.push_back(channel);
    }
    ++clients_;
    if (streams_) {
      return std::make_unique<WeirSubscribeClient>(std::move(channel), queue_);
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
  const bool streams_;
  const int connections_;
  std::string queue_;
  // With connections_ > 0: the channels clients share, and how many clients
  // have connected. Connect is called from one thread.
  std::vector<std::shared_ptr<grpc::Channel>> channels_;
  int clients_ = 0;
};

}  // namespace

std::unique_ptr<Peer> MakeWeirPeer(const std::string& address, bool streams,
                                   int connections) {
  return std::make_unique<WeirPeer>(address, streams, connections);
}

}  // namespace loadgen
}  // namespace weir
