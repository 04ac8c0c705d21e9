#include "rpc/service.h"

#include <algorithm>
#include <deque>
#include <limits>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "rpc/tsan_call_edge.h"

namespace weir {
namespace {

namespace pb = ::weir::v1;

int64_t ToUnixMs(absl::Time t) { return absl::ToUnixMillis(t); }

// Zero fields take defaults in the engine, which range-checks everything.
QueueConfig FromProto(const pb::QueueConfig& c) {
  QueueConfig out;
  out.visibility_timeout = absl::Milliseconds(c.visibility_timeout_ms());
  out.max_message_bytes = c.max_message_bytes();
  out.delay = absl::Milliseconds(c.delay_ms());
  out.retention_max_age = absl::Milliseconds(c.retention_max_age_ms());
  out.retention_keep_deleted_for =
      absl::Milliseconds(c.retention_keep_deleted_for_ms());
  out.max_receives = c.max_receives();
  out.dead_letter_queue = c.dead_letter_queue();
  out.dedup_window = absl::Milliseconds(c.dedup_window_ms());
  return out;
}

LogPosition FromProto(const pb::LogPosition& p) {
  switch (p.position_case()) {
    case pb::LogPosition::kLatest:
      return LogPosition::Latest();
    case pb::LogPosition::kOffset:
      return LogPosition::Offset(p.offset());
    case pb::LogPosition::kTimeMs:
      return LogPosition::Time(absl::FromUnixMillis(p.time_ms()));
    default:
      return LogPosition::Earliest();
  }
}

void ToProto(const GroupInfo& g, pb::Group* out) {
  out->set_name(g.name);
  out->set_cursor(g.cursor);
  out->set_delete_floor(g.delete_floor);
  out->set_lag(g.lag);
  out->set_in_flight(g.in_flight);
}

void ToProto(const QueueInfo& info, pb::Queue* out) {
  out->set_name(info.name);
  out->set_create_time_ms(ToUnixMs(info.create_time));
  pb::QueueConfig* c = out->mutable_config();
  c->set_visibility_timeout_ms(
      absl::ToInt64Milliseconds(info.config.visibility_timeout));
  c->set_max_message_bytes(info.config.max_message_bytes);
  c->set_delay_ms(absl::ToInt64Milliseconds(info.config.delay));
  c->set_retention_max_age_ms(
      absl::ToInt64Milliseconds(info.config.retention_max_age));
  c->set_retention_keep_deleted_for_ms(
      absl::ToInt64Milliseconds(info.config.retention_keep_deleted_for));
  c->set_max_receives(info.config.max_receives);
  c->set_dead_letter_queue(info.config.dead_letter_queue);
  c->set_dedup_window_ms(absl::ToInt64Milliseconds(info.config.dedup_window));
}

void ToProto(const ReceivedMessage& m, pb::Message* out) {
  out->set_offset(m.offset);
  out->set_body(m.body);
  for (const auto& [k, v] : m.attributes) (*out->mutable_attributes())[k] = v;
  out->set_enqueue_time_ms(ToUnixMs(m.enqueue_time));
  out->set_receive_count(m.receive_count);
  out->set_receipt_handle(m.receipt_handle);
  out->set_lease_deadline_ms(ToUnixMs(m.lease_deadline));
  out->set_ordering_key(m.ordering_key);
}

void ToProto(const absl::Status& s, pb::EntryResult* out) {
  out->set_code(static_cast<int>(s.code()));
  out->set_message(std::string(s.message()));
}

void ToProto(const std::vector<absl::Status>& results,
             google::protobuf::RepeatedPtrField<pb::EntryResult>* out) {
  for (const absl::Status& s : results) ToProto(s, out->Add());
}

std::vector<SendEntry> FromProto(
    const google::protobuf::RepeatedPtrField<pb::SendEntry>& entries) {
  std::vector<SendEntry> out;
  out.reserve(entries.size());
  for (const pb::SendEntry& e : entries) {
    SendEntry& entry = out.emplace_back();
    entry.body = e.body();
    entry.attributes.assign(e.attributes().begin(), e.attributes().end());
    std::sort(entry.attributes.begin(), entry.attributes.end());
    if (e.has_delay_ms()) entry.delay = absl::Milliseconds(e.delay_ms());
    entry.ordering_key = e.ordering_key();
    entry.dedup_id = e.dedup_id();
  }
  return out;
}

ReceiveOptions FromProto(const pb::ReceiveRequest& req) {
  ReceiveOptions o;
  o.group = req.group();
  o.max_messages = req.max_messages() == 0 ? 1 : req.max_messages();
  if (req.has_visibility_timeout_ms()) {
    o.visibility_timeout = absl::Milliseconds(req.visibility_timeout_ms());
  }
  return o;
}

void ToProto(const std::vector<ReceivedMessage>& messages,
             pb::ReceiveResponse* out) {
  for (const ReceivedMessage& m : messages) ToProto(m, out->add_messages());
}

// Serves one Receive call. Long polls park in the engine; a client that
// cancels (or whose deadline passes) ends the wait at once.
class ReceiveReactor : public grpc::ServerUnaryReactor {
 public:
  ReceiveReactor(grpc::CallbackServerContext* ctx, Engine* engine,
                 const pb::ReceiveRequest* req, pb::ReceiveResponse* resp)
      : call_(ctx->c_call()), state_(std::make_shared<State>()) {
    if (req->wait_time_ms() < 0 || req->wait_time_ms() > 20000) {
      Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          absl::StrCat("wait_time_ms ", req->wait_time_ms(),
                                       " is out of range [0, 20000]")));
      return;
    }
    const ReceiveOptions options = FromProto(*req);
    const absl::Duration wait = absl::Milliseconds(req->wait_time_ms());
    // Only `state` may be used after the engine call: its callback may
    // already have finished the call and destroyed this reactor.
    std::shared_ptr<State> state = state_;
    std::shared_ptr<ReceiveWaiter> waiter;
    if (req->delete_receipt_handles().empty()) {
      waiter = engine->ReceiveAsync(
          req->queue(), options, wait,
          [this, resp](absl::StatusOr<std::vector<ReceivedMessage>> r) {
            if (r.ok()) ToProto(*r, resp);
            Finish(ToGrpcStatus(r.status()));
          });
    } else {
      const std::vector<std::string> receipts(
          req->delete_receipt_handles().begin(),
          req->delete_receipt_handles().end());
      waiter = engine->DeleteAndReceiveAsync(
          req->queue(), receipts, options, wait,
          [this, resp](absl::StatusOr<DeleteAndReceiveResult> r) {
            if (r.ok()) {
              ToProto(r->deletes, resp->mutable_delete_results());
              ToProto(r->messages, resp);
            }
            Finish(ToGrpcStatus(r.status()));
          });
    }
    if (waiter == nullptr) return;
    absl::MutexLock lock(&state->mu);
    state->waiter = std::move(waiter);
    if (state->cancelled) state->waiter->Cancel();
  }

