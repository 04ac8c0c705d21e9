// A small fixed pool of threads that runs engine tasks, plus timers driven by
// the engine's Clock. Long-polling receivers park here instead of holding a
// thread each.
#ifndef WEIR_ENGINE_DISPATCHER_H_
#define WEIR_ENGINE_DISPATCHER_H_

#include <deque>
#include <functional>
#include <queue>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "engine/clock.h"

namespace weir {

// Thread-safe. Shutdown (or the destructor) runs every task already queued,
// drops pending timers, and joins the threads.
class Dispatcher {
 public:
  Dispatcher(Clock* clock, int threads);
  // Calls Shutdown().
  ~Dispatcher();

  Dispatcher(const Dispatcher&) = delete;
  Dispatcher& operator=(const Dispatcher&) = delete;

  // Runs `fn` on a pool thread soon.
  void Run(std::function<void()> fn);
  // Runs `fn` on a pool thread once the clock reads `when` or later.
  void At(absl::Time when, std::function<void()> fn);

  // Stops the threads once every queued task has run (tasks queued by those
  // tasks run too), drops pending timers and joins the threads; a task given
  // to Run or At after that never runs. The Dispatcher stays usable as an
  // object, so tasks still running may call Run and At while Shutdown
  // waits for them. Call from the owner's thread, never from a task.
  // Idempotent.
  void Shutdown();

 private:
  struct Timer {
    absl::Time when;
    uint64_t seq;
    std::function<void()> fn;
    bool operator>(const Timer& o) const {
      return when != o.when ? when > o.when : seq > o.seq;
    }
  };

  void WorkerLoop();
  void TimerLoop();

  Clock* const clock_;
  absl::Mutex mu_;
  absl::CondVar work_cv_;
  absl::CondVar timer_cv_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);
  std::priority_queue<Timer, std::vector<Timer>, std::greater<Timer>> timers_
      ABSL_GUARDED_BY(mu_);
  uint64_t timer_seq_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::thread> workers_;
  std::thread timer_thread_;
};

}  // namespace weir

#endif  // WEIR_ENGINE_DISPATCHER_H_
