// RabbitMQ over AMQP 0-9-1 with librabbitmq (rabbitmq-c): a durable queue
// (quorum, or classic for the relaxed tier), persistent messages published
// with publisher confirms, and consumers on basic.consume with manual acks
// and a prefetch of the receive batch.
//
// What does not match the other systems, and is stated in the report:
// - An AMQP ack (Delete) gets no reply: it is written to the connection, and
//   the broker applies it on its own time.
// - RabbitMQ has no per-message visibility timeout. A delivery that is never
//   acked comes back only when its channel closes, so the redelivery
//   workload does not apply (Peer::LeasesLapse is false).
// - Backlog counts the queue's ready messages; deliveries prefetched by a
//   consumer and not yet acked are not among them.

#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "bench/loadgen/peer.h"

namespace weir {
namespace loadgen {
namespace {

constexpr amqp_channel_t kChannel = 1;

// What the broker said in `method`: the reason of a channel or connection
// close, or which method it sent.
std::string MethodText(const amqp_method_t& method) {
  if (method.id != AMQP_CHANNEL_CLOSE_METHOD &&
      method.id != AMQP_CONNECTION_CLOSE_METHOD) {
    return absl::StrCat("broker sent method ", method.id);
  }
  // Both close methods start with reply_code and reply_text.
  const auto* close = static_cast<const amqp_channel_close_t*>(method.decoded);
  return absl::StrCat(
      "broker closed: ", close->reply_code, " ",
      std::string(static_cast<const char*>(close->reply_text.bytes),
                  close->reply_text.len));
}

absl::Status Check(const amqp_rpc_reply_t& reply, absl::string_view what) {
  std::string text;
  switch (reply.reply_type) {
    case AMQP_RESPONSE_NORMAL:
      return absl::OkStatus();
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
      text = amqp_error_string2(reply.library_error);
      break;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
      text = MethodText(reply.reply);
      break;
    default:
      text = "no reply";
  }
  return absl::UnavailableError(absl::StrCat("rabbitmq ", what, ": ", text));
}

absl::Status CheckCode(int code, absl::string_view what) {
  if (code == AMQP_STATUS_OK) return absl::OkStatus();
  return absl::UnavailableError(
      absl::StrCat("rabbitmq ", what, ": ", amqp_error_string2(code)));
}

amqp_bytes_t Bytes(const std::string& s) {
  return amqp_bytes_t{s.size(), const_cast<char*>(s.data())};
}

// One AMQP connection with channel 1 open. Not thread-safe.
class Connection {
 public:
  Connection() : state_(amqp_new_connection()) {}
  ~Connection() {
    if (open_) {
      amqp_channel_close(state_, kChannel, AMQP_REPLY_SUCCESS);
      amqp_connection_close(state_, AMQP_REPLY_SUCCESS);
    }
    amqp_destroy_connection(state_);
  }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  absl::Status Open(const std::string& address) {
    std::pair<std::string, std::string> host_port =
        absl::StrSplit(address, absl::MaxSplits(':', 1));
    int port = 0;
    if (!absl::SimpleAtoi(host_port.second, &port)) {
      return absl::InvalidArgumentError(
          absl::StrCat("not host:port: \"", address, "\""));
    }
    amqp_socket_t* socket = amqp_tcp_socket_new(state_);
    if (socket == nullptr) {
      return absl::ResourceExhaustedError("rabbitmq: no socket");
    }
    if (int rc = amqp_socket_open(socket, host_port.first.c_str(), port);
        rc != AMQP_STATUS_OK) {
      return absl::UnavailableError(
          absl::StrCat("cannot connect to rabbitmq at ", address, ": ",
                       amqp_error_string2(rc)));
    }
    int one = 1;
    setsockopt(amqp_socket_get_sockfd(socket), IPPROTO_TCP, TCP_NODELAY, &one,
               sizeof(one));
    absl::Status status = Check(
        amqp_login(state_, "/", /*channel_max=*/0, /*frame_max=*/131072,
                   /*heartbeat=*/0, AMQP_SASL_METHOD_PLAIN, "guest", "guest"),
        "login");
    if (!status.ok()) return status;
    amqp_channel_open(state_, kChannel);
    status = Check(amqp_get_rpc_reply(state_), "channel.open");
    open_ = status.ok();
    return status;
  }