  void OnCancel() override {
    tsan::AcquireCall(call_);
    absl::MutexLock lock(&state_->mu);
    state_->cancelled = true;
    if (state_->waiter != nullptr) state_->waiter->Cancel();
  }

  void OnDone() override {
    tsan::AcquireCall(call_);
    delete this;
  }

 private:
  struct State {
    absl::Mutex mu;
    std::shared_ptr<ReceiveWaiter> waiter ABSL_GUARDED_BY(mu);
    bool cancelled ABSL_GUARDED_BY(mu) = false;
  };
  grpc_call* const call_;  // for tsan::AcquireCall
  std::shared_ptr<State> state_;
};

// Serves one Subscribe stream: a translation between the stream's messages
// and an engine Subscription. Nothing here blocks a gRPC thread: leasing and
// the ops run on engine threads. At most one batch of leased messages is
// buffered (the subscription delivers the next only after DeliveryDone, which
// comes when the last write of the batch completed), and the next request is
// read only after the previous one's ops were acknowledged.
class SubscribeReactor : public grpc::ServerBidiReactor<pb::SubscribeRequest,
                                                        pb::SubscribeResponse> {
 public:
  SubscribeReactor(grpc::CallbackServerContext* ctx, Engine* engine)
      : engine_(engine), call_(ctx->c_call()) {
    {
      // Orders this construction before every later use under mu_ (on
      // gRPC's threads and on engine threads) where ThreadSanitizer can see
      // it: gRPC hands the new reactor to its other threads through its own
      // uninstrumented synchronization.
      absl::MutexLock lock(&mu_);
    }
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    tsan::AcquireCall(call_);
    if (!ok) {
      // The client half-closed (or went away): flush what is queued, end.
      End(grpc::Status::OK);
      return;
    }
    grpc::Status bad = Handle(request_);
    if (!bad.ok()) End(bad);
  }

  void OnWriteDone(bool ok) override {
    tsan::AcquireCall(call_);
    bool batch_done = false;
    bool resume_read = false;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (pending_.front().messages_size() > 0) {
        batch_done = --chunks_in_flight_ == 0;
      }
      pending_.pop_front();
      if (read_paused_ && pending_.size() <= kMaxQueuedResponses &&
          !end_.has_value()) {
        read_paused_ = false;
        resume_read = true;
      }
      if (!ok) {
        EndLocked(grpc::Status(grpc::StatusCode::CANCELLED,
                               "the stream broke while writing"));
      }
    }
    if (resume_read) StartRead(&request_);
    Pump();
    if (batch_done && ok) subscription()->DeliveryDone();
  }

  void OnCancel() override {
    tsan::AcquireCall(call_);
    End(grpc::Status(grpc::StatusCode::CANCELLED, "stream cancelled"));
  }

  void OnDone() override {
    tsan::AcquireCall(call_);
    std::shared_ptr<Subscription> sub;
    {
      absl::MutexLock lock(&mu_);
      sub = subscription_;
    }
    if (sub == nullptr) {
      delete this;
      return;
    }
    // Releases what the stream still held. This reactor goes once no
    // subscription callback can reach it any more (maybe at once, here);
    // `sub` keeps the subscription alive until Close has returned.
    sub->Close([this] { delete this; });
  }

 private:
  // At most this many message bytes in one response (one message may be
  // bigger: it goes alone).
  static constexpr size_t kMaxResponseBytes = 1 << 20;
  // Acks queued beyond this pause reading requests until they are written.
  static constexpr size_t kMaxQueuedResponses = 16;

  Subscription* subscription() {
    absl::MutexLock lock(&mu_);
    return subscription_.get();
  }

  // Acts on one request. A non-OK status ends the stream.
  grpc::Status Handle(const pb::SubscribeRequest& req) {
    Subscription* sub = subscription();
    if (sub == nullptr) {
      if (!req.has_start()) {
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                            "the first request of a stream must carry start");
      }
      SubscribeOptions options;
      options.group = req.start().group();
      if (req.start().has_visibility_timeout_ms()) {
        options.visibility_timeout =
            absl::Milliseconds(req.start().visibility_timeout_ms());
      }
      auto started = engine_->Subscribe(
          req.start().queue(), options,
          [this](absl::StatusOr<std::vector<ReceivedMessage>> r) {
            Deliver(std::move(r));
          });
      if (!started.ok()) return ToGrpcStatus(started.status());
      absl::MutexLock lock(&mu_);
      subscription_ = std::shared_ptr<Subscription>(*std::move(started));
      sub = subscription_.get();
    } else if (req.has_start()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "only the first request of a stream carries start");
    }
    if (req.credit() < 0 || req.credit() > Subscription::kMaxCredit) {
      return grpc::Status(
          grpc::StatusCode::INVALID_ARGUMENT,
          absl::StrCat("credit ", req.credit(), " is out of range [0, ",
                       Subscription::kMaxCredit, "]"));
    }
    if (absl::Status s = sub->AddCredit(req.credit()); !s.ok()) {
      return ToGrpcStatus(s);
    }
    if (req.delete_receipt_handles_size() == 0 && req.extend_size() == 0 &&
        req.release_size() == 0) {
      StartRead(&request_);
      return grpc::Status::OK;
    }
    SubscriptionOps ops;
    ops.deletes.assign(req.delete_receipt_handles().begin(),
                       req.delete_receipt_handles().end());
    for (const pb::VisibilityChange& c : req.extend()) {
      ops.extends.push_back(
          {c.receipt_handle(), absl::Milliseconds(c.visibility_timeout_ms())});
    }
    for (const pb::VisibilityChange& c : req.release()) {
      ops.releases.push_back(
          {c.receipt_handle(), absl::Milliseconds(c.visibility_timeout_ms())});
    }
    const uint64_t id = req.request_id();
    {
      absl::MutexLock lock(&mu_);
      ++applying_;
    }
    sub->Apply(std::move(ops), [this, id](absl::StatusOr<SubscriptionAck> r) {
      if (!r.ok()) {
        {
          absl::MutexLock lock(&mu_);
          --applying_;
        }
        End(ToGrpcStatus(r.status()));
        return;
      }
      bool read = false;
      {
        absl::MutexLock lock(&mu_);
        --applying_;
        // Answered even when the stream is ending (a later request broke
        // the protocol, say): the client learns what took effect.
        pb::SubscribeAck* ack = pending_.emplace_back().mutable_ack();
        ack->set_request_id(id);
        ToProto(r->deletes, ack->mutable_delete_results());
        ToProto(r->extends, ack->mutable_extend_results());
        ToProto(r->releases, ack->mutable_release_results());
        // A client that does not read its acks gets no more requests read.
        read_paused_ = pending_.size() > kMaxQueuedResponses;
        read = !read_paused_ && !end_.has_value();
        // This is an engine thread, not a reaction: until StartRead has
        // returned, the stream must not be finished (its OnDone could come
        // first and free the call under StartRead).
        if (read) read_starting_ = true;
      }
      Pump();
      if (read) {
        StartRead(&request_);
        {
          absl::MutexLock lock(&mu_);
          read_starting_ = false;
        }
        Pump();  // Finishes the stream if it ended meanwhile.
      }
    });
    return grpc::Status::OK;
  }

  // The subscription's callback.
  void Deliver(absl::StatusOr<std::vector<ReceivedMessage>> r) {
    if (!r.ok()) {
      End(ToGrpcStatus(r.status()));
      return;
    }
    {
      absl::MutexLock lock(&mu_);
      // Ending: the subscription releases these when it is closed.
      if (end_.has_value()) return;
      size_t bytes = kMaxResponseBytes;
      for (const ReceivedMessage& m : *r) {
        if (bytes + m.body.size() > kMaxResponseBytes) {
          pending_.emplace_back();
          ++chunks_in_flight_;
          bytes = 0;
        }
        ToProto(m, pending_.back().add_messages());
        bytes += m.body.size();
      }
    }
    Pump();
  }

  // Ends the stream with `status` once every request taken has been
  // answered and those answers written (on a broken stream the writes fail
  // fast). The first end wins.
  void EndLocked(grpc::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (end_.has_value()) return;
    end_ = std::move(status);
    // Drop the messages not on their way yet; the subscription releases
    // those leases as it closes. Acks still go out. The one being written
    // (the front) is not touched: gRPC holds a pointer to it, and erasing
    // at a deque's back moves nothing else.
    auto dropped = std::remove_if(
        pending_.begin() + (writing_ ? 1 : 0), pending_.end(),
        [](const pb::SubscribeResponse& r) { return r.messages_size() > 0; });
    pending_.erase(dropped, pending_.end());
  }

  void End(grpc::Status status) {
    std::shared_ptr<Subscription> sub;
    {
      absl::MutexLock lock(&mu_);
      EndLocked(std::move(status));
      sub = subscription_;
    }
    // Leases nothing more from now on and releases what the stream held,
    // without waiting for OnDone (the client may already have the status).
    if (sub != nullptr) sub->Close(nullptr);
    Pump();
  }

  // Starts the next write, or finishes the stream when it is ending and
  // nothing more will be written. Called without mu_: gRPC may run a
  // reaction (OnWriteDone, OnDone) inline from StartWrite or Finish.
  void Pump() ABSL_LOCKS_EXCLUDED(mu_) {
    pb::SubscribeResponse* next = nullptr;
    std::optional<grpc::Status> finish;
    {
      absl::MutexLock lock(&mu_);
      if (writing_ || finished_) return;
      if (!pending_.empty()) {
        writing_ = true;
        // Stays in place until OnWriteDone pops it: a deque does not move
        // its elements when more are added at the back.
        next = &pending_.front();
      } else if (end_.has_value() && !read_starting_ && applying_ == 0) {
        finished_ = true;
        finish = *end_;
      }
    }
    if (next != nullptr) {
      StartWrite(next);
    } else if (finish.has_value()) {
      Finish(*finish);
    }
  }

  Engine* const engine_;
  grpc_call* const call_;  // for tsan::AcquireCall
  // Written only by gRPC's read (one outstanding at a time).
  pb::SubscribeRequest request_;

  absl::Mutex mu_;
  std::shared_ptr<Subscription> subscription_ ABSL_GUARDED_BY(mu_);
  // Responses to write, in order; the front is being written when writing_.
  // A deque keeps the front in place while more are queued.
  std::deque<pb::SubscribeResponse> pending_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  // Message responses of the current batch not yet written.
  int chunks_in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  std::optional<grpc::Status> end_ ABSL_GUARDED_BY(mu_);
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool read_paused_ ABSL_GUARDED_BY(mu_) = false;
  // An engine thread is between deciding to start a read and StartRead
  // returning; Finish waits for it.
  bool read_starting_ ABSL_GUARDED_BY(mu_) = false;
  // Requests handed to Subscription::Apply and not answered yet; the stream
  // is finished only once each is answered.
  int applying_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace

