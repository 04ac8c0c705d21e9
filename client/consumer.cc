#include "client/consumer.h"

#include <algorithm>
#include <cmath>
#include <exception>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpcpp/client_context.h"
#include "grpcpp/support/sync_stream.h"

namespace weir {
namespace {

// Limits of the Subscribe stream (weir.proto).
constexpr int kMaxCredit = 1000;  // credit outstanding may be 10000; N <= 1000
constexpr absl::Duration kMaxLease = absl::Hours(12);
// How long a closed stream may take to end after WritesDone before it is
// cancelled.
constexpr absl::Duration kCloseGrace = absl::Seconds(5);
// A stream that stayed up this long counts as healthy even if it carried
// nothing, so the next reconnect starts from the first back-off again.
constexpr absl::Duration kHealthyStream = absl::Seconds(10);

bool Retryable(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kUnauthenticated:
    case absl::StatusCode::kUnimplemented:
      return false;
    default:
      return true;
  }
}

int64_t Millis(absl::Duration d) {
  return absl::ToInt64Milliseconds(
      std::clamp(d, absl::ZeroDuration(), kMaxLease));
}

bool Empty(const std::vector<std::string>& deletes,
           const std::vector<v1::VisibilityChange>& releases) {
  return deletes.empty() && releases.empty();
}

}  // namespace

absl::Duration Backoff::Delay(uint32_t attempt) const {
  if (attempt <= 1) return std::min(initial, max);
  const double factor =
      std::pow(std::max(multiplier, 1.0), static_cast<double>(attempt - 1));
  const double seconds = absl::ToDoubleSeconds(initial) * factor;
  if (!std::isfinite(seconds) || seconds >= absl::ToDoubleSeconds(max)) {
    return max;
  }
  return absl::Seconds(seconds);
}

// One Subscribe call: the context that cancels it.
class Consumer::Stream {
 public:
  grpc::ClientContext context;
};

Consumer::Consumer(Client& client, ConsumerOptions options, Handler handler)
    : client_(client),
      options_(std::move(options)),
      handler_(std::move(handler)),
      heartbeat_interval_(options_.visibility_timeout *
                          options_.heartbeat_fraction) {}

Consumer::~Consumer() { Stop(); }

absl::Status Consumer::Start() {
  if (options_.max_in_flight < 1 || options_.max_in_flight > kMaxCredit) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_in_flight ", options_.max_in_flight, " is not in 1..",
                     kMaxCredit));
  }
  if (options_.visibility_timeout <= absl::ZeroDuration() ||
      options_.visibility_timeout > kMaxLease) {
    return absl::InvalidArgumentError(
        absl::StrCat("visibility_timeout ",
                     absl::FormatDuration(options_.visibility_timeout),
                     " is not in (0, 12h]"));
  }
  if (!(options_.heartbeat_fraction > 0 && options_.heartbeat_fraction < 1)) {
    return absl::InvalidArgumentError(absl::StrCat("heartbeat_fraction ",
                                                   options_.heartbeat_fraction,
                                                   " is not in (0, 1)"));
  }
  if (!handler_) return absl::InvalidArgumentError("no handler");
  absl::MutexLock lock(&mu_);
  if (started_ || stopping_) {
    return absl::FailedPreconditionError("the consumer was started before");
  }
  started_ = true;
  stream_thread_ = std::thread([this] { RunStreams(); });
  for (int i = 0; i < options_.max_in_flight; ++i) {
    workers_.emplace_back([this] { RunWorker(); });
  }
  return absl::OkStatus();
}

void Consumer::Stop() {
  std::call_once(stop_once_, [this] {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
      pending_credit_ = 0;
      // Delivered but not started: give them back at once.
      for (const v1::Message& message : ready_) {
        v1::VisibilityChange release;
        release.set_receipt_handle(message.receipt_handle());
        release.set_visibility_timeout_ms(0);
        outbox_.releases.push_back(std::move(release));
        held_.erase(message.receipt_handle());
      }
      ready_.clear();
      ++generation_;
      if (!started_) return;
      auto done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return abandon_ || Drained();
      };
      if (!mu_.AwaitWithTimeout(absl::Condition(&done),
                                options_.stop_timeout)) {
        abandon_ = true;
        if (stream_ != nullptr) stream_->context.TryCancel();
        ++generation_;
      }
    }
    stream_thread_.join();
    {
      absl::MutexLock lock(&mu_);
      abandon_ = true;
      ++generation_;
    }
    for (std::thread& worker : workers_) worker.join();
  });
}

absl::Status Consumer::status() const {
  absl::MutexLock lock(&mu_);
  return status_;
}