  amqp_connection_state_t state() { return state_; }

 private:
  amqp_connection_state_t state_;
  bool open_ = false;
};

class RabbitmqClient : public PeerClient {
 public:
  RabbitmqClient(std::unique_ptr<Connection> connection, std::string queue)
      : connection_(std::move(connection)), queue_(std::move(queue)) {}

  absl::Status Send(const std::vector<std::string>& bodies) override {
    amqp_connection_state_t c = connection_->state();
    if (!confirming_) {
      amqp_confirm_select(c, kChannel);
      absl::Status status = Check(amqp_get_rpc_reply(c), "confirm.select");
      if (!status.ok()) return status;
      confirming_ = true;
    }
    amqp_basic_properties_t props;
    props._flags = AMQP_BASIC_DELIVERY_MODE_FLAG;
    props.delivery_mode = 2;  // persistent
    const uint64_t first = next_tag_;
    for (const std::string& body : bodies) {
      absl::Status status =
          CheckCode(amqp_basic_publish(
                        c, kChannel, amqp_empty_bytes, Bytes(queue_),
                        /*mandatory=*/0, /*immediate=*/0, &props, Bytes(body)),
                    "basic.publish");
      if (!status.ok()) return status;
      ++next_tag_;
    }
    // Confirms may cover one tag or every tag up to one ("multiple"), and
    // need not come in order.
    std::vector<bool> confirmed(bodies.size(), false);
    size_t left = bodies.size();
    while (left > 0) {
      amqp_frame_t frame;
      absl::Status status =
          CheckCode(amqp_simple_wait_frame(c, &frame), "waiting for a confirm");
      if (!status.ok()) return status;
      if (frame.frame_type != AMQP_FRAME_METHOD) continue;
      const amqp_method_number_t id = frame.payload.method.id;
      if (id == AMQP_BASIC_NACK_METHOD) {
        return absl::InternalError("rabbitmq: the broker nacked a publish");
      }
      if (id == AMQP_CHANNEL_CLOSE_METHOD ||
          id == AMQP_CONNECTION_CLOSE_METHOD) {
        return absl::UnavailableError(absl::StrCat(
            "rabbitmq publish: ", MethodText(frame.payload.method)));
      }
      if (id != AMQP_BASIC_ACK_METHOD) continue;
      const auto* ack =
          static_cast<const amqp_basic_ack_t*>(frame.payload.method.decoded);
      const uint64_t from = ack->multiple ? first : ack->delivery_tag;
      for (uint64_t tag = from; tag <= ack->delivery_tag; ++tag) {
        if (tag < first || tag >= next_tag_) continue;
        if (!confirmed[tag - first]) {
          confirmed[tag - first] = true;
          --left;
        }
      }
    }
    return absl::OkStatus();
  }

  absl::Status Receive(int max, absl::Duration wait,
                       std::vector<Delivery>* out) override {
    out->clear();
    amqp_connection_state_t c = connection_->state();
    if (!consuming_) {
      absl::Status status = StartConsuming(max);
      if (!status.ok()) return status;
    }
    timeval timeout = ToTimeval(wait);
    while (static_cast<int>(out->size()) < max) {
      amqp_maybe_release_buffers(c);
      amqp_envelope_t envelope;
      const amqp_rpc_reply_t reply =
          amqp_consume_message(c, &envelope, &timeout, 0);
      if (reply.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
          reply.library_error == AMQP_STATUS_TIMEOUT) {
        break;
      }
      if (reply.reply_type != AMQP_RESPONSE_NORMAL) {
        return Check(reply, "basic.consume");
      }
      out->push_back(Delivery{
          std::string(static_cast<const char*>(envelope.message.body.bytes),
                      envelope.message.body.len),
          absl::StrCat(envelope.delivery_tag)});
      amqp_destroy_envelope(&envelope);
      // The rest of the batch: only what has already arrived.
      timeout = timeval{0, 0};
    }
    return absl::OkStatus();
  }