// Serves one Publish stream: each request read is handed to
// Engine::SendAsync at once, and its response written when the engine
// answers, so a client may keep many requests in flight and they share
// group commits. Nothing here blocks a gRPC thread.
//
// Lifetime: gRPC deletes nothing; OnDone does, unless a thread that is not
// running a reaction (an engine callback, shutdown) still holds a pin, in
// which case the last Unpin does. Finish comes only when no write is in
// progress, no request is being committed and no read is being started, so
// no gRPC operation can start after it.
class PublishReactor
    : public grpc::ServerBidiReactor<pb::PublishRequest, pb::PublishResponse> {
 public:
  // Requests read but not yet answered (being committed, or answered and
  // not yet written) beyond which reading pauses...
  static constexpr size_t kMaxUnanswered = 1024;
  // ...and bytes of requests being committed (one request may be up to the
  // server's 64 MiB message limit) beyond which it pauses too.
  static constexpr size_t kMaxCommittingBytes = size_t{64} << 20;

  PublishReactor(grpc::CallbackServerContext* ctx, Engine* engine,
                 PublishStreams* streams)
      : engine_(engine), streams_(streams), call_(ctx->c_call()) {
    {
      // Orders this construction before later uses on other threads where
      // ThreadSanitizer can see it (as in SubscribeReactor).
      absl::MutexLock lock(&mu_);
    }
    // The first read is started before the stream can be ended by shutdown
    // (it then completes with ok = false).
    StartRead(&request_);
    if (!streams_->Add(this)) Shutdown();
  }

  // Reads nothing more, answers what is being committed, then ends the
  // stream with UNAVAILABLE.
  void Shutdown() {
    Next next;
    {
      absl::MutexLock lock(&mu_);
      EndLocked(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                             "the server is shutting down"));
      DecideLocked(next);
    }
    Do(next);
  }

  // While pinned, OnDone does not delete the reactor; the last Unpin does.
  void Pin() {
    absl::MutexLock lock(&mu_);
    ++pins_;
  }
  void Unpin() {
    bool destroy;
    {
      absl::MutexLock lock(&mu_);
      destroy = --pins_ == 0 && done_;
    }
    if (destroy) delete this;
  }

  void OnReadDone(bool ok) override {
    tsan::AcquireCall(call_);
    if (!ok) {
      // The client half-closed (or the stream broke): answer what is
      // pending, then end.
      Next next;
      {
        absl::MutexLock lock(&mu_);
        read_closed_ = true;
        DecideLocked(next);
      }
      Do(next);
      return;
    }
    const size_t bytes = request_.ByteSizeLong();
    bool take;
    Next ending;
    {
      absl::MutexLock lock(&mu_);
      // Ending: a request read now is not taken (its sender learns from the
      // stream's status that it was not answered).
      take = !end_.has_value();
      if (take) {
        ++committing_;
        committing_bytes_ += bytes;
      } else {
        read_closed_ = true;
        DecideLocked(ending);
      }
    }
    if (!take) {
      Do(ending);
      return;
    }
    const uint64_t id = request_.request_id();
    const std::vector<SendEntry> entries = FromProto(request_.entries());
    engine_->SendAsync(
        request_.queue(), entries,
        [this, id, bytes](absl::StatusOr<std::vector<uint64_t>> r) {
          Committed(id, bytes, std::move(r));
        });
    Next next;
    {
      absl::MutexLock lock(&mu_);
      if (!end_.has_value()) {
        if (MustPauseLocked()) {
          read_paused_ = true;
        } else {
          next.read = true;
          read_starting_ = true;
        }
      } else {
        read_closed_ = true;
      }
      DecideLocked(next);
    }
    Do(next);
  }

  void OnWriteDone(bool ok) override {
    tsan::AcquireCall(call_);
    Next next;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      pending_.pop_front();
      if (!ok) {
        broken_ = true;
        EndLocked(grpc::Status(grpc::StatusCode::CANCELLED,
                               "the stream broke while writing"));
      }
      if (read_paused_ && !end_.has_value() && !MustPauseLocked()) {
        read_paused_ = false;
        next.read = true;
        read_starting_ = true;
      }
      DecideLocked(next);
    }
    Do(next);
  }

  void OnCancel() override {
    tsan::AcquireCall(call_);
    Next next;
    {
      absl::MutexLock lock(&mu_);
      broken_ = true;
      EndLocked(grpc::Status(grpc::StatusCode::CANCELLED, "stream cancelled"));
      DecideLocked(next);
    }
    Do(next);
  }

  void OnDone() override {
    tsan::AcquireCall(call_);
    streams_->Remove(this);
    bool destroy;
    {
      absl::MutexLock lock(&mu_);
      done_ = true;
      destroy = pins_ == 0;
    }
    if (destroy) delete this;
  }

 private:
  // What to start once mu_ is released.
  struct Next {
    pb::PublishResponse* write = nullptr;
    std::optional<grpc::Status> finish;
    bool read = false;
  };

  // Reading waits while too many requests, or too many bytes of them, are
  // unanswered. Only OnWriteDone resumes it: every request committed while
  // the stream is writable gets a response, whose write completion comes
  // after the commit has released its bytes.
  bool MustPauseLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return static_cast<size_t>(committing_) + pending_.size() >=
               kMaxUnanswered ||
           committing_bytes_ >= kMaxCommittingBytes;
  }

  // The engine's answer to one request, on an engine thread (or inline from
  // SendAsync).
  void Committed(uint64_t id, size_t bytes,
                 absl::StatusOr<std::vector<uint64_t>> r) {
    Next next;
    {
      absl::MutexLock lock(&mu_);
      --committing_;
      committing_bytes_ -= bytes;
      // Until Unpin below, OnDone leaves the reactor alone: Finish may be
      // called from here, and gRPC may then run OnDone on another thread
      // while this one is still in Finish. (gRPC orders the two with
      // synchronization of its own that ThreadSanitizer cannot see; the pin
      // orders them with mu_.)
      ++pins_;
      if (!broken_) {
        pb::PublishResponse& resp = pending_.emplace_back();
        resp.set_request_id(id);
        ToProto(r.status(), resp.mutable_result());
        if (r.ok()) resp.mutable_offsets()->Add(r->begin(), r->end());
      }
      // A failed request, whatever its code, ends nothing: UNAVAILABLE may
      // be an I/O error of one group commit. Server shutdown ends the
      // stream through PublishStreams.
      DecideLocked(next);
    }
    Do(next);
    Unpin();
  }

  // The first end wins. A broken stream drops what is not being written;
  // otherwise what is queued still goes out before Finish.
  void EndLocked(grpc::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (broken_) {
      // The front stays while it is being written: gRPC holds a pointer.
      pending_.erase(pending_.begin() + (writing_ ? 1 : 0), pending_.end());
    }
    if (!end_.has_value()) end_ = std::move(status);
  }

  // Adds to `next` the next write, or the Finish once the stream is ending
  // and nothing is left to answer. Decide a read (read_starting_) first.
  void DecideLocked(Next& next) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_ || writing_) return;
    if (!pending_.empty()) {
      writing_ = true;
      // Stays in place until OnWriteDone pops it: a deque does not move its
      // elements when more are added at the back.
      next.write = &pending_.front();
      return;
    }
    if ((end_.has_value() || read_closed_) && committing_ == 0 &&
        !read_starting_) {
      finished_ = true;
      next.finish = end_.value_or(grpc::Status::OK);
    }
  }

  // Called without mu_: gRPC may run a reaction inline from StartWrite,
  // StartRead or Finish. Nothing touches the reactor after the last of
  // these unless it is kept alive by writing_ or read_starting_.
  void Do(const Next& next) ABSL_LOCKS_EXCLUDED(mu_) {
    if (next.write != nullptr) StartWrite(next.write);
    if (next.finish.has_value()) Finish(*next.finish);
    if (next.read) {
      StartRead(&request_);
      Next after;
      {
        absl::MutexLock lock(&mu_);
        read_starting_ = false;
        DecideLocked(after);
      }
      Do(after);
    }
  }

  Engine* const engine_;
  PublishStreams* const streams_;
  grpc_call* const call_;  // for tsan::AcquireCall
  // Written only by gRPC's read (one outstanding at a time).
  pb::PublishRequest request_;

  absl::Mutex mu_;
  // Responses to write, in order; the front is being written when writing_.
  std::deque<pb::PublishResponse> pending_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  // Requests handed to the engine and not yet answered by it, and their
  // size on the wire.
  int committing_ ABSL_GUARDED_BY(mu_) = 0;
  size_t committing_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  // No read is outstanding because too many requests are unanswered.
  bool read_paused_ ABSL_GUARDED_BY(mu_) = false;
  // Between deciding to start a read and StartRead returning; Finish waits.
  bool read_starting_ ABSL_GUARDED_BY(mu_) = false;
  // No more requests will be read.
  bool read_closed_ ABSL_GUARDED_BY(mu_) = false;
  // Cancelled or a write failed: nothing more can be written.
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  // Set when the stream is to end with this status (no more reads).
  std::optional<grpc::Status> end_ ABSL_GUARDED_BY(mu_);
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  int pins_ ABSL_GUARDED_BY(mu_) = 0;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
};

