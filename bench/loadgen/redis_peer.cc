// Redis Streams through hiredis: XADD (pipelined for a batch), XREADGROUP
// with BLOCK for the long poll, XACK plus XDEL (one pipeline) to delete, and
// XAUTOCLAIM to take over entries whose consumer has held them for longer
// than the lease, which is how a Redis work queue redelivers. With
// DeleteAndReceive the XACK and XDEL go in one pipeline with the read.

#include <hiredis/hiredis.h>

#include <atomic>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "bench/loadgen/peer.h"

namespace weir {
namespace loadgen {
namespace {

constexpr char kGroup[] = "bench-group";
// How often a consumer looks for entries whose lease lapsed.
constexpr absl::Duration kClaimInterval = absl::Milliseconds(250);

struct ReplyDeleter {
  void operator()(redisReply* reply) const { freeReplyObject(reply); }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

struct ContextDeleter {
  void operator()(redisContext* context) const { redisFree(context); }
};
using Context = std::unique_ptr<redisContext, ContextDeleter>;

absl::StatusOr<Context> ConnectTo(const std::string& address) {
  std::pair<std::string, std::string> host_port =
      absl::StrSplit(address, absl::MaxSplits(':', 1));
  int port = 0;
  if (!absl::SimpleAtoi(host_port.second, &port)) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad Redis address \"", address, "\""));
  }
  timeval timeout{10, 0};
  Context context(
      redisConnectWithTimeout(host_port.first.c_str(), port, timeout));
  if (context == nullptr || context->err != 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot connect to Redis at ", address, ": ",
                     context == nullptr ? "out of memory" : context->errstr));
  }
  return context;
}

absl::Status CheckReply(redisContext* context, redisReply* reply,
                        absl::string_view what) {
  if (reply == nullptr) {
    return absl::UnavailableError(absl::StrCat(what, ": ", context->errstr));
  }
  if (reply->type == REDIS_REPLY_ERROR) {
    return absl::InternalError(absl::StrCat(what, ": ", reply->str));
  }
  return absl::OkStatus();
}

void Append(redisContext* context, const std::vector<std::string>& args) {
  std::vector<const char*> argv;
  std::vector<size_t> lengths;
  for (const std::string& arg : args) {
    argv.push_back(arg.data());
    lengths.push_back(arg.size());
  }
  redisAppendCommandArgv(context, static_cast<int>(args.size()), argv.data(),
                         lengths.data());
}

// Reads the next reply (sending what was appended first) and checks it.
absl::StatusOr<Reply> ReadReply(redisContext* context, absl::string_view what) {
  void* raw = nullptr;
  if (redisGetReply(context, &raw) != REDIS_OK) {
    return absl::UnavailableError(absl::StrCat(what, ": ", context->errstr));
  }
  Reply reply(static_cast<redisReply*>(raw));
  absl::Status status = CheckReply(context, reply.get(), what);
  if (!status.ok()) return status;
  return reply;
}

absl::StatusOr<Reply> Command(redisContext* context,
                              const std::vector<std::string>& args,
                              absl::string_view what) {
  Append(context, args);
  return ReadReply(context, what);
}

// Reads `n` replies; the first error, once all are read.
absl::Status ReadReplies(redisContext* context, size_t n,
                         absl::string_view what) {
  absl::Status first;
  for (size_t i = 0; i < n; ++i) {
    absl::Status status = ReadReply(context, what).status();
    if (first.ok() && !status.ok()) first = status;
  }
  return first;
}

// Appends the entries of a stream reply ([[id, [field, value, ...]], ...])
// to `out`; entries without fields (deleted meanwhile) are skipped.
void AppendEntries(const redisReply* entries, std::vector<Delivery>* out) {
  if (entries == nullptr || entries->type != REDIS_REPLY_ARRAY) return;
  for (size_t i = 0; i < entries->elements; ++i) {
    const redisReply* entry = entries->element[i];
    if (entry->type != REDIS_REPLY_ARRAY || entry->elements < 2) continue;
    const redisReply* fields = entry->element[1];
    if (fields->type != REDIS_REPLY_ARRAY || fields->elements < 2) continue;
    out->push_back(
        Delivery{std::string(fields->element[1]->str, fields->element[1]->len),
                 std::string(entry->element[0]->str, entry->element[0]->len)});
  }
}

std::atomic<int> next_consumer{0};

class RedisClient : public PeerClient {
 public:
  RedisClient(Context context, const QueueSpec& spec)
      : context_(std::move(context)),
        stream_(spec.name),
        consumer_(absl::StrCat("consumer-", next_consumer.fetch_add(1))),
        min_idle_ms_(absl::StrCat(absl::ToInt64Milliseconds(spec.lease))) {}

  absl::Status Send(const std::vector<std::string>& bodies) override {
    for (const std::string& body : bodies) {
      Append(context_.get(), {"XADD", stream_, "*", "b", body});
    }
    return ReadReplies(context_.get(), bodies.size(), "XADD");
  }