  absl::Status Delete(const std::vector<const Delivery*>& done) override {
    amqp_connection_state_t c = connection_->state();
    for (const Delivery* delivery : done) {
      uint64_t tag = 0;
      if (!absl::SimpleAtoi(delivery->handle, &tag)) {
        return absl::InvalidArgumentError("not a delivery tag");
      }
      absl::Status status = CheckCode(
          amqp_basic_ack(c, kChannel, tag, /*multiple=*/0), "basic.ack");
      if (!status.ok()) return status;
    }
    return absl::OkStatus();
  }

 private:
  static timeval ToTimeval(absl::Duration d) {
    const int64_t us = absl::ToInt64Microseconds(d);
    return timeval{static_cast<time_t>(us / 1000000),
                   static_cast<suseconds_t>(us % 1000000)};
  }

  // The broker pushes up to `prefetch` unacked deliveries to this consumer.
  absl::Status StartConsuming(int prefetch) {
    amqp_connection_state_t c = connection_->state();
    amqp_basic_qos(
        c, kChannel, /*prefetch_size=*/0,
        static_cast<uint16_t>(std::max(1, std::min(prefetch, 65535))),
        /*global=*/0);
    absl::Status status = Check(amqp_get_rpc_reply(c), "basic.qos");
    if (!status.ok()) return status;
    amqp_basic_consume(c, kChannel, Bytes(queue_), amqp_empty_bytes,
                       /*no_local=*/0, /*no_ack=*/0, /*exclusive=*/0,
                       amqp_empty_table);
    status = Check(amqp_get_rpc_reply(c), "basic.consume");
    consuming_ = status.ok();
    return status;
  }

  std::unique_ptr<Connection> connection_;
  const std::string queue_;
  bool confirming_ = false;
  bool consuming_ = false;
  // The delivery tag the broker gives the next publish (confirm mode
  // numbers a channel's publishes from 1).
  uint64_t next_tag_ = 1;
};

class RabbitmqPeer : public Peer {
 public:
  explicit RabbitmqPeer(std::string address) : address_(std::move(address)) {}

  absl::Status Setup(const QueueSpec& spec) override {
    spec_ = spec;
    absl::StatusOr<std::unique_ptr<Connection>> connection = Open();
    if (!connection.ok()) return connection.status();
    amqp_connection_state_t c = (*connection)->state();
    amqp_table_entry_t type;
    type.key = amqp_cstring_bytes("x-queue-type");
    type.value.kind = AMQP_FIELD_KIND_UTF8;
    type.value.value.bytes = Bytes(spec_.queue_type);
    amqp_table_t arguments{1, &type};
    amqp_queue_declare(c, kChannel, Bytes(spec_.name), /*passive=*/0,
                       /*durable=*/1, /*exclusive=*/0, /*auto_delete=*/0,
                       arguments);
    return Check(amqp_get_rpc_reply(c), "queue.declare");
  }

  absl::StatusOr<std::unique_ptr<PeerClient>> Connect() override {
    absl::StatusOr<std::unique_ptr<Connection>> connection = Open();
    if (!connection.ok()) return connection.status();
    return std::make_unique<RabbitmqClient>(*std::move(connection), spec_.name);
  }

  int64_t Backlog() override {
    absl::StatusOr<std::unique_ptr<Connection>> connection = Open();
    if (!connection.ok()) return -1;
    amqp_connection_state_t c = (*connection)->state();
    amqp_queue_declare_ok_t* ok = amqp_queue_declare(
        c, kChannel, Bytes(spec_.name), /*passive=*/1, /*durable=*/0,
        /*exclusive=*/0, /*auto_delete=*/0, amqp_empty_table);
    if (ok == nullptr) return -1;
    return ok->message_count;
  }

  bool LeasesLapse() const override { return false; }

 private:
  absl::StatusOr<std::unique_ptr<Connection>> Open() {
    auto connection = std::make_unique<Connection>();
    absl::Status status = connection->Open(address_);
    if (!status.ok()) return status;
    return connection;
  }

  const std::string address_;
  QueueSpec spec_;
};

}  // namespace

std::unique_ptr<Peer> MakeRabbitmqPeer(const std::string& address) {
  return std::make_unique<RabbitmqPeer>(address);
}

}  // namespace loadgen
}  // namespace weir