bool PublishStreams::Add(PublishReactor* stream) {
  absl::MutexLock lock(&mu_);
  if (shutting_down_) return false;
  open_.insert(stream);
  return true;
}

void PublishStreams::Remove(PublishReactor* stream) {
  absl::MutexLock lock(&mu_);
  open_.erase(stream);
}

void PublishStreams::BeginShutdown() {
  std::vector<PublishReactor*> streams;
  {
    absl::MutexLock lock(&mu_);
    shutting_down_ = true;
    for (PublishReactor* s : open_) {
      // Keeps it alive after mu_ is released, even if it ends meanwhile.
      s->Pin();
      streams.push_back(s);
    }
  }
  for (PublishReactor* s : streams) {
    s->Shutdown();
    s->Unpin();
  }
}

grpc::Status ToGrpcStatus(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()),
                      std::string(s.message()));
}

grpc::Status WeirService::CreateQueue(grpc::ServerContext*,
                                      const pb::CreateQueueRequest* req,
                                      pb::CreateQueueResponse* resp) {
  auto r = engine_->CreateQueue(req->name(), FromProto(req->config()));
  if (!r.ok()) return ToGrpcStatus(r.status());
  ToProto(r->first, resp->mutable_queue());
  resp->set_created(r->second);
  return grpc::Status::OK;
}

