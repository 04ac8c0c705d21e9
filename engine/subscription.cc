#include "engine/subscription.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/queue_config.h"

namespace weir {

SubscriptionCore::SubscriptionCore(std::weak_ptr<Queue> queue,
                                   ReceiveOptions options,
                                   Dispatcher* dispatcher, Clock* clock,
                                   SubscriptionCallback deliver)
    : queue_(std::move(queue)),
      options_(std::move(options)),
      dispatcher_(dispatcher),
      clock_(clock),
      deliver_(std::move(deliver)) {}

absl::Status SubscriptionCore::AddCredit(int64_t n) {
  absl::MutexLock lock(&mu_);
  if (n < 0 || credit_ + n > Subscription::kMaxCredit) {
    return absl::InvalidArgumentError(
        absl::StrCat("credit ", n, " would make ", credit_ + n,
                     " outstanding; the most is ", Subscription::kMaxCredit));
  }
  credit_ += n;
  ScheduleLocked();
  return absl::OkStatus();
}

void SubscriptionCore::DeliveryDone() {
  absl::MutexLock lock(&mu_);
  delivering_ = false;
  ScheduleLocked();
}

void SubscriptionCore::ScheduleLocked() {
  if (closed_ || failed_) return;
  if (state_ == kRunning) {
    rewake_ = true;
  } else if (state_ == kIdle && credit_ > 0 && !delivering_) {
    state_ = kScheduled;
    dispatcher_->Run([self = shared_from_this()] { self->Attempt(); });
  }
}

bool SubscriptionCore::OnPark() {
  absl::MutexLock lock(&mu_);
  if (rewake_ || closed_ || failed_) return false;
  state_ = kParked;
  return true;
}

bool SubscriptionCore::Parked() {
  absl::MutexLock lock(&mu_);
  return state_ == kParked;
}

void SubscriptionCore::Wake() {
  absl::MutexLock lock(&mu_);
  if (state_ == kParked) {
    state_ = kScheduled;
    dispatcher_->Run([self = shared_from_this()] { self->Attempt(); });
  } else if (state_ == kRunning) {
    rewake_ = true;
  }
}

void SubscriptionCore::Attempt() {
  std::shared_ptr<SubscriptionCore> self = shared_from_this();
  for (;;) {
    ReceiveOptions options = options_;
    {
      absl::MutexLock lock(&mu_);
      if (closed_ || failed_ || credit_ == 0 || delivering_) {
        state_ = kIdle;
        return;
      }
      state_ = kRunning;
      rewake_ = false;
      options.max_messages =
          static_cast<int>(std::min<int64_t>(credit_, Subscription::kMaxBatch));
    }
    std::shared_ptr<Queue> q = queue_.lock();
    if (q == nullptr) {
      Fail(absl::NotFoundError("queue not found"));
      return;
    }
    bool parked = false;
    absl::StatusOr<std::vector<ReceivedMessage>> r =
        q->Receive(options, self, &parked);
    if (parked) return;
    if (!r.ok()) {
      Fail(r.status());
      return;
    }
    // Nothing, and woken meanwhile: look again.
    if (r->empty()) continue;
    Deliver(*std::move(r));
    return;
  }
}

QueueWaiter::Claim SubscriptionCore::TryClaim() {
  absl::MutexLock lock(&mu_);
  if (state_ != kParked || closed_ || failed_ || credit_ == 0 || delivering_) {
    return {};
  }
  // As while Attempt runs: a wake meanwhile only marks rewake_.
  state_ = kRunning;
  return {static_cast<int>(std::min<int64_t>(credit_, Subscription::kMaxBatch)),
          options_.visibility_timeout};
}

void SubscriptionCore::Handoff(std::vector<ReceivedMessage> messages) {
  if (!messages.empty()) {
    // Callbacks run on engine threads, and a blocking Send's handoff comes
    // on its caller's.
    dispatcher_->Run(
        [self = shared_from_this(), messages = std::move(messages)]() mutable {
          self->Deliver(std::move(messages));
        });
    return;
  }
  // The send's write failed: look again.
  absl::MutexLock lock(&mu_);
  state_ = kIdle;
  ScheduleLocked();
}

void SubscriptionCore::Deliver(std::vector<ReceivedMessage> batch) {
  std::vector<std::string> orphans;
  {
    absl::MutexLock lock(&mu_);
    state_ = kIdle;
    if (closed_ || failed_) {
      for (const ReceivedMessage& m : batch) {
        orphans.push_back(m.receipt_handle);
      }
    } else {
      credit_ -= static_cast<int64_t>(batch.size());
      delivering_ = true;
      Hold(batch);
      ++callbacks_running_;
    }
  }
  if (!orphans.empty()) {
    ReleaseAll(orphans);
    return;
  }
  deliver_(std::move(batch));
  EndCallback();
}

void SubscriptionCore::Hold(const std::vector<ReceivedMessage>& batch) {
  for (const ReceivedMessage& m : batch) {
    held_[m.receipt_handle] = m.lease_deadline;
  }
  if (held_.size() < prune_at_) return;
  // A lease that lapsed is no longer this subscription's to release.
  const absl::Time now = clock_->Now();
  absl::erase_if(held_, [now](const auto& e) { return e.second <= now; });
  prune_at_ = std::max<size_t>(1024, 2 * held_.size());
}

void SubscriptionCore::Fail(absl::Status status) {
  {
    absl::MutexLock lock(&mu_);
    if (failed_ || closed_) return;
    failed_ = true;
    state_ = kIdle;
    if (!BeginCallbackLocked()) return;
  }
  deliver_(std::move(status));
  EndCallback();
}

bool SubscriptionCore::BeginCallbackLocked() {
  if (closed_) return false;
  ++callbacks_running_;
  return true;
}

void SubscriptionCore::EndCallback() {
  std::vector<std::function<void()>> closed;
  {
    absl::MutexLock lock(&mu_);
    if (--callbacks_running_ == 0 && closed_) closed.swap(on_closed_);
  }
  for (auto& fn : closed) fn();
}

void SubscriptionCore::RunSerial(std::function<void()> fn) {
  absl::MutexLock lock(&mu_);
  serial_.push_back(std::move(fn));
  if (serial_running_) return;
  serial_running_ = true;
  dispatcher_->Run([self = shared_from_this()] { self->DrainSerial(); });
}

void SubscriptionCore::DrainSerial() {
  for (;;) {
    std::function<void()> fn;
    {
      absl::MutexLock lock(&mu_);
      if (serial_.empty()) {
        serial_running_ = false;
        return;
      }
      fn = std::move(serial_.front());
      serial_.pop_front();
    }
    fn();
  }
}

void SubscriptionCore::Apply(
    SubscriptionOps ops,
    std::function<void(absl::StatusOr<SubscriptionAck>)> done) {
  const size_t entries =
      ops.deletes.size() + ops.extends.size() + ops.releases.size();
  if (entries > static_cast<size_t>(Limits::kMaxBatchEntries)) {
    done(absl::InvalidArgumentError(absl::StrCat(
        "a subscription request may hold at most ", Limits::kMaxBatchEntries,
        " deletes, extends and releases in all, got ", entries)));
    return;
  }
  bool closed;
  {
    absl::MutexLock lock(&mu_);
    closed = closed_;
    // Owed from now on: Close's callback waits for this answer.
    if (!closed) ++callbacks_running_;
  }
  if (closed) {
    // Nothing more is applied for a subscription that has ended.
    done(absl::FailedPreconditionError("the subscription is closed"));
    return;
  }
  RunSerial([this, ops = std::move(ops), done = std::move(done)] {
    absl::StatusOr<SubscriptionAck> ack = SubscriptionAck();
    std::shared_ptr<Queue> q = queue_.lock();
    if (q == nullptr) ack = absl::NotFoundError("queue not found");
    if (ack.ok() && !ops.deletes.empty()) {
      absl::StatusOr<std::vector<absl::Status>> r = q->Delete(ops.deletes);
      if (r.ok()) {
        ack->deletes = *std::move(r);
      } else {
        ack = r.status();
      }
    }
    // An extension needs a positive timeout (0 would be a release); those
    // without one are refused entry by entry and the rest go ahead.
    if (ack.ok() && !ops.extends.empty()) {
      ack->extends.assign(ops.extends.size(), absl::OkStatus());
      std::vector<VisibilityChange> valid;
      std::vector<size_t> where;
      for (size_t i = 0; i < ops.extends.size(); ++i) {
        if (ops.extends[i].visibility_timeout <= absl::ZeroDuration()) {
          ack->extends[i] = absl::InvalidArgumentError(
              "an extension needs a positive visibility timeout");
        } else {
          valid.push_back(ops.extends[i]);
          where.push_back(i);
        }
      }
      if (!valid.empty()) {
        absl::StatusOr<std::vector<absl::Status>> r =
            q->ChangeVisibility(valid);
        if (r.ok()) {
          for (size_t j = 0; j < where.size(); ++j) {
            ack->extends[where[j]] = (*r)[j];
          }
        } else {
          ack = r.status();
        }
      }
    }
    if (ack.ok() && !ops.releases.empty()) {
      absl::StatusOr<std::vector<absl::Status>> r =
          q->ChangeVisibility(ops.releases);
      if (r.ok()) {
        ack->releases = *std::move(r);
      } else {
        ack = r.status();
      }
    }
    {
      absl::MutexLock lock(&mu_);
      if (ack.ok()) {
        // Deleted, or leased again since: no longer ours either way.
        for (size_t i = 0; i < ack->deletes.size(); ++i) {
          const absl::StatusCode c = ack->deletes[i].code();
          if (c == absl::StatusCode::kOk ||
              c == absl::StatusCode::kFailedPrecondition) {
            held_.erase(ops.deletes[i]);
          }
        }
        const absl::Time now = clock_->Now();
        for (size_t i = 0; i < ack->extends.size(); ++i) {
          auto it = held_.find(ops.extends[i].receipt_handle);
          if (it == held_.end()) continue;
          if (ack->extends[i].ok()) {
            it->second = now + ops.extends[i].visibility_timeout;
          } else if (ack->extends[i].code() ==
                     absl::StatusCode::kFailedPrecondition) {
            held_.erase(it);
          }
        }
        // Released, or not ours any more. A release refused for its
        // timeout leaves the lease as it was, still ours to release when
        // the stream ends.
        for (size_t i = 0; i < ack->releases.size(); ++i) {
          const absl::StatusCode c = ack->releases[i].code();
          if (c == absl::StatusCode::kOk ||
              c == absl::StatusCode::kFailedPrecondition) {
            held_.erase(ops.releases[i].receipt_handle);
          }
        }
      }
    }
    done(std::move(ack));
    EndCallback();
  });
}

void SubscriptionCore::Close(std::function<void()> closed) {
  std::vector<std::string> receipts;
  bool first;
  {
    absl::MutexLock lock(&mu_);
    first = !closed_;
    closed_ = true;
    if (first) {
      // Off the queue's waiter list at its next sweep.
      if (state_ == kParked) state_ = kIdle;
      receipts.reserve(held_.size());
      for (const auto& [receipt, deadline] : held_) {
        receipts.push_back(receipt);
      }
      held_.clear();
    }
    if (callbacks_running_ > 0 && closed) {
      on_closed_.push_back(std::move(closed));
      closed = nullptr;
    }
  }
  if (!receipts.empty()) {
    // After the ops already applied: a delete sent just before the stream
    // ended still counts.
    RunSerial([self = shared_from_this(), receipts = std::move(receipts)] {
      self->ReleaseAll(receipts);
    });
  }
  if (closed) closed();
}

void SubscriptionCore::Shutdown() {
  std::vector<std::string> receipts;
  bool notify;
  {
    absl::MutexLock lock(&mu_);
    if (closed_ || failed_) return;
    failed_ = true;
    if (state_ == kParked) state_ = kIdle;
    for (const auto& [receipt, deadline] : held_) receipts.push_back(receipt);
    held_.clear();
    notify = BeginCallbackLocked();
  }
  ReleaseAll(receipts);
  if (notify) {
    deliver_(absl::UnavailableError("the server is shutting down"));
    EndCallback();
  }
}

bool SubscriptionCore::closed() {
  absl::MutexLock lock(&mu_);
  return closed_;
}

void SubscriptionCore::ReleaseAll(const std::vector<std::string>& receipts) {
  std::shared_ptr<Queue> q = queue_.lock();
  if (q == nullptr) return;
  std::vector<VisibilityChange> batch;
  for (size_t i = 0; i < receipts.size(); ++i) {
    batch.push_back({receipts[i], absl::ZeroDuration()});
    if (batch.size() == static_cast<size_t>(Limits::kMaxBatchEntries) ||
        i + 1 == receipts.size()) {
      // A lease that ended meanwhile answers FAILED_PRECONDITION and stays
      // as it is; a storage failure leaves the rest to lapse by themselves.
      (void)q->ChangeVisibility(batch);
      batch.clear();
    }
  }
}

}  // namespace weir
