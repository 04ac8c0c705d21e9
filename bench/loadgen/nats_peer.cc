// NATS JetStream through the NATS C client (libnats): a work-queue stream on
// file storage, js_Publish (js_PublishAsync plus js_PublishAsyncComplete for
// a batch), and one durable pull consumer shared by every consumer thread:
// natsSubscription_Fetch to receive, natsMsg_Ack plus a flush to delete, and
// the consumer's AckWait as the visibility timeout.

#include <nats/nats.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "bench/loadgen/peer.h"

namespace weir {
namespace loadgen {
namespace {

constexpr char kDurable[] = "bench-consumer";
constexpr int64_t kApiTimeoutMs = 10'000;

absl::Status FromNats(natsStatus status, absl::string_view what,
                      jsErrCode code = static_cast<jsErrCode>(0)) {
  if (status == NATS_OK) return absl::OkStatus();
  return absl::InternalError(
      absl::StrCat(what, ": ", natsStatus_GetText(status),
                   code != 0 ? " (JetStream error " : "",
                   code != 0 ? absl::StrCat(code) : "", code != 0 ? ")" : ""));
}

// A connection and its JetStream context.
struct Session {
  ~Session() {
    if (js != nullptr) jsCtx_Destroy(js);
    if (nc != nullptr) natsConnection_Destroy(nc);
  }
  natsConnection* nc = nullptr;
  jsCtx* js = nullptr;
};

void OnPublishError(jsCtx*, jsPubAckErr*, void* closure) {
  static_cast<std::atomic<int64_t>*>(closure)->fetch_add(1);
}

absl::StatusOr<std::unique_ptr<Session>> Open(const std::string& address,
                                              std::atomic<int64_t>* errors) {
  auto session = std::make_unique<Session>();
  const std::string url = absl::StrCat("nats://", address);
  absl::Status status = FromNats(
      natsConnection_ConnectTo(&session->nc, url.c_str()), "connect to NATS");
  if (!status.ok()) return status;
  jsOptions options;
  jsOptions_Init(&options);
  options.Wait = kApiTimeoutMs;
  options.PublishAsync.MaxPending = 4096;
  if (errors != nullptr) {
    options.PublishAsync.ErrHandler = OnPublishError;
    options.PublishAsync.ErrHandlerClosure = errors;
  }
  status =
      FromNats(natsConnection_JetStream(&session->js, session->nc, &options),
               "JetStream context");
  if (!status.ok()) return status;
  return session;
}

class NatsClient : public PeerClient {
 public:
  NatsClient(std::unique_ptr<Session> session, std::string subject,
             std::unique_ptr<std::atomic<int64_t>> publish_errors)
      : session_(std::move(session)),
        subject_(std::move(subject)),
        publish_errors_(std::move(publish_errors)) {}

  ~NatsClient() override {
    DropHeld();
    if (sub_ != nullptr) natsSubscription_Destroy(sub_);
  }

  absl::Status Send(const std::vector<std::string>& bodies) override {
    jsErrCode code = static_cast<jsErrCode>(0);
    if (bodies.size() == 1) {
      jsPubAck* ack = nullptr;
      natsStatus s =
          js_Publish(&ack, session_->js, subject_.c_str(), bodies[0].data(),
                     static_cast<int>(bodies[0].size()), nullptr, &code);
      if (ack != nullptr) jsPubAck_Destroy(ack);
      return FromNats(s, "js_Publish", code);
    }
    for (const std::string& body : bodies) {
      absl::Status status =
          FromNats(js_PublishAsync(session_->js, subject_.c_str(), body.data(),
                                   static_cast<int>(body.size()), nullptr),
                   "js_PublishAsync");
      if (!status.ok()) return status;
    }
    jsPubOptions options;
    jsPubOptions_Init(&options);
    options.MaxWait = kApiTimeoutMs;
    absl::Status status = FromNats(
        js_PublishAsyncComplete(session_->js, &options), "js_PublishAsync");
    if (status.ok() && publish_errors_->exchange(0) != 0) {
      return absl::InternalError("js_PublishAsync: a publish was refused");
    }
    return status;
  }