grpc::Status WeirService::GetQueue(grpc::ServerContext*,
                                   const pb::GetQueueRequest* req,
                                   pb::Queue* resp) {
  auto r = engine_->GetQueue(req->name());
  if (!r.ok()) return ToGrpcStatus(r.status());
  ToProto(*r, resp);
  return grpc::Status::OK;
}

// The QueueConfig fields UpdateQueue's mask may name, each with how to copy
// that field from one engine configuration onto another.
struct ConfigField {
  const char* path;
  void (*copy)(const QueueConfig& from, QueueConfig& to);
};
constexpr ConfigField kConfigFields[] = {
    {"visibility_timeout_ms",
     [](const QueueConfig& f, QueueConfig& t) {
       t.visibility_timeout = f.visibility_timeout;
     }},
    {"max_message_bytes",
     [](const QueueConfig& f, QueueConfig& t) {
       t.max_message_bytes = f.max_message_bytes;
     }},
    {"delay_ms",
     [](const QueueConfig& f, QueueConfig& t) { t.delay = f.delay; }},
    {"retention_max_age_ms",
     [](const QueueConfig& f, QueueConfig& t) {
       t.retention_max_age = f.retention_max_age;
     }},
    {"retention_keep_deleted_for_ms",
     [](const QueueConfig& f, QueueConfig& t) {
       t.retention_keep_deleted_for = f.retention_keep_deleted_for;
     }},
    {"max_receives", [](const QueueConfig& f,
                        QueueConfig& t) { t.max_receives = f.max_receives; }},
    {"dead_letter_queue",
     [](const QueueConfig& f, QueueConfig& t) {
       t.dead_letter_queue = f.dead_letter_queue;
     }},
    {"dedup_window_ms",
     [](const QueueConfig& f, QueueConfig& t) {
       t.dedup_window = f.dedup_window;
     }},
};

