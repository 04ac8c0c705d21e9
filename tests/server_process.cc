#include "tests/server_process.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"

namespace weir::test {
namespace {

// How often the ready file and the child's state are polled.
constexpr absl::Duration kPollInterval = absl::Milliseconds(10);

absl::Status ErrnoStatus(absl::string_view what, int err) {
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(err)));
}

const char* EnvOrNull(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr && value[0] != '\0' ? value : nullptr;
}

bool IsExecutable(const std::string& path) {
  return access(path.c_str(), X_OK) == 0;
}

// The content of `path` with surrounding whitespace removed, or "" if it
// cannot be read.
std::string ReadTrimmed(const std::string& path) {
  std::ifstream in(path);
  if (!in) return "";
  std::stringstream content;
  content << in.rdbuf();
  return std::string(absl::StripAsciiWhitespace(content.str()));
}

}  // namespace

std::string DescribeWaitStatus(int wait_status) {
  if (WIFEXITED(wait_status)) {
    return absl::StrCat("exit code ", WEXITSTATUS(wait_status));
  }
  if (WIFSIGNALED(wait_status)) {
    return absl::StrCat("signal ", WTERMSIG(wait_status), " (",
                        strsignal(WTERMSIG(wait_status)), ")");
  }
  return absl::StrCat("wait status ", wait_status);
}

absl::StatusOr<std::string> MakeTempDir(absl::string_view prefix) {
  const char* root = EnvOrNull("TEST_TMPDIR");
  if (root == nullptr) root = EnvOrNull("TMPDIR");
  if (root == nullptr) root = "/tmp";
  std::string templ = absl::StrCat(root, "/", prefix, "-XXXXXX");
  if (mkdtemp(templ.data()) == nullptr) {
    return ErrnoStatus(absl::StrCat("mkdtemp ", templ), errno);
  }
  return templ;
}

absl::StatusOr<std::string> ServerBinaryPath() {
  if (const char* explicit_path = EnvOrNull("WEIR_SERVER_BINARY")) {
    return std::string(explicit_path);
  }
  std::vector<std::string> roots;
  for (const char* var : {"TEST_SRCDIR", "RUNFILES_DIR"}) {
    if (const char* root = EnvOrNull(var)) roots.push_back(root);
  }
  // A binary started by hand or by `bazel run` (the soak benchmark) may have
  // neither variable: its runfiles lie beside it.
  char self[4096];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n > 0)
    roots.push_back(absl::StrCat(absl::string_view(self, n), ".runfiles"));
  std::vector<std::string> tried;
  for (const std::string& root : roots) {
    std::string path = absl::StrCat(root, "/weir/rpc/weir_server");
    if (IsExecutable(path)) return path;
    tried.push_back(path);
  }
  return absl::NotFoundError(
      absl::StrCat("weir_server not found in the runfiles (tried: ",
                   absl::StrJoin(tried, ", "),
                   "); declare data = [\"//rpc:weir_server\"] or set "
                   "WEIR_SERVER_BINARY"));
}

bool ServerProcess::Exited() const {
  if (pid_ <= 0) return false;
  siginfo_t info{};
  // WNOWAIT: looks without reaping; kill(pid, 0) would still succeed on an
  // exited, unreaped child.
  if (waitid(P_PID, pid_, &info, WEXITED | WNOHANG | WNOWAIT) != 0) {
    return true;
  }
  return info.si_pid == pid_;
}

absl::StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::Start(
    ServerOptions options) {
  absl::StatusOr<std::string> binary = ServerBinaryPath();
  if (!binary.ok()) return binary.status();
  if (options.data_dir.empty()) {
    absl::StatusOr<std::string> dir = MakeTempDir("weir-data");
    if (!dir.ok()) return dir.status();
    options.data_dir = *std::move(dir);
  }
  absl::StatusOr<std::string> scratch = MakeTempDir("weir-server");
  if (!scratch.ok()) return scratch.status();
  std::unique_ptr<ServerProcess> server(new ServerProcess(
      std::move(options), *std::move(binary), *std::move(scratch)));
  absl::Status launched = server->Launch();
  if (!launched.ok()) return launched;
  return server;
}

ServerProcess::ServerProcess(ServerOptions options, std::string binary,
                             std::string scratch_dir)
    : options_(std::move(options)),
      binary_(std::move(binary)),
      scratch_dir_(std::move(scratch_dir)) {}

ServerProcess::~ServerProcess() {
  Kill();
  // The ready files and their directory are this object's own (the data
  // directory is left alone: a caller may want to look at it).
  for (int i = 1; i <= launches_; ++i) {
    unlink(absl::StrCat(scratch_dir_, "/ready-", i).c_str());
  }
  rmdir(scratch_dir_.c_str());
}

std::unique_ptr<weir::v1::Weir::Stub> ServerProcess::NewStub() const {
  return weir::v1::Weir::NewStub(channel_);
}

