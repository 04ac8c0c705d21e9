// Makes Abseil's Mutex, CondVar, Notification and Status reference counts
// visible to ThreadSanitizer.
//
// Debian's libabsl_synchronization is not built with -fsanitize=thread, so
// ThreadSanitizer cannot see the happens-before edges its Mutex creates: every
// access to data guarded by an absl::Mutex would be reported as a race. The
// TSan build links this file into every binary. It defines the out-of-line
// Mutex and CondVar members itself, forwards each call to the library's own
// definition (found with dlsym(RTLD_NEXT)), and tells ThreadSanitizer about the
// synchronization: a release before the lock is given up, an acquire after it
// is taken. gRPC's libraries call absl::Mutex too; their calls resolve to
// these definitions as well, since the executable comes first in symbol
// lookup.
//
// Notification and Status need the same for two atomics of their own:
// - A Notification already notified is waited for without its Mutex (an
//   acquire load of its flag inside the library), so the wait's edge from
//   Notify() is invisible.
// - Status's reference count is raised in header code but lowered, and the
//   last reference freed, in libabsl_status (Status::UnrefNonInlined). A
//   status copied on one thread and freed by another would be reported as a
//   race on the free.
//
// Only the TSan configuration links this (see tools/sanitizers/BUILD.bazel).
#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "absl/base/options.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

extern "C" {
void __tsan_acquire(void* addr);
void __tsan_release(void* addr);
}

namespace {

#define WEIR_STR2(x) #x
#define WEIR_STR(x) WEIR_STR2(x)

// Whether a member function is const: its mangled name says so.
enum class Member { kNonConst, kConst };

// "_ZN4absl<len><inline namespace>" + `rest` ("_ZNK..." for a const member):
// the Itanium mangled name of a member of absl's inline namespace (e.g.
// "5Mutex4LockEv").
std::string Mangled(const char* rest, Member member) {
  const std::string ns = WEIR_STR(ABSL_OPTION_INLINE_NAMESPACE_NAME);
  return std::string(member == Member::kConst ? "_ZNK" : "_ZN") + "4absl" +
         std::to_string(ns.size()) + ns + rest;
}

// The library's definition of the member mangled as `rest`. Aborts if there
// is none: a silent fallback would hide every lock from ThreadSanitizer.
template <typename Fn>
Fn Real(const char* rest, Member member = Member::kNonConst) {
  const std::string name = Mangled(rest, member);
  void* sym = dlsym(RTLD_NEXT, name.c_str());
  if (sym == nullptr) {
    std::fprintf(stderr, "tsan_absl_sync: %s not found: %s\n", name.c_str(),
                 dlerror());
    std::abort();
  }
  Fn fn;
  static_assert(sizeof(fn) == sizeof(sym));
  std::memcpy(&fn, &sym, sizeof(fn));
  return fn;
}

// absl may evaluate a waiter's Condition on any thread that holds or is
// giving up the lock, inside the library where the annotations above and
// below cannot reach. The condition is therefore evaluated through this
// wrapper, which brackets the evaluation with its own acquire and release.
struct AnnotatedCondition {
  const absl::Condition* cond;
  absl::Mutex* mu;

  static bool Eval(AnnotatedCondition* self) {
    __tsan_acquire(self->mu);
    const bool r = self->cond->Eval();
    __tsan_release(self->mu);
    return r;
  }
};

using MuFn = void (*)(absl::Mutex*);
using MuTryFn = bool (*)(absl::Mutex*);
using MuCondFn = void (*)(absl::Mutex*, const absl::Condition&);
using MuCondDurationFn = bool (*)(absl::Mutex*, const absl::Condition&,
                                  absl::Duration);
using MuCondTimeFn = bool (*)(absl::Mutex*, const absl::Condition&, absl::Time);
using CvWaitFn = void (*)(absl::CondVar*, absl::Mutex*);
using CvWaitDurationFn = bool (*)(absl::CondVar*, absl::Mutex*, absl::Duration);
using CvWaitTimeFn = bool (*)(absl::CondVar*, absl::Mutex*, absl::Time);
using NotifyFn = void (*)(absl::Notification*);
using NotifiedWaitFn = void (*)(const absl::Notification*);
using NotifiedWaitDurationFn = bool (*)(const absl::Notification*,
                                        absl::Duration);
using NotifiedWaitTimeFn = bool (*)(const absl::Notification*, absl::Time);
using UnrefFn = void (*)(uintptr_t);

// The address ThreadSanitizer orders a Notification's Notify() and waits on.
void* SyncAddress(const absl::Notification* n) {
  return const_cast<absl::Notification*>(n);
}

}  // namespace