bool Consumer::failed() const {
  absl::MutexLock lock(&mu_);
  return !status_.ok();
}

bool Consumer::stopping() const {
  absl::MutexLock lock(&mu_);
  return stopping_;
}

ConsumerStats Consumer::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

bool Consumer::Drained() const {
  return held_.empty() && ready_.empty() &&
         Empty(outbox_.deletes, outbox_.releases) && unacked_.empty();
}

absl::Time Consumer::NextHeartbeat() const {
  absl::Time next = absl::InfiniteFuture();
  for (const auto& [receipt, held] : held_) {
    next = std::min(next, held.last_extended + heartbeat_interval_);
  }
  return next;
}

void Consumer::RunStreams() {
  uint32_t failures = 0;
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (abandon_ || (stopping_ && Drained())) return;
    }
    const absl::Time opened = absl::Now();
    absl::Time last_useful = absl::InfinitePast();
    const absl::Status status = RunStream(last_useful);
    {
      absl::MutexLock lock(&mu_);
      if (abandon_ || (stopping_ && Drained())) return;
      ++stats_.stream_errors;
      if (!Retryable(status.code())) {
        status_ = status.ok() ? absl::UnknownError("stream ended") : status;
        abandon_ = true;
        for (const v1::Message& message : ready_) {
          held_.erase(message.receipt_handle());
        }
        ready_.clear();
        ++generation_;
        return;
      }
    }
    if (options_.on_stream_error) {
      options_.on_stream_error(
          status.ok() ? absl::UnavailableError("the server ended the stream")
                      : status);
    }
    if (last_useful >= opened || absl::Now() - opened >= kHealthyStream) {
      failures = 0;
    }
    ++failures;
    absl::MutexLock lock(&mu_);
    auto give_up = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return abandon_ || (stopping_ && Drained());
    };
    mu_.AwaitWithTimeout(absl::Condition(&give_up),
                         options_.reconnect_backoff.Delay(failures));
  }
}

absl::Status Consumer::RunStream(absl::Time& last_useful) {
  Stream stream;
  std::unique_ptr<
      grpc::ClientReaderWriter<v1::SubscribeRequest, v1::SubscribeResponse>>
      rw = client_.stub().Subscribe(&stream.context);
  v1::SubscribeRequest first;
  {
    absl::MutexLock lock(&mu_);
    stream_ = &stream;
    ++stats_.streams_opened;
    v1::SubscribeStart* start = first.mutable_start();
    start->set_queue(options_.queue);
    start->set_group(options_.group);
    start->set_visibility_timeout_ms(Millis(options_.visibility_timeout));
    // Credit covers what this consumer can take beyond what it holds.
    pending_credit_ = 0;
    if (!stopping_) {
      first.set_credit(
          std::max(0, options_.max_in_flight - static_cast<int>(held_.size())));
    }
    ++generation_;
  }

  std::thread writer;
  if (rw->Write(first)) {
    writer = std::thread([&] {
      while (true) {
        v1::SubscribeRequest request;
        bool close = false;
        {
          absl::MutexLock lock(&mu_);
          while (true) {
            if (stream_ != &stream || abandon_) return;
            if (TakeRequest(request, absl::Now())) break;
            if (stopping_ && Drained()) {
              close = true;
              break;
            }
            const uint64_t seen = generation_;
            auto changed = [this, seen]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
              return generation_ != seen;
            };
            mu_.AwaitWithDeadline(absl::Condition(&changed), NextHeartbeat());
          }
        }
        if (close) {
          rw->WritesDone();
          absl::MutexLock lock(&mu_);
          auto ended = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
            return stream_ != &stream;
          };
          if (!mu_.AwaitWithTimeout(absl::Condition(&ended), kCloseGrace)) {
            stream.context.TryCancel();
          }
          return;
        }
        if (!rw->Write(request)) return;  // Broken: the reader sees it too.
      }
    });
  }

  v1::SubscribeResponse response;
  while (rw->Read(&response)) {
    absl::MutexLock lock(&mu_);
    last_useful = absl::Now();
    for (v1::Message& message : *response.mutable_messages()) {
      ++stats_.delivered;
      if (stopping_ || abandon_) {
        v1::VisibilityChange release;
        release.set_receipt_handle(message.receipt_handle());
        release.set_visibility_timeout_ms(0);
        outbox_.releases.push_back(std::move(release));
        continue;
      }
      held_[message.receipt_handle()] = Held{last_useful};
      ready_.push_back(std::move(message));
    }
    if (response.has_ack()) OnAck(response.ack());
    ++generation_;
  }

  {
    absl::MutexLock lock(&mu_);
    stream_ = nullptr;
    pending_credit_ = 0;
    // Whether the server applied what it did not acknowledge is unknown:
    // send it again on the next stream (a repeated delete is harmless).
    for (auto& [id, op] : unacked_) {
      outbox_.deletes.insert(outbox_.deletes.begin(), op.deletes.begin(),
                             op.deletes.end());
      outbox_.releases.insert(outbox_.releases.begin(), op.releases.begin(),
                              op.releases.end());
    }
    unacked_.clear();
    // Delivered on this stream but not started: the server released them
    // when the stream ended (or they lapse after a crash); drop them rather
    // than work on leases that are gone.
    for (const v1::Message& message : ready_) {
      held_.erase(message.receipt_handle());
    }
    ready_.clear();
    ++generation_;
  }
  if (writer.joinable()) writer.join();
  return FromGrpcStatus(rw->Finish());
}

