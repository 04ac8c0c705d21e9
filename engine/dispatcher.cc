#include "engine/dispatcher.h"

#include <algorithm>

namespace weir {
namespace {

// The timer thread re-reads the clock at least this often, so a clock that
// jumps (a test's FakeClock) is noticed without a notification.
constexpr absl::Duration kMaxTimerSleep = absl::Milliseconds(100);

}  // namespace

Dispatcher::Dispatcher(Clock* clock, int threads) : clock_(clock) {
  threads = std::max(threads, 1);
  for (int i = 0; i < threads; ++i) {
    workers_.emplace_back([this] { WorkerLoop(); });
  }
  timer_thread_ = std::thread([this] { TimerLoop(); });
}

Dispatcher::~Dispatcher() { Shutdown(); }

void Dispatcher::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    work_cv_.SignalAll();
    timer_cv_.SignalAll();
  }
  if (timer_thread_.joinable()) timer_thread_.join();
  for (auto& t : workers_) {
    if (t.joinable()) t.join();
  }
}

void Dispatcher::Run(std::function<void()> fn) {
  absl::MutexLock lock(&mu_);
  tasks_.push_back(std::move(fn));
  work_cv_.Signal();
}

void Dispatcher::At(absl::Time when, std::function<void()> fn) {
  absl::MutexLock lock(&mu_);
  const bool earliest = timers_.empty() || when < timers_.top().when;
  timers_.push(Timer{when, timer_seq_++, std::move(fn)});
  if (earliest) timer_cv_.Signal();
}

void Dispatcher::WorkerLoop() {
  for (;;) {
    std::function<void()> fn;
    {
      absl::MutexLock lock(&mu_);
      while (tasks_.empty() && !stopping_) work_cv_.Wait(&mu_);
      if (tasks_.empty()) return;  // Stopping and drained.
      fn = std::move(tasks_.front());
      tasks_.pop_front();
    }
    fn();
  }
}

void Dispatcher::TimerLoop() {
  absl::MutexLock lock(&mu_);
  while (!stopping_) {
    if (timers_.empty()) {
      timer_cv_.Wait(&mu_);
      continue;
    }
    const absl::Time now = clock_->Now();
    if (timers_.top().when > now) {
      timer_cv_.WaitWithTimeout(
          &mu_, std::min(timers_.top().when - now, kMaxTimerSleep));
      continue;
    }
    while (!timers_.empty() && timers_.top().when <= now) {
      tasks_.push_back(std::move(const_cast<Timer&>(timers_.top()).fn));
      timers_.pop();
      work_cv_.Signal();
    }
  }
}

}  // namespace weir
