// Unary calls made through gRPC's callback API and waited for.
//
// A blocking stub call (stub->Send(&context, request, &response)) has the
// calling thread poll gRPC's completion queue itself, and with many threads
// each in a call they hand the poller role to each other on every call. Made
// through the callback API, the call is polled by gRPC's own threads and the
// caller only waits for its completion. The result is the same; on a 2-core
// machine with 64 clients the client spends about a quarter less CPU per
// call and makes about half again as many calls (bench/grpc_floor; the figures
// and their commands are in docs/benchmarks.md, "The floor").

#ifndef WEIR_CLIENT_CALL_H_
#define WEIR_CLIENT_CALL_H_

#include <functional>
#include <utility>

#include "absl/synchronization/notification.h"
#include "grpcpp/grpcpp.h"

namespace weir {

template <typename T>
struct NotDeduced {
  using type = T;
};

// Calls `method` of `stub`'s callback interface (for example
// &v1::Weir::Stub::async::Send) and blocks until it completes. `context`,
// `request` and `response` must outlive the call, as for a blocking call;
// they may be destroyed once this returns. Thread-safe as far as the stub is
// (gRPC stubs are). Do not call it from a gRPC callback reaction: it would
// hold one of the threads that must run the call's completion.
template <typename Async, typename Request, typename Response>
grpc::Status CallAndWait(
    Async* async,
    void (Async::*method)(grpc::ClientContext*,
                          const typename NotDeduced<Request>::type*,
                          typename NotDeduced<Response>::type*,
                          std::function<void(grpc::Status)>),
    grpc::ClientContext* context, const Request& request, Response* response) {
  absl::Notification done;
  grpc::Status result;
  (async->*method)(context, &request, response,
                   [&done, &result](grpc::Status status) {
                     result = std::move(status);
                     done.Notify();
                   });
  done.WaitForNotification();
  return result;
}

}  // namespace weir

#endif  // WEIR_CLIENT_CALL_H_