grpc::Status WeirService::UpdateQueue(grpc::ServerContext*,
                                      const pb::UpdateQueueRequest* req,
                                      pb::Queue* resp) {
  if (req->update_mask().paths_size() == 0) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "update_mask names no configuration field");
  }
  std::vector<const ConfigField*> fields;
  for (const std::string& path : req->update_mask().paths()) {
    const ConfigField* field = nullptr;
    for (const ConfigField& f : kConfigFields) {
      if (path == f.path) field = &f;
    }
    if (field == nullptr) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          absl::StrCat("update_mask path \"", path,
                                       "\" is not a field of QueueConfig"));
    }
    fields.push_back(field);
  }
  // Converted as by CreateQueue; only the named fields are copied.
  const QueueConfig given = FromProto(req->config());
  auto r = engine_->UpdateQueue(req->name(), [&](QueueConfig& c) {
    for (const ConfigField* f : fields) f->copy(given, c);
  });
  if (!r.ok()) return ToGrpcStatus(r.status());
  ToProto(*r, resp);
  return grpc::Status::OK;
}

grpc::Status WeirService::ListQueues(grpc::ServerContext*,
                                     const pb::ListQueuesRequest* req,
                                     pb::ListQueuesResponse* resp) {
  constexpr int kMaxPage = 1000;
  if (req->page_size() < 0 || req->page_size() > kMaxPage) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("page_size ", req->page_size(),
                                     " is out of range [0, 1000]"));
  }
  const int size = req->page_size() == 0 ? kMaxPage : req->page_size();
  // The page token is the last name of the previous page.
  auto r = engine_->ListQueues(req->prefix(), req->page_token(), size + 1);
  if (!r.ok()) return ToGrpcStatus(r.status());
  for (int i = 0; i < static_cast<int>(r->size()) && i < size; ++i) {
    ToProto((*r)[i], resp->add_queues());
  }
  if (static_cast<int>(r->size()) > size) {
    resp->set_next_page_token((*r)[size - 1].name);
  }
  return grpc::Status::OK;
}