bool Consumer::TakeRequest(v1::SubscribeRequest& request, absl::Time now) {
  bool any = false;
  if (pending_credit_ > 0 && !stopping_) {
    request.set_credit(pending_credit_);
    pending_credit_ = 0;
    any = true;
  }
  int entries = 0;
  Op op;
  while (!outbox_.deletes.empty() && entries < Client::kMaxBatchEntries) {
    op.deletes.push_back(std::move(outbox_.deletes.back()));
    outbox_.deletes.pop_back();
    ++entries;
  }
  while (!outbox_.releases.empty() && entries < Client::kMaxBatchEntries) {
    op.releases.push_back(std::move(outbox_.releases.back()));
    outbox_.releases.pop_back();
    ++entries;
  }
  for (const std::string& receipt : op.deletes) {
    request.add_delete_receipt_handles(receipt);
  }
  for (const v1::VisibilityChange& release : op.releases) {
    *request.add_release() = release;
  }
  for (auto& [receipt, held] : held_) {
    if (entries >= Client::kMaxBatchEntries) break;
    if (now - held.last_extended < heartbeat_interval_) continue;
    v1::VisibilityChange* extend = request.add_extend();
    extend->set_receipt_handle(receipt);
    extend->set_visibility_timeout_ms(Millis(options_.visibility_timeout));
    held.last_extended = now;
    ++entries;
  }
  if (entries > 0) {
    const uint64_t id = next_request_id_++;
    request.set_request_id(id);
    unacked_.emplace(id, std::move(op));
    any = true;
  }
  return any;
}

void Consumer::OnAck(const v1::SubscribeAck& ack) {
  auto it = unacked_.find(ack.request_id());
  if (it == unacked_.end()) return;
  for (const v1::EntryResult& result : ack.delete_results()) {
    if (result.code() == 0) {
      ++stats_.deleted;
    } else {
      ++stats_.delete_errors;
    }
  }
  for (const v1::EntryResult& result : ack.release_results()) {
    if (result.code() == 0) ++stats_.released;
  }
  for (const v1::EntryResult& result : ack.extend_results()) {
    if (result.code() != 0) ++stats_.extend_errors;
  }
  unacked_.erase(it);
}

void Consumer::RunWorker() {
  while (true) {
    v1::Message message;
    {
      absl::MutexLock lock(&mu_);
      auto has_work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return abandon_ || stopping_ || !ready_.empty();
      };
      mu_.Await(absl::Condition(&has_work));
      if (abandon_ || ready_.empty()) return;
      message = std::move(ready_.front());
      ready_.pop_front();
    }
    absl::Status result;
    try {
      result = handler_(message);
    } catch (const std::exception& e) {
      result = absl::InternalError(absl::StrCat("handler threw: ", e.what()));
    } catch (...) {
      result = absl::InternalError("handler threw");
    }
    Finish(message, result);
  }
}

void Consumer::Finish(const v1::Message& message, const absl::Status& result) {
  absl::MutexLock lock(&mu_);
  if (result.ok()) {
    ++stats_.succeeded;
  } else {
    ++stats_.failed;
  }
  if (held_.erase(message.receipt_handle()) == 0) return;
  if (result.ok()) {
    outbox_.deletes.push_back(message.receipt_handle());
  } else {
    v1::VisibilityChange release;
    release.set_receipt_handle(message.receipt_handle());
    release.set_visibility_timeout_ms(
        Millis(options_.retry_backoff.Delay(message.receive_count())));
    outbox_.releases.push_back(std::move(release));
  }
  if (!stopping_ && stream_ != nullptr) ++pending_credit_;
  ++generation_;
}

}  // namespace weir