  absl::Status DeleteAndReceive(const std::vector<const Delivery*>& done,
                                int max, absl::Duration wait,
                                std::vector<Delivery>* out) override {
    // Sent with the read's command, answered before it.
    pending_acks_ = AppendAcks(done);
    return Receive(max, wait, out);
  }

  absl::Status Receive(int max, absl::Duration wait,
                       std::vector<Delivery>* out) override {
    out->clear();
    const absl::Time now = absl::Now();
    if (now - last_claim_ >= kClaimInterval) {
      last_claim_ = now;
      absl::StatusOr<Reply> claimed =
          Call({"XAUTOCLAIM", stream_, kGroup, consumer_, min_idle_ms_,
                claim_cursor_, "COUNT", absl::StrCat(max)},
               "XAUTOCLAIM");
      if (!claimed.ok()) return claimed.status();
      const redisReply* reply = claimed->get();
      if (reply->type == REDIS_REPLY_ARRAY && reply->elements >= 2) {
        claim_cursor_.assign(reply->element[0]->str, reply->element[0]->len);
        AppendEntries(reply->element[1], out);
      }
      if (!out->empty()) return absl::OkStatus();
    }
    const int64_t block_ms =
        std::max<int64_t>(1, absl::ToInt64Milliseconds(wait));
    absl::StatusOr<Reply> read = Call(
        {"XREADGROUP", "GROUP", kGroup, consumer_, "COUNT", absl::StrCat(max),
         "BLOCK", absl::StrCat(block_ms), "STREAMS", stream_, ">"},
        "XREADGROUP");
    if (!read.ok()) return read.status();
    const redisReply* reply = read->get();
    if (reply->type != REDIS_REPLY_ARRAY) return absl::OkStatus();  // timeout
    for (size_t i = 0; i < reply->elements; ++i) {
      const redisReply* stream = reply->element[i];
      if (stream->type == REDIS_REPLY_ARRAY && stream->elements >= 2) {
        AppendEntries(stream->element[1], out);
      }
    }
    return absl::OkStatus();
  }

  absl::Status Delete(const std::vector<const Delivery*>& done) override {
    return ReadReplies(context_.get(), AppendAcks(done), "XACK/XDEL");
  }

 private:
  // Appends XACK and XDEL of `done` (none when empty); returns how many
  // commands it appended.
  size_t AppendAcks(const std::vector<const Delivery*>& done) {
    if (done.empty()) return 0;
    std::vector<std::string> ack = {"XACK", stream_, kGroup};
    std::vector<std::string> del = {"XDEL", stream_};
    for (const Delivery* delivery : done) {
      ack.push_back(delivery->handle);
      del.push_back(delivery->handle);
    }
    Append(context_.get(), ack);
    Append(context_.get(), del);
    return 2;
  }

  // Runs one command, after reading the replies of the acks appended
  // before it (one round trip for both).
  absl::StatusOr<Reply> Call(const std::vector<std::string>& args,
                             absl::string_view what) {
    if (pending_acks_ == 0) return Command(context_.get(), args, what);
    Append(context_.get(), args);
    const size_t acks = std::exchange(pending_acks_, 0);
    const absl::Status acked = ReadReplies(context_.get(), acks, "XACK/XDEL");
    absl::StatusOr<Reply> reply = ReadReply(context_.get(), what);
    if (!acked.ok()) return acked;
    return reply;
  }

  Context context_;
  const std::string stream_;
  const std::string consumer_;
  const std::string min_idle_ms_;
  std::string claim_cursor_ = "0-0";
  // Ack commands appended and not yet answered.
  size_t pending_acks_ = 0;
  absl::Time last_claim_ = absl::Now();
};

class RedisPeer : public Peer {
 public:
  explicit RedisPeer(std::string address) : address_(std::move(address)) {}

  absl::Status Setup(const QueueSpec& spec) override {
    spec_ = spec;
    absl::StatusOr<Context> context = ConnectTo(address_);
    if (!context.ok()) return context.status();
    absl::StatusOr<Reply> reply =
        Command(context->get(),
                {"XGROUP", "CREATE", spec.name, kGroup, "$", "MKSTREAM"},
                "XGROUP CREATE");
    if (!reply.ok() &&
        reply.status().message().find("BUSYGROUP") == absl::string_view::npos) {
      return reply.status();
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::unique_ptr<PeerClient>> Connect() override {
    absl::StatusOr<Context> context = ConnectTo(address_);
    if (!context.ok()) return context.status();
    return std::make_unique<RedisClient>(*std::move(context), spec_);
  }

  int64_t Backlog() override {
    absl::StatusOr<Context> context = ConnectTo(address_);
    if (!context.ok()) return -1;
    absl::StatusOr<Reply> reply =
        Command(context->get(), {"XLEN", spec_.name}, "XLEN");
    if (!reply.ok() || (*reply)->type != REDIS_REPLY_INTEGER) return -1;
    return (*reply)->integer;
  }

 private:
  const std::string address_;
  QueueSpec spec_;
};

}  // namespace

std::unique_ptr<Peer> MakeRedisPeer(const std::string& address) {
  return std::make_unique<RedisPeer>(address);
}

}  // namespace loadgen
}  // namespace weir