grpc::Status WeirService::DeleteQueue(grpc::ServerContext*,
                                      const pb::DeleteQueueRequest* req,
                                      pb::DeleteQueueResponse*) {
  return ToGrpcStatus(engine_->DeleteQueue(req->name()));
}

grpc::Status WeirService::PurgeQueue(grpc::ServerContext*,
                                     const pb::PurgeQueueRequest* req,
                                     pb::PurgeQueueResponse* resp) {
  auto r = engine_->PurgeQueue(req->name());
  if (!r.ok()) return ToGrpcStatus(r.status());
  resp->set_purged(*r);
  return grpc::Status::OK;
}

grpc::Status WeirService::GetQueueStats(grpc::ServerContext*,
                                        const pb::GetQueueStatsRequest* req,
                                        pb::QueueStats* resp) {
  auto r = engine_->GetQueueStats(req->name(), req->group());
  if (!r.ok()) return ToGrpcStatus(r.status());
  resp->set_ready(r->ready);
  resp->set_in_flight(r->in_flight);
  resp->set_delayed(r->delayed);
  resp->set_oldest_ready_age_ms(absl::ToInt64Milliseconds(r->oldest_ready_age));
  resp->set_sent_total(r->sent_total);
  resp->set_received_total(r->received_total);
  resp->set_deleted_total(r->deleted_total);
  resp->set_next_offset(r->next_offset);
  return grpc::Status::OK;
}

grpc::ServerUnaryReactor* WeirService::Send(grpc::CallbackServerContext* ctx,
                                            const pb::SendRequest* req,
                                            pb::SendResponse* resp) {
  const std::vector<SendEntry> entries = FromProto(req->entries());
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  engine_->SendAsync(req->queue(), entries,
                     [reactor, resp](absl::StatusOr<std::vector<uint64_t>> r) {
                       if (r.ok())
                         resp->mutable_offsets()->Add(r->begin(), r->end());
                       reactor->Finish(ToGrpcStatus(r.status()));
                     });
  return reactor;
}

grpc::ServerBidiReactor<pb::PublishRequest, pb::PublishResponse>*
WeirService::Publish(grpc::CallbackServerContext* ctx) {
  return new PublishReactor(ctx, engine_, &publish_streams_);
}

grpc::ServerUnaryReactor* WeirService::Receive(grpc::CallbackServerContext* ctx,
                                               const pb::ReceiveRequest* req,
                                               pb::ReceiveResponse* resp) {
  return new ReceiveReactor(ctx, engine_, req, resp);
}

