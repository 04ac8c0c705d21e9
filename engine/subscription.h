// The engine's Subscription: a long-lived waiter on one queue group that
// leases messages within its credit and pushes them to a callback.
#ifndef WEIR_ENGINE_SUBSCRIPTION_H_
#define WEIR_ENGINE_SUBSCRIPTION_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "engine/clock.h"
#include "engine/dispatcher.h"
#include "engine/engine.h"
#include "engine/queue.h"

namespace weir {

// Shared by the Subscription handle given to the caller, the queue's waiter
// list and the dispatcher tasks that run it. Thread-safe.
//
// Work happens on dispatcher threads only: leasing (Attempt) and, one at a
// time in order, the ops of Apply and the final release (the serial lane).
class SubscriptionCore : public QueueWaiter,
                         public std::enable_shared_from_this<SubscriptionCore> {
 public:
  SubscriptionCore(std::weak_ptr<Queue> queue, ReceiveOptions options,
                   Dispatcher* dispatcher, Clock* clock,
                   SubscriptionCallback deliver);

  absl::Status AddCredit(int64_t n);
  void DeliveryDone();
  void Apply(SubscriptionOps ops,
             std::function<void(absl::StatusOr<SubscriptionAck>)> done);
  void Close(std::function<void()> closed);
  // Engine shutdown: releases the leases held now (synchronously, while the
  // queue still takes writes) and ends the subscription with UNAVAILABLE.
  void Shutdown();
  bool closed();

  // QueueWaiter.
  bool OnPark() override;
  bool Parked() override;
  void Wake() override;
  Claim TryClaim() override;
  void Handoff(std::vector<ReceivedMessage> messages) override;

 private:
  enum State { kIdle, kScheduled, kRunning, kParked };

  // Schedules Attempt unless it is running, scheduled or parked.
  void ScheduleLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Attempt();
  // Hands a leased batch (not empty) to the callback, or releases it when
  // the subscription has ended meanwhile.
  void Deliver(std::vector<ReceivedMessage> batch);
  // Ends the subscription with `status` (delivered once, unless closed).
  void Fail(absl::Status status);
  // Brackets a callback: Begin returns false when closed (skip it).
  bool BeginCallbackLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EndCallback();
  // Runs `fn` on the serial lane.
  void RunSerial(std::function<void()> fn);
  void DrainSerial();
  void Hold(const std::vector<ReceivedMessage>& batch)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Releases `receipts` at once (best effort: a lease that ended meanwhile
  // is left as it is).
  void ReleaseAll(const std::vector<std::string>& receipts);

  const std::weak_ptr<Queue> queue_;
  const ReceiveOptions options_;
  Dispatcher* const dispatcher_;
  Clock* const clock_;
  const SubscriptionCallback deliver_;

  absl::Mutex mu_;
  State state_ ABSL_GUARDED_BY(mu_) = kIdle;
  // Woken while running: look again before parking.
  bool rewake_ ABSL_GUARDED_BY(mu_) = false;
  int64_t credit_ ABSL_GUARDED_BY(mu_) = 0;
  // A batch was delivered and DeliveryDone has not been called yet.
  bool delivering_ ABSL_GUARDED_BY(mu_) = false;
  bool failed_ ABSL_GUARDED_BY(mu_) = false;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  // Callbacks running, and Apply answers owed (counted from the call).
  int callbacks_running_ ABSL_GUARDED_BY(mu_) = 0;
  // Run once no callback is running, after Close.
  std::vector<std::function<void()>> on_closed_ ABSL_GUARDED_BY(mu_);
  // Leases handed out and not deleted or released: receipt -> deadline.
  // Lapsed ones are pruned when the map has doubled since the last prune.
  absl::flat_hash_map<std::string, absl::Time> held_ ABSL_GUARDED_BY(mu_);
  size_t prune_at_ ABSL_GUARDED_BY(mu_) = 1024;
  std::deque<std::function<void()>> serial_ ABSL_GUARDED_BY(mu_);
  bool serial_running_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace weir

#endif  // WEIR_ENGINE_SUBSCRIPTION_H_
