// The happens-before edge from starting a gRPC operation to its reaction,
// made visible to ThreadSanitizer. No-ops outside a TSan build.
//
// In a TSan build, tools/sanitizers/tsan_grpc_call.cc interposes
// grpc_call_start_batch and releases on the call there. A reactor whose
// operations may be started on threads other than gRPC's (engine threads
// answering a stream) calls AcquireCall first thing in each reaction, with
// the call from its context (CallbackServerContext::c_call()). The reaction
// then sees everything the thread that started any operation on that call
// did before starting it: gRPC orders the two inside libgrpc, which TSan
// cannot see.
//
// Thread safety: may be called from any thread.
#ifndef WEIR_RPC_TSAN_CALL_EDGE_H_
#define WEIR_RPC_TSAN_CALL_EDGE_H_

#include <grpc/grpc.h>

#if defined(__SANITIZE_THREAD__)
#define WEIR_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define WEIR_TSAN 1
#endif
#endif

#if defined(WEIR_TSAN)
extern "C" void __tsan_acquire(void* addr);
#endif

namespace weir::tsan {

inline void AcquireCall(grpc_call* call) {
#if defined(WEIR_TSAN)
  __tsan_acquire(call);
#else
  (void)call;
#endif
}

}  // namespace weir::tsan

#endif  // WEIR_RPC_TSAN_CALL_EDGE_H_
