// beanstalkd over its text protocol (doc/protocol.txt in beanstalkd's
// sources), spoken directly on a TCP socket: put, reserve-with-timeout and
// delete on one tube, with the job's TTR as the visibility timeout. A batch
// is a pipeline of commands: beanstalkd has no batch call. DeleteAndReceive
// pipelines the deletes with the first reserve.

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "bench/loadgen/peer.h"

namespace weir {
namespace loadgen {
namespace {

// One connection with a read buffer. Not thread-safe.
class Connection {
 public:
  ~Connection() {
    if (fd_ >= 0) close(fd_);
  }

  absl::Status Open(const std::string& address) {
    std::pair<std::string, std::string> host_port =
        absl::StrSplit(address, absl::MaxSplits(':', 1));
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    if (getaddrinfo(host_port.first.c_str(), host_port.second.c_str(), &hints,
                    &found) != 0 ||
        found == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot resolve \"", address, "\""));
    }
    fd_ = socket(found->ai_family, found->ai_socktype, found->ai_protocol);
    const int rc =
        fd_ < 0 ? -1 : connect(fd_, found->ai_addr, found->ai_addrlen);
    freeaddrinfo(found);
    if (rc != 0) {
      return absl::UnavailableError(absl::StrCat(
          "cannot connect to beanstalkd at ", address, ": ", strerror(errno)));
    }
    int one = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return absl::OkStatus();
  }

  absl::Status Write(absl::string_view data) {
    while (!data.empty()) {
      const ssize_t n = send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return absl::UnavailableError("beanstalkd: write failed");
      data.remove_prefix(n);
    }
    return absl::OkStatus();
  }

  // One reply line without its "\r\n".
  absl::StatusOr<std::string> ReadLine() {
    while (true) {
      const size_t end = buffer_.find("\r\n", start_);
      if (end != std::string::npos) {
        std::string line = buffer_.substr(start_, end - start_);
        start_ = end + 2;
        return line;
      }
      absl::Status status = Fill();
      if (!status.ok()) return status;
    }
  }

  // `n` bytes of a job body followed by "\r\n".
  absl::StatusOr<std::string> ReadBody(size_t n) {
    while (buffer_.size() - start_ < n + 2) {
      absl::Status status = Fill();
      if (!status.ok()) return status;
    }
    std::string body = buffer_.substr(start_, n);
    start_ += n + 2;
    return body;
  }

 private:
  absl::Status Fill() {
    if (start_ > 0) {
      buffer_.erase(0, start_);
      start_ = 0;
    }
    char chunk[64 << 10];
    ssize_t n;
    do {
      n = recv(fd_, chunk, sizeof(chunk), 0);
    } while (n < 0 && errno == EINTR);
    if (n <= 0) return absl::UnavailableError("beanstalkd: connection closed");
    buffer_.append(chunk, n);
    return absl::OkStatus();
  }

  int fd_ = -1;
  std::string buffer_;
  size_t start_ = 0;
};

absl::Status Expect(Connection& connection, absl::string_view prefix,
                    absl::string_view what) {
  absl::StatusOr<std::string> line = connection.ReadLine();
  if (!line.ok()) return line.status();
  if (!absl::StartsWith(*line, prefix)) {
    return absl::InternalError(absl::StrCat(what, ": ", *line));
  }
  return absl::OkStatus();
}

class BeanstalkdClient : public PeerClient {
 public:
  BeanstalkdClient(std::unique_ptr<Connection> connection, int64_t ttr_s)
      : connection_(std::move(connection)), ttr_(absl::StrCat(ttr_s)) {}

  absl::Status Send(const std::vector<std::string>& bodies) override {
    std::string out;
    for (const std::string& body : bodies) {
      absl::StrAppend(&out, "put 0 0 ", ttr_, " ", body.size(), "\r\n", body,
                      "\r\n");
    }
    absl::Status status = connection_->Write(out);
    for (size_t i = 0; status.ok() && i < bodies.size(); ++i) {
      status = Expect(*connection_, "INSERTED", "put");
    }
    return status;
  }

  absl::Status Receive(int max, absl::Duration wait,
                       std::vector<Delivery>* out) override {
    return DeleteAndReceive({}, max, wait, out);
  }

  absl::Status DeleteAndReceive(const std::vector<const Delivery*>& done,
                                int max, absl::Duration wait,
                                std::vector<Delivery>* out) override {
    const int64_t wait_s =
        static_cast<int64_t>(std::ceil(absl::ToDoubleSeconds(wait)));
    std::string commands = DeleteCommands(done);
    absl::StrAppend(&commands, "reserve-with-timeout ", wait_s, "\r\n");
    out->clear();
    absl::Status status = connection_->Write(commands);
    if (status.ok()) status = ReadDeleted(done.size());
    if (status.ok()) status = ReadReserved(out);
    if (!status.ok() || out->empty() || max == 1) return status;
    // The rest of the batch: whatever is ready now, in one round trip.
    std::string more;
    for (int i = 1; i < max; ++i) more += "reserve-with-timeout 0\r\n";
    status = connection_->Write(more);
    for (int i = 1; status.ok() && i < max; ++i) status = ReadReserved(out);
    return status;
  }

