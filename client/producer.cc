#include "client/producer.h"

#include <algorithm>
#include <memory>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace weir {
namespace {

ProducerOptions Sanitized(ProducerOptions options) {
  options.max_batch_messages =
      std::clamp(options.max_batch_messages, 1, Client::kMaxBatchEntries);
  options.max_batch_bytes = std::max<size_t>(options.max_batch_bytes, 1);
  options.max_pending_messages =
      std::max<size_t>(options.max_pending_messages, 1);
  options.max_pending_bytes = std::max<size_t>(options.max_pending_bytes, 1);
  if (options.linger < absl::ZeroDuration()) {
    options.linger = absl::ZeroDuration();
  }
  return options;
}

}  // namespace

Producer::Producer(Client& client, ProducerOptions options)
    : client_(client), options_(Sanitized(std::move(options))) {
  sender_ = std::thread([this] { Run(); });
}

Producer::~Producer() { Close(); }

std::future<absl::StatusOr<uint64_t>> Producer::Send(v1::SendEntry entry) {
  auto promise = std::make_shared<std::promise<absl::StatusOr<uint64_t>>>();
  std::future<absl::StatusOr<uint64_t>> future = promise->get_future();
  Send(std::move(entry), [promise](absl::StatusOr<uint64_t> result) {
    promise->set_value(std::move(result));
  });
  return future;
}

void Producer::Send(v1::SendEntry entry, Callback done) {
  const size_t bytes = entry.ByteSizeLong();
  absl::Status refused;
  {
    absl::MutexLock lock(&mu_);
    // A message bigger than the whole budget still goes when nothing else
    // is pending, so that it gets the server's verdict.
    auto has_room = [this, bytes]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return closing_ || PendingMessagesLocked() == 0 ||
             (PendingMessagesLocked() < options_.max_pending_messages &&
              pending_bytes_ + bytes <= options_.max_pending_bytes);
    };
    if (!has_room()) {
      if (options_.block_when_full) {
        mu_.Await(absl::Condition(&has_room));
      } else {
        refused = absl::ResourceExhaustedError(absl::StrCat(
            "producer for queue \"", options_.queue,
            "\" is full: ", PendingMessagesLocked(), " messages and ",
            pending_bytes_, " bytes wait for their result"));
      }
    }
    if (refused.ok() && closing_) {
      refused = absl::FailedPreconditionError(absl::StrCat(
          "producer for queue \"", options_.queue, "\" is closed"));
    }
    if (refused.ok()) {
      pending_bytes_ += bytes;
      queue_bytes_ += bytes;
      ++queued_total_;
      queue_.push_back(
          Pending{std::move(entry), bytes, std::move(done), absl::Now()});
      return;
    }
  }
  done(refused);
}

void Producer::Flush() {
  absl::MutexLock lock(&mu_);
  const uint64_t target = queued_total_;
  flush_until_ = std::max(flush_until_, target);
  auto flushed = [this, target]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return answered_total_ >= target;
  };
  mu_.Await(absl::Condition(&flushed));
}

void Producer::Close() {
  std::call_once(close_once_, [this] {
    {
      absl::MutexLock lock(&mu_);
      closing_ = true;
    }
    sender_.join();
  });
}

bool Producer::BatchReady() const {
  if (queue_.empty()) return closing_;
  return closing_ || flush_until_ > answered_total_ ||
         queue_.size() >= static_cast<size_t>(options_.max_batch_messages) ||
         queue_bytes_ >= options_.max_batch_bytes ||
         absl::Now() >= queue_.front().queued + options_.linger;
}

void Producer::Run() {
  while (true) {
    std::deque<Pending> batch;
    {
      absl::MutexLock lock(&mu_);
      while (!BatchReady()) {
        if (queue_.empty()) {
          // Not BatchReady: it depends on the clock, and absl re-evaluates
          // a condition only when the mutex is released, so a message that
          // arrives here would wait for its linger until some other call
          // came. Once one is queued the deadline wait below takes over.
          mu_.Await(absl::Condition(
              +[](Producer* p) ABSL_NO_THREAD_SAFETY_ANALYSIS {
                return !p->queue_.empty() || p->closing_;
              },
              this));
        } else {
          // Wakes for a full batch, a flush or Close, else when the oldest
          // message has lingered long enough.
          mu_.AwaitWithDeadline(absl::Condition(this, &Producer::BatchReady),
                                queue_.front().queued + options_.linger);
        }
      }
      if (queue_.empty()) return;  // Closing, and everything is answered.
      size_t batch_bytes = 0;
      while (!queue_.empty() &&
             batch.size() < static_cast<size_t>(options_.max_batch_messages) &&
             (batch.empty() ||
              batch_bytes + queue_.front().bytes <= options_.max_batch_bytes)) {
        batch_bytes += queue_.front().bytes;
        queue_bytes_ -= queue_.front().bytes;
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    SendBatch(batch);
    absl::MutexLock lock(&mu_);
    for (const Pending& pending : batch) pending_bytes_ -= pending.bytes;
    answered_total_ += batch.size();
  }
}

ProducerStats Producer::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

absl::StatusOr<std::vector<uint64_t>> Producer::SendCall(
    const std::vector<v1::SendEntry>& entries) {
  {
    absl::MutexLock lock(&mu_);
    ++stats_.batches;
    stats_.largest_batch =
        std::max<uint64_t>(stats_.largest_batch, entries.size());
  }
  return client_.Send(options_.queue, entries, options_.call);
}

void Producer::Report(Pending& pending, absl::StatusOr<uint64_t> result) {
  {
    absl::MutexLock lock(&mu_);
    ++(result.ok() ? stats_.succeeded : stats_.failed);
  }
  pending.done(std::move(result));
}

void Producer::SendBatch(std::deque<Pending>& batch) {
  std::vector<v1::SendEntry> entries;
  entries.reserve(batch.size());
  for (const Pending& pending : batch) entries.push_back(pending.entry);
  absl::StatusOr<std::vector<uint64_t>> offsets = SendCall(entries);
  if (offsets.ok()) {
    for (size_t i = 0; i < batch.size(); ++i) Report(batch[i], (*offsets)[i]);
    return;
  }
  if (offsets.status().code() == absl::StatusCode::kInvalidArgument &&
      batch.size() > 1) {
    // Send is all or nothing, so nothing was stored: find the bad entries.
    for (size_t i = 0; i < batch.size(); ++i) {
      absl::StatusOr<std::vector<uint64_t>> one = SendCall({entries[i]});
      if (one.ok()) {
        Report(batch[i], one->front());
      } else {
        Report(batch[i], one.status());
      }
    }
    return;
  }
  for (Pending& pending : batch) Report(pending, offsets.status());
}

}  // namespace weir
