// Runs the real weir_server binary as a child process for end-to-end tests:
// starts it on a free local port, waits until it serves, and stops, kills or
// restarts it on the same data directory.
#ifndef WEIR_TESTS_SERVER_PROCESS_H_
#define WEIR_TESTS_SERVER_PROCESS_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "grpcpp/channel.h"
#include "weir/v1/weir.grpc.pb.h"

namespace weir::test {

// Returns a new, empty directory whose name starts with `prefix`, below
// $TEST_TMPDIR (set by Bazel), else $TMPDIR, else /tmp. The directory is left
// in place: Bazel clears $TEST_TMPDIR itself.
absl::StatusOr<std::string> MakeTempDir(absl::string_view prefix);

// Returns the path of the weir_server binary: $WEIR_SERVER_BINARY when set,
// else the test's runfiles ($TEST_SRCDIR/weir/rpc/weir_server, falling back
// to $RUNFILES_DIR, then to the runfiles beside the running binary). A test
// that uses it declares `data = ["//rpc:weir_server"]`.
absl::StatusOr<std::string> ServerBinaryPath();

struct ServerOptions {
  // Where the server keeps its data. Empty: a new directory from MakeTempDir.
  std::string data_dir;
  // The --durability flag: "sync" or "async".
  std::string durability = "sync";
  // Appended to the command line.
  std::vector<std::string> extra_args;
  // How long Start and Restart wait for the server to report that it serves.
  absl::Duration ready_timeout = absl::Seconds(60);
  // Restart on the port the first launch got instead of a new one, so that
  // clients holding the address (a reconnecting consumer) find the new
  // server. Restart fails if another process took the port meanwhile.
  bool keep_port = false;
};

// One weir_server child process. Its stdout and stderr are the test's, so the
// server's log lands in the test log.
//
// The child is SIGKILLed when this object is destroyed and, through
// PR_SET_PDEATHSIG, when the thread that started it exits: start and restart
// servers from the test's main thread. Not thread-safe.
class ServerProcess {
 public:
  // Starts the server with `--listen 127.0.0.1:0` and waits until it has
  // written its ready file. Fails if the binary cannot be found, exits early,
  // or is not ready within options.ready_timeout (then it is killed).
  static absl::StatusOr<std::unique_ptr<ServerProcess>> Start(
      ServerOptions options = {});

  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  // Kills the child if it is still running.
  ~ServerProcess();

  // "127.0.0.1:<port>" as reported by the running server.
  const std::string& address() const { return address_; }
  const std::string& data_dir() const { return options_.data_dir; }
  // The child's process id, or -1 when none is running.
  pid_t pid() const { return pid_; }
  bool running() const { return pid_ > 0; }
  // True when a child was started and has exited since (crashed, or was
  // killed from outside), without reaping it: running() stays true until
  // Kill, Stop or Restart reaps it.
  bool Exited() const;

  // A plaintext channel to the current address, shared by every caller until
  // the next Restart. It accepts responses of any size.
  std::shared_ptr<grpc::Channel> Channel() const { return channel_; }
  // A new stub on Channel().
  std::unique_ptr<weir::v1::Weir::Stub> NewStub() const;

  // Sends SIGKILL and reaps the child. Does nothing when none is running.
  void Kill();

  // Sends SIGTERM and waits up to `timeout` for the child to exit. Returns its
  // exit code; INTERNAL if a signal ended it; DEADLINE_EXCEEDED if it did not
  // exit in time (it is then killed); FAILED_PRECONDITION if none is running.
  absl::StatusOr<int> Stop(absl::Duration timeout = absl::Seconds(30));

  // Sends SIGSTOP and waits (waitpid WUNTRACED) until every thread of the
  // child has stopped: kill() returns before the stop takes effect, and a
  // thread already running could still answer a call meanwhile. A frozen
  // server accepts connections (the kernel does) but answers nothing.
  absl::Status Freeze();
  // Sends SIGCONT to a frozen child.
  absl::Status Thaw();

  // Starts the server again on the same data directory and durability, on a
  // new port (the same one with ServerOptions::keep_port). A running server is
  // stopped first (SIGTERM); a failure to stop cleanly is returned and nothing
  // is started.
  absl::Status Restart();

 private:
  ServerProcess(ServerOptions options, std::string binary,
                std::string scratch_dir);

  // Forks and execs the server, then waits for its ready file.
  absl::Status Launch();
  absl::Status WaitUntilReady();
  // Reaps the child without blocking; true (and *wait_status set) if it ended.
  bool TryReap(int* wait_status);

  ServerOptions options_;
  std::string binary_;
  // Holds the ready files, one per launch.
  std::string scratch_dir_;
  int launches_ = 0;
  std::string ready_file_;
  pid_t pid_ = -1;
  std::string address_;
  // "127.0.0.1:<port>" of the first launch; reused with keep_port.
  std::string first_address_;
  std::shared_ptr<grpc::Channel> channel_;
};

// Describes a waitpid status for messages: "exit code 3", "signal 9".
std::string DescribeWaitStatus(int wait_status);

}  // namespace weir::test

#endif  // WEIR_TESTS_SERVER_PROCESS_H_