  absl::Status Delete(const std::vector<const Delivery*>& done) override {
    absl::Status status = connection_->Write(DeleteCommands(done));
    if (!status.ok()) return status;
    return ReadDeleted(done.size());
  }

 private:
  static std::string DeleteCommands(const std::vector<const Delivery*>& done) {
    std::string out;
    for (const Delivery* delivery : done) {
      absl::StrAppend(&out, "delete ", delivery->handle, "\r\n");
    }
    return out;
  }

  // Reads the replies to `n` deletes.
  absl::Status ReadDeleted(size_t n) {
    absl::Status status;
    for (size_t i = 0; i < n; ++i) {
      absl::StatusOr<std::string> line = connection_->ReadLine();
      if (!line.ok()) return line.status();
      // NOT_FOUND: the TTR ran out and the job went to another consumer.
      if (*line != "DELETED" && *line != "NOT_FOUND") {
        status = absl::InternalError(absl::StrCat("delete: ", *line));
      }
    }
    return status;
  }

  // Reads one reply to a reserve: a job is appended to `out`; TIMED_OUT and
  // DEADLINE_SOON (a job this connection holds is about to lapse) add none.
  absl::Status ReadReserved(std::vector<Delivery>* out) {
    absl::StatusOr<std::string> line = connection_->ReadLine();
    if (!line.ok()) return line.status();
    if (*line == "TIMED_OUT" || *line == "DEADLINE_SOON") {
      return absl::OkStatus();
    }
    std::vector<absl::string_view> words = absl::StrSplit(*line, ' ');
    size_t bytes = 0;
    if (words.size() != 3 || words[0] != "RESERVED" ||
        !absl::SimpleAtoi(words[2], &bytes)) {
      return absl::InternalError(absl::StrCat("reserve: ", *line));
    }
    absl::StatusOr<std::string> body = connection_->ReadBody(bytes);
    if (!body.ok()) return body.status();
    out->push_back(Delivery{*std::move(body), std::string(words[1])});
    return absl::OkStatus();
  }

  std::unique_ptr<Connection> connection_;
  const std::string ttr_;
};

class BeanstalkdPeer : public Peer {
 public:
  explicit BeanstalkdPeer(std::string address) : address_(std::move(address)) {}

  absl::Status Setup(const QueueSpec& spec) override {
    spec_ = spec;
    // Tubes exist once used; check that the server answers.
    absl::StatusOr<std::unique_ptr<Connection>> connection = Open();
    return connection.status();
  }

  absl::StatusOr<std::unique_ptr<PeerClient>> Connect() override {
    absl::StatusOr<std::unique_ptr<Connection>> connection = Open();
    if (!connection.ok()) return connection.status();
    const int64_t ttr_s = std::max<int64_t>(
        1, static_cast<int64_t>(std::ceil(absl::ToDoubleSeconds(spec_.lease))));
    return std::make_unique<BeanstalkdClient>(*std::move(connection), ttr_s);
  }

  int64_t Backlog() override {
    absl::StatusOr<std::unique_ptr<Connection>> connection = Open();
    if (!connection.ok()) return -1;
    Connection& c = **connection;
    if (!c.Write(absl::StrCat("stats-tube ", spec_.name, "\r\n")).ok()) {
      return -1;
    }
    absl::StatusOr<std::string> line = c.ReadLine();
    if (!line.ok()) return -1;
    absl::string_view header = *line;
    size_t bytes = 0;
    if (!absl::ConsumePrefix(&header, "OK ") ||
        !absl::SimpleAtoi(header, &bytes)) {
      return -1;
    }
    absl::StatusOr<std::string> yaml = c.ReadBody(bytes);
    if (!yaml.ok()) return -1;
    int64_t total = 0;
    for (absl::string_view entry : absl::StrSplit(*yaml, '\n')) {
      for (absl::string_view key :
           {"current-jobs-ready: ", "current-jobs-reserved: ",
            "current-jobs-delayed: "}) {
        int64_t n = 0;
        if (absl::ConsumePrefix(&entry, key) && absl::SimpleAtoi(entry, &n)) {
          total += n;
        }
      }
    }
    return total;
  }

 private:
  // A connection that puts into and reserves from the benchmark's tube only.
  absl::StatusOr<std::unique_ptr<Connection>> Open() {
    auto connection = std::make_unique<Connection>();
    absl::Status status = connection->Open(address_);
    if (status.ok()) {
      status =
          connection->Write(absl::StrCat("use ", spec_.name, "\r\nwatch ",
                                         spec_.name, "\r\nignore default\r\n"));
    }
    if (status.ok()) status = Expect(*connection, "USING", "use");
    if (status.ok()) status = Expect(*connection, "WATCHING", "watch");
    if (status.ok()) status = Expect(*connection, "WATCHING", "ignore");
    if (!status.ok()) return status;
    return connection;
  }

  const std::string address_;
  QueueSpec spec_;
};

}  // namespace

std::unique_ptr<Peer> MakeBeanstalkdPeer(const std::string& address) {
  return std::make_unique<BeanstalkdPeer>(address);
}

}  // namespace loadgen
}  // namespace weir
