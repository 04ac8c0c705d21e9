// The edge rpc/tsan_call_edge.h gives ThreadSanitizer: a stream's second
// write, started on a thread that learned of the first write's completion
// only through the reaction to it, is ordered after the first write, started
// on another thread. In a TSan build, without the edge, TSan reports the
// second StartWrite's writes to the call's operation set as a race with the
// first's and ends the test. In other builds this checks the same stream
// works.
#include <memory>
#include <string>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "rpc/tsan_call_edge.h"
#include "weir/v1/weir.grpc.pb.h"

namespace weir {
namespace {

// A Subscribe stream that answers its first request with two responses, each
// started on a thread of its own. The two threads share nothing but what
// reaches the second through the first write's reaction.
class TwoWriters final : public grpc::ServerBidiReactor<v1::SubscribeRequest,
                                                        v1::SubscribeResponse> {
 public:
  explicit TwoWriters(grpc::CallbackServerContext* context)
      : call_(context->c_call()) {
    first_.add_messages()->set_body("first");
    second_.add_messages()->set_body("second");
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    tsan::AcquireCall(call_);
    if (!ok) {
      // The client half-closed: the writers are done by then (the client
      // read both responses first).
      Finish(grpc::Status::OK);
      return;
    }
    // The second writer is started before the first, so that its start
    // orders nothing the first writer does.
    second_writer_ = std::thread([this] {
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(&first_done_));
        if (!first_ok_) return;
      }
      StartWrite(&second_);
    });
    first_writer_ = std::thread([this] { StartWrite(&first_); });
  }

  void OnWriteDone(bool ok) override {
    tsan::AcquireCall(call_);
    bool second = false;
    {
      absl::MutexLock lock(&mu_);
      second = first_done_;
      first_done_ = true;
      first_ok_ = ok;
    }
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::INTERNAL, "a write failed"));
    } else if (second) {
      StartRead(&request_);  // for the client's half-close
    }
  }

  void OnDone() override {
    tsan::AcquireCall(call_);
    {
      // A stream that broke before its first write leaves the second
      // writer waiting.
      absl::MutexLock lock(&mu_);
      first_done_ = true;
    }
    if (first_writer_.joinable()) first_writer_.join();
    if (second_writer_.joinable()) second_writer_.join();
    delete this;
  }

 private:
  grpc_call* const call_;
  v1::SubscribeRequest request_;
  v1::SubscribeResponse first_;
  v1::SubscribeResponse second_;
  std::thread first_writer_;
  std::thread second_writer_;
  absl::Mutex mu_;
  bool first_done_ ABSL_GUARDED_BY(mu_) = false;
  bool first_ok_ ABSL_GUARDED_BY(mu_) = false;
};

class TwoWritersService final : public v1::Weir::CallbackService {
  grpc::ServerBidiReactor<v1::SubscribeRequest, v1::SubscribeResponse>*
  Subscribe(grpc::CallbackServerContext* context) override {
    return new TwoWriters(context);
  }
};

TEST(CallEdgeTest, WritesStartedOnTwoThreadsAreOrderedByTheReaction) {
  TwoWritersService service;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  ASSERT_NE(port, 0);

  std::unique_ptr<v1::Weir::Stub> stub = v1::Weir::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
  // Several streams, so that the writers land on different threads of
  // gRPC's in different orders.
  for (int i = 0; i < 20; ++i) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(60));
    auto stream = stub->Subscribe(&context);
    ASSERT_TRUE(stream->Write(v1::SubscribeRequest()));
    v1::SubscribeResponse response;
    ASSERT_TRUE(stream->Read(&response));
    ASSERT_EQ(response.messages_size(), 1);
    EXPECT_EQ(response.messages(0).body(), "first");
    ASSERT_TRUE(stream->Read(&response));
    ASSERT_EQ(response.messages_size(), 1);
    EXPECT_EQ(response.messages(0).body(), "second");
    ASSERT_TRUE(stream->WritesDone());
    grpc::Status status = stream->Finish();
    EXPECT_TRUE(status.ok()) << status.error_message();
  }
  server->Shutdown();
}

}  // namespace
}  // namespace weir