  absl::Status Receive(int max, absl::Duration wait,
                       std::vector<Delivery>* out) override {
    out->clear();
    DropHeld();
    if (sub_ == nullptr) {
      jsSubOptions options;
      jsSubOptions_Init(&options);
      options.Stream = subject_.c_str();
      options.Consumer = kDurable;
      jsErrCode code = static_cast<jsErrCode>(0);
      absl::Status status =
          FromNats(js_PullSubscribe(&sub_, session_->js, subject_.c_str(),
                                    kDurable, nullptr, &options, &code),
                   "js_PullSubscribe", code);
      if (!status.ok()) return status;
    }
    const int64_t wait_ms =
        std::max<int64_t>(1, absl::ToInt64Milliseconds(wait));
    // Deliveries of an earlier pull request that came after its fetch had
    // returned wait in the subscription. libnats 3.4's natsSubscription_Fetch
    // takes those first, then asks the server for the rest and stops only at
    // `batch` minus what it took: past the end of its array of `batch`
    // messages (a heap overflow) once it took more than half. A fetch of one
    // message cannot overrun, so waiting deliveries are taken one fetch
    // each, and a batch is fetched only when none wait. (Deliveries that
    // arrive between the check and that fetch could still start the faulty
    // path, but overrun only if more than half a batch comes in that
    // instant.)
    int pending = 0;
    if (absl::Status status = FromNats(
            natsSubscription_GetPending(sub_, &pending, nullptr), "pending");
        !status.ok()) {
      return status;
    }
    if (pending == 0) return Fetch(max, wait_ms, out);
    for (int i = 0; i < std::min(pending, max); ++i) {
      const size_t before = out->size();
      // Waits (up to `wait`) only while it has nothing to return.
      absl::Status status = Fetch(1, out->empty() ? wait_ms : 1, out);
      // What waited was a status message, so this fetch went to the
      // server, and no message came: return what there is.
      if (!status.ok() || out->size() == before) return status;
    }
    return absl::OkStatus();
  }

  absl::Status Delete(const std::vector<const Delivery*>& done) override {
    if (absl::Status s = Ack(done); !s.ok()) return s;
    // The acks are plain publishes; a flush (PING/PONG) returns once the
    // server has read them.
    return FromNats(natsConnection_FlushTimeout(session_->nc, kApiTimeoutMs),
                    "flush");
  }

  // The acks go out ahead of the fetch's pull request on the same
  // connection, so the server reads them first: no flush of their own.
  absl::Status DeleteAndReceive(const std::vector<const Delivery*>& done,
                                int max, absl::Duration wait,
                                std::vector<Delivery>* out) override {
    if (absl::Status s = Ack(done); !s.ok()) return s;
    return Receive(max, wait, out);
  }

 private:
  // One natsSubscription_Fetch of up to `batch` messages, appended to `out`
  // and held until they are acked or the next Receive. A fetch that times
  // out adds nothing.
  absl::Status Fetch(int batch, int64_t wait_ms, std::vector<Delivery>* out) {
    natsMsgList list{nullptr, 0};
    jsErrCode code = static_cast<jsErrCode>(0);
    const natsStatus s =
        natsSubscription_Fetch(&list, sub_, batch, wait_ms, &code);
    if (s == NATS_TIMEOUT) return absl::OkStatus();
    if (s != NATS_OK) return FromNats(s, "natsSubscription_Fetch", code);
    for (int i = 0; i < list.Count; ++i) {
      natsMsg* msg = list.Msgs[i];
      list.Msgs[i] = nullptr;
      out->push_back(Delivery{
          std::string(natsMsg_GetData(msg), natsMsg_GetDataLength(msg)),
          absl::StrCat(held_.size())});
      held_.push_back(msg);
    }
    natsMsgList_Destroy(&list);
    return absl::OkStatus();
  }