grpc::ServerBidiReactor<pb::SubscribeRequest, pb::SubscribeResponse>*
WeirService::Subscribe(grpc::CallbackServerContext* ctx) {
  return new SubscribeReactor(ctx, engine_);
}

grpc::ServerUnaryReactor* WeirService::Delete(grpc::CallbackServerContext* ctx,
                                              const pb::DeleteRequest* req,
                                              pb::DeleteResponse* resp) {
  std::vector<std::string> receipts(req->receipt_handles().begin(),
                                    req->receipt_handles().end());
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  engine_->DeleteAsync(
      req->queue(), receipts,
      [reactor, resp](absl::StatusOr<std::vector<absl::Status>> r) {
        if (r.ok()) ToProto(*r, resp->mutable_results());
        reactor->Finish(ToGrpcStatus(r.status()));
      });
  return reactor;
}

grpc::Status WeirService::ChangeVisibility(
    grpc::ServerContext*, const pb::ChangeVisibilityRequest* req,
    pb::ChangeVisibilityResponse* resp) {
  std::vector<VisibilityChange> changes;
  changes.reserve(req->entries_size());
  for (const pb::VisibilityChange& c : req->entries()) {
    changes.push_back(VisibilityChange{
        c.receipt_handle(), absl::Milliseconds(c.visibility_timeout_ms())});
  }
  auto r = engine_->ChangeVisibility(req->queue(), changes);
  if (!r.ok()) return ToGrpcStatus(r.status());
  ToProto(*r, resp->mutable_results());
  return grpc::Status::OK;
}

grpc::Status WeirService::CreateGroup(grpc::ServerContext*,
                                      const pb::CreateGroupRequest* req,
                                      pb::Group* resp) {
  auto r =
      engine_->CreateGroup(req->queue(), req->name(), FromProto(req->start()));
  if (!r.ok()) return ToGrpcStatus(r.status());
  ToProto(*r, resp);
  return grpc::Status::OK;
}

grpc::Status WeirService::DeleteGroup(grpc::ServerContext*,
                                      const pb::DeleteGroupRequest* req,
                                      pb::DeleteGroupResponse*) {
  return ToGrpcStatus(engine_->DeleteGroup(req->queue(), req->name()));
}

grpc::Status WeirService::ListGroups(grpc::ServerContext*,
                                     const pb::ListGroupsRequest* req,
                                     pb::ListGroupsResponse* resp) {
  auto r = engine_->ListGroups(req->queue());
  if (!r.ok()) return ToGrpcStatus(r.status());
  for (const GroupInfo& g : *r) ToProto(g, resp->add_groups());
  return grpc::Status::OK;
}

grpc::Status WeirService::SeekGroup(grpc::ServerContext*,
                                    const pb::SeekGroupRequest* req,
                                    pb::Group* resp) {
  auto r = engine_->SeekGroup(req->queue(), req->name(), FromProto(req->to()));
  if (!r.ok()) return ToGrpcStatus(r.status());
  ToProto(*r, resp);
  return grpc::Status::OK;
}

grpc::Status WeirService::Read(grpc::ServerContext*, const pb::ReadRequest* req,
                               pb::ReadResponse* resp) {
  ReadOptions o;
  o.from = FromProto(req->from());
  o.max_messages = req->max_messages() == 0 ? 100 : req->max_messages();
  if (req->max_bytes() < 0) {
    return grpc::Status(
        grpc::StatusCode::INVALID_ARGUMENT,
        absl::StrCat("max_bytes ", req->max_bytes(), " must not be negative"));
  }
  if (req->max_bytes() > 0) o.max_bytes = static_cast<size_t>(req->max_bytes());
  auto r = engine_->Read(req->queue(), o);
  if (!r.ok()) return ToGrpcStatus(r.status());
  for (const StoredMessage& m : r->messages) {
    pb::Message* out = resp->add_messages();
    out->set_offset(m.offset);
    out->set_body(m.body);
    for (const auto& [k, v] : m.attributes) (*out->mutable_attributes())[k] = v;
    out->set_enqueue_time_ms(ToUnixMs(m.enqueue_time));
    out->set_ordering_key(m.ordering_key);
  }
  resp->set_next_offset(r->next_offset);
  return grpc::Status::OK;
}

grpc::Status WeirService::Redrive(grpc::ServerContext*,
                                  const pb::RedriveRequest* req,
                                  pb::RedriveResponse* resp) {
  if (req->max_messages() < 0) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("max_messages ", req->max_messages(),
                                     " must not be negative"));
  }
  const int max = req->max_messages() == 0 ? std::numeric_limits<int>::max()
                                           : req->max_messages();
  auto r = engine_->Redrive(req->queue(), req->to_queue(), max);
  if (!r.ok()) return ToGrpcStatus(r.status());
  resp->set_moved(*r);
  return grpc::Status::OK;
}

}  // namespace weir
