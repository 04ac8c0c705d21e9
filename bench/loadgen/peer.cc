#include "bench/loadgen/peer.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace weir {
namespace loadgen {

absl::Status PeerClient::DeleteAndReceive(
    const std::vector<const Delivery*>& done, int max, absl::Duration wait,
    std::vector<Delivery>* out) {
  if (!done.empty()) {
    if (absl::Status s = Delete(done); !s.ok()) return s;
  }
  return Receive(max, wait, out);
}

absl::StatusOr<std::unique_ptr<Peer>> MakePeer(const std::string& name,
                                               const std::string& address,
                                               const PeerOptions& options) {
  if (options.connections < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "connections must be 0 or more, got ", options.connections));
  }
  if (name == "weir" || name == "weir-stream") {
    return MakeWeirPeer(address, /*streams=*/name == "weir-stream",
                        options.connections);
  }
  std::unique_ptr<Peer> peer;
  if (name == "redis") {
    peer = MakeRedisPeer(address);
  } else if (name == "beanstalkd") {
    peer = MakeBeanstalkdPeer(address);
  } else if (name == "nats") {
    peer = MakeNatsPeer(address);
  } else if (name == "rabbitmq") {
    peer = MakeRabbitmqPeer(address);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown system \"", name,
                     "\"; known: ", absl::StrJoin(PeerNames(), ", ")));
  }
  if (options.connections != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("shared connections are for Weir only, not ", name));
  }
  return peer;
}

}  // namespace loadgen
}  // namespace weir