  absl::Status Ack(const std::vector<const Delivery*>& done) {
    for (const Delivery* delivery : done) {
      size_t index = 0;
      if (!absl::SimpleAtoi(delivery->handle, &index) ||
          index >= held_.size() || held_[index] == nullptr) {
        return absl::InvalidArgumentError("unknown delivery");
      }
      absl::Status status = FromNats(natsMsg_Ack(held_[index], nullptr), "Ack");
      if (!status.ok()) return status;
    }
    return absl::OkStatus();
  }

  // Messages not acked stay with the consumer until their AckWait lapses.
  void DropHeld() {
    for (natsMsg* msg : held_) {
      if (msg != nullptr) natsMsg_Destroy(msg);
    }
    held_.clear();
  }

  std::unique_ptr<Session> session_;
  const std::string subject_;
  std::unique_ptr<std::atomic<int64_t>> publish_errors_;
  natsSubscription* sub_ = nullptr;
  std::vector<natsMsg*> held_;
};

class NatsPeer : public Peer {
 public:
  explicit NatsPeer(std::string address) : address_(std::move(address)) {}

  absl::Status Setup(const QueueSpec& spec) override {
    spec_ = spec;
    absl::StatusOr<std::unique_ptr<Session>> session = Open(address_, nullptr);
    if (!session.ok()) return session.status();
    const char* subjects[] = {spec.name.c_str()};
    jsStreamConfig stream;
    jsStreamConfig_Init(&stream);
    stream.Name = spec.name.c_str();
    stream.Subjects = subjects;
    stream.SubjectsLen = 1;
    stream.Retention = js_WorkQueuePolicy;
    stream.Storage = js_FileStorage;
    jsStreamInfo* stream_info = nullptr;
    jsErrCode code = static_cast<jsErrCode>(0);
    absl::Status status = FromNats(
        js_AddStream(&stream_info, (*session)->js, &stream, nullptr, &code),
        "js_AddStream", code);
    if (stream_info != nullptr) jsStreamInfo_Destroy(stream_info);
    if (!status.ok()) return status;

    jsConsumerConfig consumer;
    jsConsumerConfig_Init(&consumer);
    consumer.Durable = kDurable;
    consumer.AckPolicy = js_AckExplicit;
    consumer.AckWait = absl::ToInt64Nanoseconds(spec.lease);
    // Unbounded deliveries in flight, as for the other systems (the default
    // of 1,000 would cap a deep work queue).
    consumer.MaxAckPending = -1;
    jsConsumerInfo* consumer_info = nullptr;
    status =
        FromNats(js_AddConsumer(&consumer_info, (*session)->js,
                                spec.name.c_str(), &consumer, nullptr, &code),
                 "js_AddConsumer", code);
    if (consumer_info != nullptr) jsConsumerInfo_Destroy(consumer_info);
    return status;
  }

  absl::StatusOr<std::unique_ptr<PeerClient>> Connect() override {
    auto errors = std::make_unique<std::atomic<int64_t>>(0);
    absl::StatusOr<std::unique_ptr<Session>> session =
        Open(address_, errors.get());
    if (!session.ok()) return session.status();
    return std::make_unique<NatsClient>(*std::move(session), spec_.name,
                                        std::move(errors));
  }

  int64_t Backlog() override {
    absl::StatusOr<std::unique_ptr<Session>> session = Open(address_, nullptr);
    if (!session.ok()) return -1;
    jsStreamInfo* info = nullptr;
    if (js_GetStreamInfo(&info, (*session)->js, spec_.name.c_str(), nullptr,
                         nullptr) != NATS_OK) {
      return -1;
    }
    const int64_t messages = static_cast<int64_t>(info->State.Msgs);
    jsStreamInfo_Destroy(info);
    return messages;
  }

 private:
  const std::string address_;
  QueueSpec spec_;
};

}  // namespace

std::unique_ptr<Peer> MakeNatsPeer(const std::string& address) {
  return std::make_unique<NatsPeer>(address);
}

}  // namespace loadgen
}  // namespace weir
