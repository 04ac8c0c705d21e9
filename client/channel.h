// Connection and status helpers shared by Weir's command line tools: how to
// reach a server, and how to name a gRPC status in messages for people.

#ifndef WEIR_CLIENT_CHANNEL_H_
#define WEIR_CLIENT_CHANNEL_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "grpcpp/grpcpp.h"

namespace weir {

// The server address used when neither a flag nor kServerEnvVar names one.
inline constexpr char kDefaultServerAddress[] = "127.0.0.1:50051";
// The environment variable that overrides kDefaultServerAddress.
inline constexpr char kServerEnvVar[] = "WEIR_SERVER";

struct ChannelOptions {
  // Give the channel a TCP connection of its own instead of sharing one with
  // other channels to the same address. Load generators set this so that N
  // simulated clients are N connections, as N processes would be.
  bool dedicated_connection = false;
  // Further integer channel arguments (GRPC_ARG_*), set after Weir's own;
  // for tuning and for measuring what gRPC's options cost.
  std::vector<std::pair<std::string, int>> int_args;
};

// Returns a plaintext channel to `address` ("host:port"). The channel accepts
// responses of any size: a Receive of 1000 messages can exceed gRPC's 4 MiB
// default. The channel connects lazily, so this never fails; the first call
// (or grpc::Channel::WaitForConnected) reports an unreachable server.
std::shared_ptr<grpc::Channel> CreateChannel(
    const std::string& address, const ChannelOptions& options = {});

// The canonical name of a google.rpc.Code value, e.g. "NOT_FOUND" for 5.
// Values outside the enum come back as "CODE_<n>".
std::string StatusCodeName(int code);

// "<code name>: <message>", e.g. "NOT_FOUND: queue \"orders\" does not exist".
std::string FormatStatus(const grpc::Status& status);

}  // namespace weir

#endif  // WEIR_CLIENT_CHANNEL_H_