absl::Status ServerProcess::Launch() {
  ready_file_ = absl::StrCat(scratch_dir_, "/ready-", ++launches_);
  unlink(ready_file_.c_str());
  address_.clear();
  channel_.reset();

  const std::string listen = options_.keep_port && !first_address_.empty()
                                 ? first_address_
                                 : "127.0.0.1:0";
  std::vector<std::string> args = {binary_,
                                   "--listen",
                                   listen,
                                   "--data-dir",
                                   options_.data_dir,
                                   "--durability",
                                   options_.durability,
                                   "--ready-file",
                                   ready_file_};
  args.insert(args.end(), options_.extra_args.begin(),
              options_.extra_args.end());
  std::cerr << "[server_process] starting: " << absl::StrJoin(args, " ")
            << std::endl;

  // Everything the child needs is prepared before fork: between fork and
  // exec only async-signal-safe calls are allowed.
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  int dev_null = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (dev_null < 0) return ErrnoStatus("open /dev/null", errno);
  struct rlimit fd_limit;
  int max_fd = 1024;
  if (getrlimit(RLIMIT_NOFILE, &fd_limit) == 0 &&
      fd_limit.rlim_cur != RLIM_INFINITY) {
    max_fd = static_cast<int>(std::min<rlim_t>(fd_limit.rlim_cur, 65536));
  }
  const pid_t parent = getpid();

  const pid_t pid = fork();
  if (pid < 0) {
    int err = errno;
    close(dev_null);
    return ErrnoStatus("fork", err);
  }
  if (pid == 0) {
    // The server must not outlive the test, even if the test crashes.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    // Start from the defaults a shell would give the server.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    struct sigaction default_action;
    std::memset(&default_action, 0, sizeof(default_action));
    default_action.sa_handler = SIG_DFL;
    for (int sig : {SIGPIPE, SIGTERM, SIGINT, SIGHUP}) {
      sigaction(sig, &default_action, nullptr);
    }
    dup2(dev_null, STDIN_FILENO);
    for (int fd = STDERR_FILENO + 1; fd < max_fd; ++fd) close(fd);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(dev_null);
  pid_ = pid;
  return WaitUntilReady();
}

absl::Status ServerProcess::WaitUntilReady() {
  const absl::Time deadline = absl::Now() + options_.ready_timeout;
  while (true) {
    int wait_status = 0;
    if (TryReap(&wait_status)) {
      return absl::InternalError(
          absl::StrCat("weir_server exited before it was ready: ",
                       DescribeWaitStatus(wait_status)));
    }
    // The server writes the file by rename, so existing content is complete.
    std::string address = ReadTrimmed(ready_file_);
    if (!address.empty()) {
      address_ = std::move(address);
      if (first_address_.empty()) first_address_ = address_;
      grpc::ChannelArguments channel_args;
      channel_args.SetMaxReceiveMessageSize(-1);
      channel_ = grpc::CreateCustomChannel(
          address_, grpc::InsecureChannelCredentials(), channel_args);
      std::cerr << "[server_process] pid " << pid_ << " serving on " << address_
                << std::endl;
      return absl::OkStatus();
    }
    if (absl::Now() >= deadline) {
      Kill();
      return absl::DeadlineExceededError(
          absl::StrCat("weir_server did not write ", ready_file_, " within ",
                       absl::FormatDuration(options_.ready_timeout)));
    }
    absl::SleepFor(kPollInterval);
  }
}

bool ServerProcess::TryReap(int* wait_status) {
  if (pid_ <= 0) return false;
  pid_t reaped;
  do {
    reaped = waitpid(pid_, wait_status, WNOHANG);
  } while (reaped < 0 && errno == EINTR);
  if (reaped == pid_) {
    pid_ = -1;
    return true;
  }
  return false;
}

void ServerProcess::Kill() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  int wait_status = 0;
  while (waitpid(pid_, &wait_status, 0) < 0 && errno == EINTR) {
  }
  std::cerr << "[server_process] killed pid " << pid_ << std::endl;
  pid_ = -1;
}

absl::StatusOr<int> ServerProcess::Stop(absl::Duration timeout) {
  if (pid_ <= 0) {
    return absl::FailedPreconditionError("weir_server is not running");
  }
  const pid_t pid = pid_;
  if (kill(pid, SIGTERM) != 0) return ErrnoStatus("kill SIGTERM", errno);
  const absl::Time deadline = absl::Now() + timeout;
  int wait_status = 0;
  while (!TryReap(&wait_status)) {
    if (absl::Now() >= deadline) {
      Kill();
      return absl::DeadlineExceededError(
          absl::StrCat("weir_server (pid ", pid, ") did not exit within ",
                       absl::FormatDuration(timeout), " of SIGTERM"));
    }
    absl::SleepFor(kPollInterval);
  }
  std::cerr << "[server_process] pid " << pid << " stopped after "
            << absl::Now() - (deadline - timeout) << ": "
            << DescribeWaitStatus(wait_status) << std::endl;
  if (!WIFEXITED(wait_status)) {
    return absl::InternalError(
        absl::StrCat("weir_server ended by ", DescribeWaitStatus(wait_status)));
  }
  return WEXITSTATUS(wait_status);
}

absl::Status ServerProcess::Freeze() {
  if (pid_ <= 0) {
    return absl::FailedPreconditionError("weir_server is not running");
  }
  if (kill(pid_, SIGSTOP) != 0) return ErrnoStatus("kill SIGSTOP", errno);
  int wait_status = 0;
  pid_t reaped;
  do {
    reaped = waitpid(pid_, &wait_status, WUNTRACED);
  } while (reaped < 0 && errno == EINTR);
  if (reaped < 0) return ErrnoStatus("waitpid", errno);
  if (!WIFSTOPPED(wait_status)) {
    pid_ = -1;
    return absl::InternalError(
        absl::StrCat("weir_server ended by ", DescribeWaitStatus(wait_status)));
  }
  return absl::OkStatus();
}

absl::Status ServerProcess::Thaw() {
  if (pid_ <= 0) {
    return absl::FailedPreconditionError("weir_server is not running");
  }
  if (kill(pid_, SIGCONT) != 0) return ErrnoStatus("kill SIGCONT", errno);
  return absl::OkStatus();
}

absl::Status ServerProcess::Restart() {
  if (running()) {
    absl::StatusOr<int> code = Stop();
    if (!code.ok()) return code.status();
    if (*code != 0) {
      return absl::InternalError(
          absl::StrCat("weir_server exited with code ", *code, " on SIGTERM"));
    }
  }
  return Launch();
}

}  // namespace weir::test
