// Makes the start of a gRPC operation visible to ThreadSanitizer.
//
// With gRPC's callback API an operation (StartWrite, StartRead, Finish) may
// be started on one thread, an engine thread answering a stream, and its
// reaction (OnWriteDone, ...) run on one of gRPC's threads, which may start
// the next operation or let another thread do it. Between the two, libgrpc
// (not instrumented) hands the call over with its own atomics, so TSan sees
// no edge: the next StartWrite's writes to the call's operation set look like
// a race with the previous one's (CallOpSendMessage::SendMessagePtr, on a
// Subscribe stream whose consecutive writes were started by two engine
// threads).
//
// grpc_call_start_batch is where every operation of every call is started
// (libgrpc++ calls it through the PLT, so the executable's definition comes
// first). This definition releases on the call, then forwards to libgrpc's
// own. A reaction acquires on the same call first thing
// (weir::tsan::AcquireCall in rpc/tsan_call_edge.h): whatever the thread that
// started an operation did before starting it happens before the reaction to
// it, as it does in gRPC.
//
// Only the TSan configuration links this (see tools/sanitizers/BUILD.bazel).
#include <dlfcn.h>
#include <grpc/grpc.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

extern "C" {
void __tsan_release(void* addr);
}

namespace {

using StartBatchFn = grpc_call_error (*)(grpc_call*, const grpc_op*, size_t,
                                         void*, void*);

// libgrpc's grpc_call_start_batch. Aborts if there is none: only a binary
// that links libgrpc calls this definition.
StartBatchFn RealStartBatch() {
  void* sym = dlsym(RTLD_NEXT, "grpc_call_start_batch");
  if (sym == nullptr) {
    std::fprintf(stderr,
                 "tsan_grpc_call: grpc_call_start_batch not found: %s\n",
                 dlerror());
    std::abort();
  }
  StartBatchFn fn;
  static_assert(sizeof(fn) == sizeof(sym));
  std::memcpy(&fn, &sym, sizeof(fn));
  return fn;
}

}  // namespace

extern "C" grpc_call_error grpc_call_start_batch(grpc_call* call,
                                                 const grpc_op* ops,
                                                 size_t nops, void* tag,
                                                 void* reserved) {
  static const StartBatchFn real = RealStartBatch();
  __tsan_release(call);
  return real(call, ops, nops, tag, reserved);
}