namespace absl {
ABSL_NAMESPACE_BEGIN

// Taking the lock: acquire after.
void Mutex::Lock() {
  static const MuFn real = Real<MuFn>("5Mutex4LockEv");
  real(this);
  __tsan_acquire(this);
}
void Mutex::ReaderLock() {
  static const MuFn real = Real<MuFn>("5Mutex10ReaderLockEv");
  real(this);
  __tsan_acquire(this);
}
bool Mutex::TryLock() {
  static const MuTryFn real = Real<MuTryFn>("5Mutex7TryLockEv");
  const bool locked = real(this);
  if (locked) __tsan_acquire(this);
  return locked;
}
bool Mutex::ReaderTryLock() {
  static const MuTryFn real = Real<MuTryFn>("5Mutex13ReaderTryLockEv");
  const bool locked = real(this);
  if (locked) __tsan_acquire(this);
  return locked;
}
void Mutex::LockWhen(const Condition& cond) {
  static const MuCondFn real =
      Real<MuCondFn>("5Mutex8LockWhenERKNS0_9ConditionE");
  AnnotatedCondition annotated{&cond, this};
  real(this, absl::Condition(&AnnotatedCondition::Eval, &annotated));
  __tsan_acquire(this);
}
void Mutex::ReaderLockWhen(const Condition& cond) {
  static const MuCondFn real =
      Real<MuCondFn>("5Mutex14ReaderLockWhenERKNS0_9ConditionE");
  AnnotatedCondition annotated{&cond, this};
  real(this, absl::Condition(&AnnotatedCondition::Eval, &annotated));
  __tsan_acquire(this);
}
// The timed forms hold the lock on return whatever they return.
bool Mutex::LockWhenWithTimeout(const Condition& cond, absl::Duration d) {
  static const MuCondDurationFn real = Real<MuCondDurationFn>(
      "5Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  AnnotatedCondition annotated{&cond, this};
  const bool r =
      real(this, absl::Condition(&AnnotatedCondition::Eval, &annotated), d);
  __tsan_acquire(this);
  return r;
}
bool Mutex::LockWhenWithDeadline(const Condition& cond, absl::Time t) {
  static const MuCondTimeFn real = Real<MuCondTimeFn>(
      "5Mutex20LockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  AnnotatedCondition annotated{&cond, this};
  const bool r =
      real(this, absl::Condition(&AnnotatedCondition::Eval, &annotated), t);
  __tsan_acquire(this);
  return r;
}
bool Mutex::ReaderLockWhenWithTimeout(const Condition& cond, absl::Duration d) {
  static const MuCondDurationFn real = Real<MuCondDurationFn>(
      "5Mutex25ReaderLockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  AnnotatedCondition annotated{&cond, this};
  const bool r =
      real(this, absl::Condition(&AnnotatedCondition::Eval, &annotated), d);
  __tsan_acquire(this);
  return r;
}
bool Mutex::ReaderLockWhenWithDeadline(const Condition& cond, absl::Time t) {
  static const MuCondTimeFn real = Real<MuCondTimeFn>(
      "5Mutex26ReaderLockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  AnnotatedCondition annotated{&cond, this};
  const bool r =
      real(this, absl::Condition(&AnnotatedCondition::Eval, &annotated), t);
  __tsan_acquire(this);
  return r;
}

// Giving the lock up: release before.
void Mutex::Unlock() {
  static const MuFn real = Real<MuFn>("5Mutex6UnlockEv");
  __tsan_release(this);
  real(this);
}
void Mutex::ReaderUnlock() {
  static const MuFn real = Real<MuFn>("5Mutex12ReaderUnlockEv");
  __tsan_release(this);
  real(this);
}

// Waiting gives the lock up and takes it again.
void Mutex::Await(const Condition& cond) {
  static const MuCondFn real = Real<MuCondFn>("5Mutex5AwaitERKNS0_9ConditionE");
  __tsan_release(this);
  AnnotatedCondition annotated{&cond, this};
  real(this, absl::Condition(&AnnotatedCondition::Eval, &annotated));
  __tsan_acquire(this);
}
bool Mutex::AwaitWithTimeout(const Condition& cond, absl::Duration d) {
  static const MuCondDurationFn real = Real<MuCondDurationFn>(
      "5Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  __tsan_release(this);
  AnnotatedCondition annotated{&cond, this};
  const bool r =
      real(this, absl::Condition(&AnnotatedCondition::Eval, &annotated), d);
  __tsan_acquire(this);
  return r;
}
bool Mutex::AwaitWithDeadline(const Condition& cond, absl::Time t) {
  static const MuCondTimeFn real = Real<MuCondTimeFn>(
      "5Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  __tsan_release(this);
  AnnotatedCondition annotated{&cond, this};
  const bool r =
      real(this, absl::Condition(&AnnotatedCondition::Eval, &annotated), t);
  __tsan_acquire(this);
  return r;
}
void CondVar::Wait(Mutex* mu) {
  static const CvWaitFn real = Real<CvWaitFn>("7CondVar4WaitEPNS0_5MutexE");
  __tsan_release(mu);
  real(this, mu);
  __tsan_acquire(mu);
}
bool CondVar::WaitWithTimeout(Mutex* mu, absl::Duration d) {
  static const CvWaitDurationFn real = Real<CvWaitDurationFn>(
      "7CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE");
  __tsan_release(mu);
  const bool r = real(this, mu, d);
  __tsan_acquire(mu);
  return r;
}
bool CondVar::WaitWithDeadline(Mutex* mu, absl::Time t) {
  static const CvWaitTimeFn real =
      Real<CvWaitTimeFn>("7CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE");
  __tsan_release(mu);
  const bool r = real(this, mu, t);
  __tsan_acquire(mu);
  return r;
}

// Notify() releases before it sets the flag; a wait that sees the flag
// acquires after.
void Notification::Notify() {
  static const NotifyFn real = Real<NotifyFn>("12Notification6NotifyEv");
  __tsan_release(SyncAddress(this));
  real(this);
}
void Notification::WaitForNotification() const {
  static const NotifiedWaitFn real = Real<NotifiedWaitFn>(
      "12Notification19WaitForNotificationEv", Member::kConst);
  real(this);
  __tsan_acquire(SyncAddress(this));
}
bool Notification::WaitForNotificationWithTimeout(absl::Duration d) const {
  static const NotifiedWaitDurationFn real = Real<NotifiedWaitDurationFn>(
      "12Notification30WaitForNotificationWithTimeoutENS0_8DurationE",
      Member::kConst);
  const bool notified = real(this, d);
  if (notified) __tsan_acquire(SyncAddress(this));
  return notified;
}
bool Notification::WaitForNotificationWithDeadline(absl::Time t) const {
  static const NotifiedWaitTimeFn real = Real<NotifiedWaitTimeFn>(
      "12Notification31WaitForNotificationWithDeadlineENS0_4TimeE",
      Member::kConst);
  const bool notified = real(this, t);
  if (notified) __tsan_acquire(SyncAddress(this));
  return notified;
}

// Dropping a reference is an acquire-release operation on the shared
// representation, as the library's atomic decrement is: whichever reference
// goes last, and frees it, comes after every use made through the others.
void Status::UnrefNonInlined(uintptr_t rep) {
  static const UnrefFn real = Real<UnrefFn>("6Status15UnrefNonInlinedEm");
  // `rep` is the representation's address plus a tag bit.
  void* addr = reinterpret_cast<void*>(rep - 1);
  __tsan_release(addr);
  __tsan_acquire(addr);
  real(rep);
}

ABSL_NAMESPACE_END
}  // namespace absl
