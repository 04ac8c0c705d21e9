// The weir.v1.Weir gRPC service: a thin adapter that unpacks requests, calls
// the Engine, and packs replies and statuses. No queue logic lives here.
#ifndef WEIR_RPC_SERVICE_H_
#define WEIR_RPC_SERVICE_H_

#include <set>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "engine/engine.h"
#include "grpcpp/grpcpp.h"
#include "weir/v1/weir.grpc.pb.h"

namespace weir {

// Maps an absl::Status to the grpc::Status with the same code and message
// (the two code spaces are the same canonical codes).
grpc::Status ToGrpcStatus(const absl::Status& s);

class PublishReactor;

// The open Publish streams, so that shutdown can end them. Thread-safe.
class PublishStreams {
 public:
  // Registers an open stream. False once BeginShutdown has run: the stream
  // must then end at once.
  bool Add(PublishReactor* stream);
  // Unregisters a stream, from its OnDone.
  void Remove(PublishReactor* stream);
  // Ends every open stream with UNAVAILABLE once what it has committed is
  // answered, and every stream opened from now on at once.
  void BeginShutdown();

 private:
  absl::Mutex mu_;
  std::set<PublishReactor*> open_ ABSL_GUARDED_BY(mu_);
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
};

// Send, Publish, Delete, Receive and Subscribe are served with the callback
// API: a Send, Publish request, Delete or Receive holds no thread while its
// write is committed (together with every other one queued meanwhile),
// long-polling receivers and idle streams none while they wait. The other methods are
// synchronous. Thread-safe.
class WeirService final
    : public weir::v1::Weir::WithCallbackMethod_Delete<
          weir::v1::Weir::WithCallbackMethod_Send<
              weir::v1::Weir::WithCallbackMethod_Publish<
                  weir::v1::Weir::WithCallbackMethod_Subscribe<
                      weir::v1::Weir::WithCallbackMethod_Receive<
                          weir::v1::Weir::Service>>>>> {
 public:
  // `engine` is borrowed and must outlive the service.
  explicit WeirService(Engine* engine) : engine_(engine) {}

  // Ends open Publish streams (see PublishStreams::BeginShutdown). Call
  // after Engine::BeginShutdown and before stopping the gRPC server, whose
  // Shutdown would otherwise wait for idle streams until its deadline.
  void BeginShutdown() { publish_streams_.BeginShutdown(); }

  grpc::Status CreateQueue(grpc::ServerContext* ctx,
                           const weir::v1::CreateQueueRequest* req,
                           weir::v1::CreateQueueResponse* resp) override;
  grpc::Status GetQueue(grpc::ServerContext* ctx,
                        const weir::v1::GetQueueRequest* req,
                        weir::v1::Queue* resp) override;
  grpc::Status UpdateQueue(grpc::ServerContext* ctx,
                           const weir::v1::UpdateQueueRequest* req,
                           weir::v1::Queue* resp) override;
  grpc::Status ListQueues(grpc::ServerContext* ctx,
                          const weir::v1::ListQueuesRequest* req,
                          weir::v1::ListQueuesResponse* resp) override;
  grpc::Status DeleteQueue(grpc::ServerContext* ctx,
                           const weir::v1::DeleteQueueRequest* req,
                           weir::v1::DeleteQueueResponse* resp) override;
  grpc::Status PurgeQueue(grpc::ServerContext* ctx,
                          const weir::v1::PurgeQueueRequest* req,
                          weir::v1::PurgeQueueResponse* resp) override;
  grpc::Status GetQueueStats(grpc::ServerContext* ctx,
                             const weir::v1::GetQueueStatsRequest* req,
                             weir::v1::QueueStats* resp) override;
  grpc::ServerUnaryReactor* Send(grpc::CallbackServerContext* ctx,
                                 const weir::v1::SendRequest* req,
                                 weir::v1::SendResponse* resp) override;
  grpc::ServerBidiReactor<weir::v1::PublishRequest, weir::v1::PublishResponse>*
  Publish(grpc::CallbackServerContext* ctx) override;
  grpc::ServerUnaryReactor* Receive(grpc::CallbackServerContext* ctx,
                                    const weir::v1::ReceiveRequest* req,
                                    weir::v1::ReceiveResponse* resp) override;
  grpc::ServerBidiReactor<weir::v1::SubscribeRequest,
                          weir::v1::SubscribeResponse>*
  Subscribe(grpc::CallbackServerContext* ctx) override;
  grpc::ServerUnaryReactor* Delete(grpc::CallbackServerContext* ctx,
                                   const weir::v1::DeleteRequest* req,
                                   weir::v1::DeleteResponse* resp) override;
  grpc::Status ChangeVisibility(
      grpc::ServerContext* ctx, const weir::v1::ChangeVisibilityRequest* req,
      weir::v1::ChangeVisibilityResponse* resp) override;
  grpc::Status CreateGroup(grpc::ServerContext* ctx,
                           const weir::v1::CreateGroupRequest* req,
                           weir::v1::Group* resp) override;
  grpc::Status DeleteGroup(grpc::ServerContext* ctx,
                           const weir::v1::DeleteGroupRequest* req,
                           weir::v1::DeleteGroupResponse* resp) override;
  grpc::Status ListGroups(grpc::ServerContext* ctx,
                          const weir::v1::ListGroupsRequest* req,
                          weir::v1::ListGroupsResponse* resp) override;
  grpc::Status SeekGroup(grpc::ServerContext* ctx,
                         const weir::v1::SeekGroupRequest* req,
                         weir::v1::Group* resp) override;
  grpc::Status Read(grpc::ServerContext* ctx, const weir::v1::ReadRequest* req,
                    weir::v1::ReadResponse* resp) override;
  grpc::Status Redrive(grpc::ServerContext* ctx,
                       const weir::v1::RedriveRequest* req,
                       weir::v1::RedriveResponse* resp) override;

 private:
  Engine* const engine_;
  PublishStreams publish_streams_;
};

}  // namespace weir

#endif  // WEIR_RPC_SERVICE_H_
