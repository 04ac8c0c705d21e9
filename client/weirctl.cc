// weirctl: a command line client for a Weir server.
//
//   weirctl [--server ADDR] [--timeout SECONDS] COMMAND [ARGS...]
//
// `weirctl --help` lists the commands and `weirctl COMMAND --help` describes
// one. Output is line-oriented and tab-separated so that scripts can read it.
// A failed call prints "error: <gRPC code name>: <message>" to stderr and
// exits with status 1; a command line that cannot be parsed exits with 2.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <iostream>
#include <iterator>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/channel.h"
#include "client/client.h"
#include "grpcpp/grpcpp.h"
#include "weir/v1/weir.grpc.pb.h"

namespace weir {
namespace {

// Credit `tail` keeps granted: how many messages may be on their way.
constexpr int64_t kTailCredit = 100;
// A Send batch stops growing at this many body bytes, keeping each request
// under gRPC's default 4 MiB limit on what a server accepts.
constexpr size_t kMaxBatchBytes = size_t{3} << 20;

// Makes bytes printable as one field of a tab-separated line: backslash, tab,
// newline, carriage return and other control bytes are escaped; everything
// else, UTF-8 included, passes through unchanged.
std::string EscapeField(absl::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (const char ch : bytes) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
          absl::StrAppendFormat(&out, "\\x%02x", c);
        } else {
          out.push_back(ch);
        }
    }
  }
  return out;
}

std::string FormatTimeMs(int64_t unix_ms) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::FromUnixMillis(unix_ms),
                          absl::UTCTimeZone());
}

// One line per queue: name, configuration in force, creation time.
std::string FormatQueue(const v1::Queue& queue) {
  const v1::QueueConfig& config = queue.config();
  std::string line =
      absl::StrCat("name=", queue.name(),
                   "\tvisibility_timeout_ms=", config.visibility_timeout_ms(),
                   "\tmax_message_bytes=", config.max_message_bytes(),
                   "\tdelay_ms=", config.delay_ms(),
                   "\tdedup_window_ms=", config.dedup_window_ms());
  if (config.retention_max_age_ms() > 0) {
    absl::StrAppend(&line,
                    "\tretention_max_age_ms=", config.retention_max_age_ms());
  }
  if (config.retention_keep_deleted_for_ms() > 0) {
    absl::StrAppend(&line, "\tretention_keep_deleted_for_ms=",
                    config.retention_keep_deleted_for_ms());
  }
  if (!config.dead_letter_queue().empty()) {
    absl::StrAppend(&line, "\tmax_receives=", config.max_receives(),
                    "\tdead_letter_queue=", config.dead_letter_queue());
  }
  absl::StrAppend(&line,
                  "\tcreate_time=", FormatTimeMs(queue.create_time_ms()));
  return line;
}

// "<gRPC code name>: <message>", e.g. "NOT_FOUND: queue ...".
std::string FormatStatus(const absl::Status& status) {
  return absl::StrCat(StatusCodeName(static_cast<int>(status.code())), ": ",
                      status.message());
}

// Prints a failed call the way every command reports errors; returns the exit
// status for it.
int ReportError(const absl::Status& status) {
  std::cerr << "error: " << FormatStatus(status) << "\n";
  return 1;
}

int ReportInvalidArgument(const std::string& message) {
  return ReportError(absl::InvalidArgumentError(message));
}

// Splits the KEY=VALUE strings of --attr into `attributes`.
bool ParseAttributes(const std::vector<std::string>& pairs,
                     std::map<std::string, std::string>& attributes,
                     std::string& error) {
  for (const std::string& pair : pairs) {
    const size_t eq = pair.find('=');
    if (eq == std::string::npos || eq == 0) {
      error = absl::StrCat("--attr \"", pair, "\" is not KEY=VALUE");
      return false;
    }
    attributes[pair.substr(0, eq)] = pair.substr(eq + 1);
  }
  return true;
}

// Parses a log position: "earliest", "latest", "offset:N" or "time:UNIX_MS".
bool ParsePosition(const std::string& text, v1::LogPosition& position,
                   std::string& error) {
  const auto number = [&](absl::string_view digits, auto* out) {
    return !digits.empty() && absl::SimpleAtoi(digits, out);
  };
  uint64_t offset;
  int64_t time_ms;
  if (text == "earliest") {
    position.set_earliest(true);
  } else if (text == "latest") {
    position.set_latest(true);
  } else if (absl::StartsWith(text, "offset:") &&
             number(absl::string_view(text).substr(7), &offset)) {
    position.set_offset(offset);
  } else if (absl::StartsWith(text, "time:") &&
             number(absl::string_view(text).substr(5), &time_ms)) {
    position.set_time_ms(time_ms);
  } else {
    error =
        absl::StrCat("position \"", text,
                     "\" is not earliest, latest, offset:N or time:UNIX_MS");
    return false;
  }
  return true;
}

std::string FormatGroup(const v1::Group& group) {
  return absl::StrCat("group=", group.name(), "\tcursor=", group.cursor(),
                      "\tdelete_floor=", group.delete_floor(),
                      "\tlag=", group.lag(), "\tin_flight=", group.in_flight());
}

// One message on one line: offset, (receive count, receipt,) ordering key,
// attributes sorted by key, and last the escaped body.
std::string FormatMessage(const v1::Message& message, bool leased) {
  std::string line = absl::StrCat("offset=", message.offset());
  if (leased) {
    absl::StrAppend(&line, "\treceive_count=", message.receive_count(),
                    "\treceipt=", message.receipt_handle());
  } else {
    absl::StrAppend(&line,
                    "\tenqueue_time=", FormatTimeMs(message.enqueue_time_ms()));
  }
  if (!message.ordering_key().empty()) {
    absl::StrAppend(&line,
                    "\tordering_key=", EscapeField(message.ordering_key()));
  }
  const std::map<std::string, std::string> sorted(message.attributes().begin(),
                                                  message.attributes().end());
  for (const auto& [key, value] : sorted) {
    absl::StrAppend(&line, "\tattr:", EscapeField(key), "=",
                    EscapeField(value));
  }
  absl::StrAppend(&line, "\t", EscapeField(message.body()));
  return line;
}

struct CreateArgs {
  std::string queue;
  int64_t visibility_timeout_ms = 0;
  int64_t max_message_bytes = 0;
  int64_t delay_ms = 0;
  int64_t retention_max_age_ms = 0;
  int64_t retention_keep_deleted_for_ms = 0;
  int32_t max_receives = 0;
  std::string dead_letter_queue;
  int64_t dedup_window_ms = 0;
};

v1::QueueConfig ConfigOf(const CreateArgs& args) {
  v1::QueueConfig config;
  config.set_visibility_timeout_ms(args.visibility_timeout_ms);
  config.set_max_message_bytes(args.max_message_bytes);
  config.set_delay_ms(args.delay_ms);
  config.set_retention_max_age_ms(args.retention_max_age_ms);
  config.set_retention_keep_deleted_for_ms(args.retention_keep_deleted_for_ms);
  config.set_max_receives(args.max_receives);
  config.set_dead_letter_queue(args.dead_letter_queue);
  config.set_dedup_window_ms(args.dedup_window_ms);
  return config;
}

// Adds the queue configuration options to `cmd` (create and update share
// them). Returns each option with the QueueConfig field it sets.
std::vector<std::pair<CLI::Option*, std::string>> AddConfigOptions(
    CLI::App* cmd, CreateArgs* args) {
  return {
      {cmd->add_option("--visibility-timeout", args->visibility_timeout_ms,
                       "Default lease in ms (0 = server default, 30 s)"),
       "visibility_timeout_ms"},
      {cmd->add_option("--max-message-bytes", args->max_message_bytes,
                       "Largest message in bytes (0 = server default)"),
       "max_message_bytes"},
      {cmd->add_option("--delay", args->delay_ms,
                       "Default delay of sent messages in ms"),
       "delay_ms"},
      {cmd->add_option("--retention-max-age", args->retention_max_age_ms,
                       "Remove messages older than this many ms (0 = never)"),
       "retention_max_age_ms"},
      {cmd->add_option(
           "--keep-deleted-for", args->retention_keep_deleted_for_ms,
           "Keep messages every group deleted this many ms, for replay"),
       "retention_keep_deleted_for_ms"},
      {cmd->add_option("--max-receives", args->max_receives,
                       "Dead-letter a message after this many deliveries "
                       "(with --dead-letter-queue; 0 and '' turn it off)"),
       "max_receives"},
      {cmd->add_option("--dead-letter-queue", args->dead_letter_queue,
                       "Where dead letters go (an existing queue)"),
       "dead_letter_queue"},
      {cmd->add_option("--dedup-window", args->dedup_window_ms,
                       "How long a dedup id is remembered, in ms "
                       "(0 = server default, 5 min)"),
       "dedup_window_ms"},
  };
}

struct SendArgs {
  std::string queue;
  std::string body;
  // True when BODY was given and is not "-".
  bool body_given = false;
  bool lines = false;
  std::vector<std::string> attributes;
  int64_t delay_ms = 0;
  bool delay_given = false;
  std::string ordering_key;
  std::string dedup_id;
};

struct ReceiveArgs {
  std::string queue;
  std::string group;
  int32_t max_messages = 1;
  int64_t visibility_timeout_ms = 0;
  bool visibility_timeout_given = false;
  int64_t wait_ms = 0;
};

struct TailArgs {
  std::string queue;
  std::string group;
  bool delete_messages = false;
  int64_t visibility_timeout_ms = 0;
  bool visibility_timeout_given = false;
  // 0 = until interrupted or the stream ends.
  int64_t count = 0;
};

// The commands, each one or a few calls on one client. Every method returns
// the process exit status.
class Session {
 public:
  explicit Session(std::unique_ptr<Client> client)
      : client_(std::move(client)) {}

  int CreateQueue(const CreateArgs& args) {
    absl::StatusOr<v1::CreateQueueResponse> response =
        client_->CreateQueue(args.queue, ConfigOf(args));
    if (!response.ok()) return ReportError(response.status());
    std::cout << FormatQueue(response->queue())
              << "\tcreated=" << (response->created() ? "true" : "false")
              << "\n";
    return 0;
  }

  // Sets the fields of `args` named in `paths` (QueueConfig field names).
  int UpdateQueue(const CreateArgs& args,
                  const std::vector<std::string>& paths) {
    absl::StatusOr<v1::Queue> response =
        client_->UpdateQueue(args.queue, ConfigOf(args), paths);
    if (!response.ok()) return ReportError(response.status());
    std::cout << FormatQueue(*response) << "\n";
    return 0;
  }

  int ListQueues(const std::string& prefix) {
    absl::StatusOr<std::vector<v1::Queue>> queues = client_->ListQueues(prefix);
    if (!queues.ok()) return ReportError(queues.status());
    for (const v1::Queue& queue : *queues) {
      std::cout << FormatQueue(queue) << "\n";
    }
    return 0;
  }

  int GetQueue(const std::string& queue) {
    absl::StatusOr<v1::Queue> response = client_->GetQueue(queue);
    if (!response.ok()) return ReportError(response.status());
    std::cout << FormatQueue(*response) << "\n";
    return 0;
  }

  int GetQueueStats(const std::string& queue, const std::string& group) {
    absl::StatusOr<v1::QueueStats> stats = client_->GetQueueStats(queue, group);
    if (!stats.ok()) return ReportError(stats.status());
    std::cout << "ready=" << stats->ready() << "\n"
              << "in_flight=" << stats->in_flight() << "\n"
              << "delayed=" << stats->delayed() << "\n"
              << "oldest_ready_age_ms=" << stats->oldest_ready_age_ms() << "\n"
              << "sent_total=" << stats->sent_total() << "\n"
              << "received_total=" << stats->received_total() << "\n"
              << "deleted_total=" << stats->deleted_total() << "\n"
              << "next_offset=" << stats->next_offset() << "\n";
    return 0;
  }

  int DeleteQueue(const std::string& queue) {
    const absl::Status status = client_->DeleteQueue(queue);
    if (!status.ok()) return ReportError(status);
    std::cout << "deleted queue " << queue << "\n";
    return 0;
  }

  int PurgeQueue(const std::string& queue) {
    absl::StatusOr<uint64_t> purged = client_->PurgeQueue(queue);
    if (!purged.ok()) return ReportError(purged.status());
    std::cout << "purged=" << *purged << "\n";
    return 0;
  }

  // Sends one message, or one per stdin line with --lines, in batches that
  // respect the server's limits; prints each offset on a line of its own.
  int Send(const SendArgs& args) {
    std::map<std::string, std::string> attributes;
    std::string error;
    if (!ParseAttributes(args.attributes, attributes, error)) {
      return ReportInvalidArgument(error);
    }
    if (args.lines && args.body_given) {
      return ReportInvalidArgument(
          "--lines reads messages from stdin: omit BODY or pass -");
    }
    std::vector<std::string> bodies;
    if (args.body_given) {
      bodies.push_back(args.body);
    } else if (args.lines) {
      for (std::string line; std::getline(std::cin, line);) {
        bodies.push_back(std::move(line));
      }
    } else {
      bodies.emplace_back(std::istreambuf_iterator<char>(std::cin),
                          std::istreambuf_iterator<char>());
    }

    size_t next = 0;
    while (next < bodies.size()) {
      std::vector<v1::SendEntry> entries;
      size_t batch_bytes = 0;
      while (next < bodies.size() &&
             entries.size() < static_cast<size_t>(Client::kMaxBatchEntries) &&
             (entries.empty() ||
              batch_bytes + bodies[next].size() <= kMaxBatchBytes)) {
        batch_bytes += bodies[next].size();
        v1::SendEntry& entry = entries.emplace_back();
        entry.set_body(std::move(bodies[next++]));
        entry.mutable_attributes()->insert(attributes.begin(),
                                           attributes.end());
        if (args.delay_given) entry.set_delay_ms(args.delay_ms);
        entry.set_ordering_key(args.ordering_key);
        entry.set_dedup_id(args.dedup_id);
      }
      absl::StatusOr<std::vector<uint64_t>> offsets =
          client_->Send(args.queue, entries);
      if (!offsets.ok()) return ReportError(offsets.status());
      for (const uint64_t offset : *offsets) std::cout << offset << "\n";
    }
    return 0;
  }

  // Prints one line per message (FormatMessage).
  int Receive(const ReceiveArgs& args) {
    ReceiveOptions options;
    options.group = args.group;
    options.max_messages = args.max_messages;
    if (args.visibility_timeout_given) {
      options.visibility_timeout =
          absl::Milliseconds(args.visibility_timeout_ms);
    }
    options.wait = absl::Milliseconds(args.wait_ms);
    absl::StatusOr<std::vector<v1::Message>> messages =
        client_->Receive(args.queue, options);
    if (!messages.ok()) return ReportError(messages.status());
    for (const v1::Message& message : *messages) {
      std::cout << FormatMessage(message, /*leased=*/true) << "\n";
    }
    return 0;
  }

  // Prints messages as the server pushes them over Subscribe, one line each
  // as Receive does, flushed at once; with --delete, deletes each once
  // printed. Without --delete the messages stay leased to the stream and the
  // server releases them when tail exits. Ends after args.count messages
  // (then waits for the deletes to be confirmed), or when the stream ends.
  int Tail(const TailArgs& args) {
    if (args.count < 0) {
      return ReportInvalidArgument("-n must not be negative");
    }
    grpc::ClientContext context;
    std::unique_ptr<
        grpc::ClientReaderWriter<v1::SubscribeRequest, v1::SubscribeResponse>>
        stream = client_->stub().Subscribe(&context);
    // How many messages may still be granted: the rest of -n, or unbounded.
    int64_t grantable =
        args.count > 0 ? args.count : std::numeric_limits<int64_t>::max();
    const auto grant = [&grantable](int64_t want) {
      const int64_t credit = std::min(want, grantable);
      grantable -= credit;
      return static_cast<int32_t>(credit);
    };
    v1::SubscribeRequest first;
    first.mutable_start()->set_queue(args.queue);
    first.mutable_start()->set_group(args.group);
    if (args.visibility_timeout_given) {
      first.mutable_start()->set_visibility_timeout_ms(
          args.visibility_timeout_ms);
    }
    first.set_credit(grant(kTailCredit));
    int exit_code = 0;
    int64_t printed = 0;
    uint64_t next_request_id = 1;
    // Requests carrying deletes that the server has not answered yet.
    int64_t unanswered = 0;
    bool done = false;
    if (stream->Write(first)) {
      v1::SubscribeResponse response;
      while (!done && stream->Read(&response)) {
        v1::SubscribeRequest request;
        for (const v1::Message& message : response.messages()) {
          std::cout << FormatMessage(message, /*leased=*/true) << std::endl;
          ++printed;
          if (args.delete_messages) {
            request.add_delete_receipt_handles(message.receipt_handle());
          }
        }
        if (response.has_ack()) {
          --unanswered;
          const v1::SubscribeAck& ack = response.ack();
          for (int i = 0; i < ack.delete_results_size(); ++i) {
            const v1::EntryResult& result = ack.delete_results(i);
            if (result.code() == grpc::StatusCode::OK) continue;
            std::cerr << "error: delete: " << StatusCodeName(result.code())
                      << ": " << result.message() << "\n";
            exit_code = 1;
          }
        }
        request.set_credit(grant(response.messages_size()));
        if (request.delete_receipt_handles_size() > 0) {
          request.set_request_id(next_request_id++);
          ++unanswered;
        }
        if ((request.credit() > 0 ||
             request.delete_receipt_handles_size() > 0) &&
            !stream->Write(request)) {
          break;  // The stream broke; Finish says why.
        }
        done = args.count > 0 && printed >= args.count && unanswered == 0;
      }
    }
    if (done) {
      // Everything asked for is printed and deleted: close the stream. The
      // server releases what it still leases to it (nothing with --delete).
      stream->WritesDone();
      context.TryCancel();
      stream->Finish();
      return exit_code;
    }
    const grpc::Status status = stream->Finish();
    if (!status.ok()) return ReportError(FromGrpcStatus(status));
    if (args.count > 0 && printed < args.count) {
      std::cerr << "error: the server ended the stream after " << printed
                << " of " << args.count << " messages\n";
      return 1;
    }
    return exit_code;
  }

  int Redrive(const std::string& dlq, const std::string& to_queue,
              int32_t max_messages) {
    absl::StatusOr<uint64_t> moved =
        client_->Redrive(dlq, to_queue, max_messages);
    if (!moved.ok()) return ReportError(moved.status());
    std::cout << "moved=" << *moved << "\n";
    return 0;
  }

  int CreateGroup(const std::string& queue, const std::string& group,
                  const v1::LogPosition& start) {
    absl::StatusOr<v1::Group> response =
        client_->CreateGroup(queue, group, start);
    if (!response.ok()) return ReportError(response.status());
    std::cout << FormatGroup(*response) << "\n";
    return 0;
  }

  int SeekGroup(const std::string& queue, const std::string& group,
                const v1::LogPosition& to) {
    absl::StatusOr<v1::Group> response = client_->SeekGroup(queue, group, to);
    if (!response.ok()) return ReportError(response.status());
    std::cout << FormatGroup(*response) << "\n";
    return 0;
  }

  int DeleteGroup(const std::string& queue, const std::string& group) {
    const absl::Status status = client_->DeleteGroup(queue, group);
    if (!status.ok()) return ReportError(status);
    std::cout << "deleted group " << group << "\n";
    return 0;
  }

  int ListGroups(const std::string& queue) {
    absl::StatusOr<std::vector<v1::Group>> groups = client_->ListGroups(queue);
    if (!groups.ok()) return ReportError(groups.status());
    for (const v1::Group& group : *groups) {
      std::cout << FormatGroup(group) << "\n";
    }
    return 0;
  }

  // Prints up to `max_messages` messages from `from` on, one per line, without
  // leasing them.
  int Read(const std::string& queue, const v1::LogPosition& from,
           int32_t max_messages) {
    absl::StatusOr<v1::ReadResponse> response =
        client_->Read(queue, from, max_messages);
    if (!response.ok()) return ReportError(response.status());
    for (const v1::Message& message : response->messages()) {
      std::cout << FormatMessage(message, /*leased=*/false) << "\n";
    }
    std::cerr << "next_offset=" << response->next_offset() << "\n";
    return 0;
  }

  // Prints "<receipt>\tOK" or "<receipt>\terror: <code>: <message>" per
  // receipt; exits with 1 when any receipt failed.
  int Delete(const std::string& queue,
             const std::vector<std::string>& receipts) {
    absl::StatusOr<std::vector<absl::Status>> results =
        client_->Delete(queue, receipts);
    if (!results.ok()) return ReportError(results.status());
    bool all_ok = true;
    for (size_t i = 0; i < results->size(); ++i) {
      const absl::Status& result = (*results)[i];
      std::cout << receipts[i] << "\t";
      if (result.ok()) {
        std::cout << "OK\n";
      } else {
        all_ok = false;
        std::cout << "error: " << FormatStatus(result) << "\n";
      }
    }
    return all_ok ? 0 : 1;
  }

  int ChangeVisibility(const std::string& queue, const std::string& receipt,
                       int64_t timeout_ms) {
    v1::VisibilityChange change;
    change.set_receipt_handle(receipt);
    change.set_visibility_timeout_ms(timeout_ms);
    absl::StatusOr<std::vector<absl::Status>> results =
        client_->ChangeVisibility(queue, {change});
    if (!results.ok()) return ReportError(results.status());
    if (!results->front().ok()) {
      std::cerr << "error: " << FormatStatus(results->front()) << "\n";
      return 1;
    }
    std::cout << "OK\n";
    return 0;
  }

 private:
  std::unique_ptr<Client> client_;
};

int Main(int argc, char** argv) {
  CLI::App app{"Command line client for a Weir message queue server.",
               "weirctl"};
  app.require_subcommand(1);
  // Global options are accepted after the command too.
  app.fallthrough();

  std::string server = kDefaultServerAddress;
  app.add_option("--server", server, "Server address, HOST:PORT")
      ->envname(kServerEnvVar)
      ->capture_default_str();
  double timeout_s = 30;
  app.add_option("--timeout", timeout_s,
                 "Deadline of each call in seconds; receive adds its --wait, "
                 "tail has none")
      ->check(CLI::Range(0.001, 86400.0))
      ->capture_default_str();

  // Set by the callback of whichever command was given.
  std::function<int(Session&)> run;

  CreateArgs create;
  CLI::App* create_cmd = app.add_subcommand(
      "create",
      "Create a queue; succeeds if it exists with the same configuration");
  create_cmd->add_option("QUEUE", create.queue, "Queue name")->required();
  AddConfigOptions(create_cmd, &create);
  create_cmd->callback(
      [&] { run = [&](Session& s) { return s.CreateQueue(create); }; });

  CreateArgs update;
  CLI::App* update_cmd = app.add_subcommand(
      "update",
      "Change a queue's configuration; only the options given change");
  update_cmd->add_option("QUEUE", update.queue, "Queue name")->required();
  const std::vector<std::pair<CLI::Option*, std::string>> update_fields =
      AddConfigOptions(update_cmd, &update);
  update_cmd->callback([&] {
    run = [&](Session& s) {
      std::vector<std::string> paths;
      for (const auto& [option, path] : update_fields) {
        if (option->count() > 0) paths.push_back(path);
      }
      if (paths.empty()) {
        return ReportInvalidArgument("update: give at least one option");
      }
      return s.UpdateQueue(update, paths);
    };
  });

  std::string prefix;
  CLI::App* list_cmd = app.add_subcommand("list", "List queues");
  list_cmd->add_option("--prefix", prefix, "Only queues whose names start so");
  list_cmd->callback(
      [&] { run = [&](Session& s) { return s.ListQueues(prefix); }; });

  // Commands that take just a queue name.
  std::string queue;
  const auto add_queue_command =
      [&](const std::string& name, const std::string& description,
          int (Session::*method)(const std::string&)) {
        CLI::App* cmd = app.add_subcommand(name, description);
        cmd->add_option("QUEUE", queue, "Queue name")->required();
        cmd->callback([&run, &queue, method] {
          run = [&queue, method](Session& s) { return (s.*method)(queue); };
        });
      };
  add_queue_command("get", "Show a queue's configuration", &Session::GetQueue);
  add_queue_command("delete-queue", "Delete a queue and all its messages",
                    &Session::DeleteQueue);
  add_queue_command("purge", "Delete all messages, keeping the queue",
                    &Session::PurgeQueue);

  std::string stats_queue;
  std::string stats_group;
  CLI::App* stats_cmd =
      app.add_subcommand("stats", "Show a queue's message counts");
  stats_cmd->add_option("QUEUE", stats_queue, "Queue name")->required();
  stats_cmd->add_option("--group", stats_group,
                        "Consumer group (default: the default group)");
  stats_cmd->callback([&] {
    run = [&](Session& s) { return s.GetQueueStats(stats_queue, stats_group); };
  });

  SendArgs send;
  CLI::App* send_cmd = app.add_subcommand(
      "send", "Send a message; prints its offset (one per line)");
  send_cmd->add_option("QUEUE", send.queue, "Queue name")->required();
  send_cmd->add_option("BODY", send.body,
                       "Message body; omitted or - reads stdin");
  send_cmd->add_flag("--lines", send.lines,
                     "Send each line of stdin as a message of its own");
  send_cmd
      ->add_option("--attr", send.attributes,
                   "Attribute of every message sent; repeatable")
      ->type_name("KEY=VALUE")
      ->allow_extra_args(false);
  CLI::Option* send_delay = send_cmd->add_option(
      "--delay", send.delay_ms, "Invisible for this many ms after sending");
  send_cmd->add_option("--ordering-key", send.ordering_key,
                       "Deliver messages of this key in order, one at a time");
  send_cmd->add_option("--dedup-id", send.dedup_id,
                       "Send nothing if this id was sent within the window");
  send_cmd->callback([&] {
    send.body_given = send_cmd->count("BODY") > 0 && send.body != "-";
    send.delay_given = send_delay->count() > 0;
    run = [&](Session& s) { return s.Send(send); };
  });

  ReceiveArgs receive;
  CLI::App* receive_cmd = app.add_subcommand(
      "receive",
      "Lease messages; prints offset, receive count, receipt, attributes "
      "and body, tab-separated");
  receive_cmd->add_option("QUEUE", receive.queue, "Queue name")->required();
  receive_cmd->add_option("-n,--max-messages", receive.max_messages,
                          "Most messages to receive (1..1000)");
  CLI::Option* receive_visibility = receive_cmd->add_option(
      "--visibility-timeout", receive.visibility_timeout_ms,
      "Lease in ms (default: the queue's)");
  receive_cmd->add_option("--wait", receive.wait_ms,
                          "Wait up to this many ms for a message (0..20000)");
  receive_cmd->add_option("--group", receive.group,
                          "Consumer group (default: the default group)");
  receive_cmd->callback([&] {
    receive.visibility_timeout_given = receive_visibility->count() > 0;
    run = [&](Session& s) { return s.Receive(receive); };
  });

  std::string delete_queue;
  std::vector<std::string> delete_receipts;
  CLI::App* delete_cmd = app.add_subcommand(
      "delete", "Delete received messages; prints OK or the error per receipt");
  delete_cmd->add_option("QUEUE", delete_queue, "Queue name")->required();
  delete_cmd->add_option("RECEIPT", delete_receipts, "Receipt handles")
      ->required();
  delete_cmd->callback([&] {
    run = [&](Session& s) { return s.Delete(delete_queue, delete_receipts); };
  });

  std::string change_queue;
  std::string change_receipt;
  int64_t change_timeout_ms = 0;
  CLI::App* change_cmd = app.add_subcommand(
      "change-visibility", "Extend a lease, or release the message with 0");
  change_cmd->add_option("QUEUE", change_queue, "Queue name")->required();
  change_cmd->add_option("RECEIPT", change_receipt, "Receipt handle")
      ->required();
  change_cmd
      ->add_option("TIMEOUT_MS", change_timeout_ms,
                   "New lease from now in ms; 0 releases the message")
      ->required();
  change_cmd->callback([&] {
    run = [&](Session& s) {
      return s.ChangeVisibility(change_queue, change_receipt,
                                change_timeout_ms);
    };
  });

  TailArgs tail;
  CLI::App* tail_cmd = app.add_subcommand(
      "tail",
      "Print messages as they arrive (pushed over Subscribe), one line each "
      "as receive prints them; --delete consumes them");
  tail_cmd->add_option("QUEUE", tail.queue, "Queue name")->required();
  tail_cmd->add_option("--group", tail.group,
                       "Consumer group (default: the default group)");
  tail_cmd->add_flag("--delete", tail.delete_messages,
                     "Delete each message once printed");
  CLI::Option* tail_visibility = tail_cmd->add_option(
      "--visibility-timeout", tail.visibility_timeout_ms,
      "Lease in ms (default: the queue's); without --delete the messages "
      "are released when tail exits");
  tail_cmd->add_option("-n,--count", tail.count,
                       "Exit after this many messages (default: run until "
                       "interrupted)");
  tail_cmd->callback([&] {
    tail.visibility_timeout_given = tail_visibility->count() > 0;
    run = [&](Session& s) { return s.Tail(tail); };
  });

  std::string redrive_queue;
  std::string redrive_to;
  int32_t redrive_max = 0;
  CLI::App* redrive_cmd = app.add_subcommand(
      "redrive", "Move messages out of a dead-letter queue; prints how many");
  redrive_cmd->add_option("DLQ", redrive_queue, "Dead-letter queue")
      ->required();
  redrive_cmd->add_option("--to", redrive_to,
                          "Target queue (default: where each came from)");
  redrive_cmd->add_option("-n,--max-messages", redrive_max,
                          "Most messages to move (0 = all)");
  redrive_cmd->callback([&] {
    run = [&](Session& s) {
      return s.Redrive(redrive_queue, redrive_to, redrive_max);
    };
  });

  // Consumer groups and replay.
  std::string group_queue;
  std::string group_name;
  std::string position = "earliest";
  v1::LogPosition parsed_position;
  std::string position_error;
  const auto with_position = [&](std::function<int(Session&)> call) {
    return [&, call](Session& s) {
      if (!ParsePosition(position, parsed_position, position_error)) {
        return ReportInvalidArgument(position_error);
      }
      return call(s);
    };
  };
  CLI::App* group_create_cmd = app.add_subcommand(
      "group-create",
      "Create a consumer group (every group sees every message)");
  group_create_cmd->add_option("QUEUE", group_queue, "Queue name")->required();
  group_create_cmd->add_option("GROUP", group_name, "Group name")->required();
  group_create_cmd->add_option(
      "--from", position,
      "Where it starts: earliest, latest, offset:N or time:UNIX_MS");
  group_create_cmd->callback([&] {
    run = with_position([&](Session& s) {
      return s.CreateGroup(group_queue, group_name, parsed_position);
    });
  });
  CLI::App* group_seek_cmd = app.add_subcommand(
      "group-seek", "Move a group's cursor: messages from there on come again");
  group_seek_cmd->add_option("QUEUE", group_queue, "Queue name")->required();
  group_seek_cmd
      ->add_option("GROUP", group_name,
                   "Group name (\"\" for the default group)")
      ->required();
  group_seek_cmd
      ->add_option("--to", position,
                   "earliest, latest, offset:N or time:UNIX_MS")
      ->required();
  group_seek_cmd->callback([&] {
    run = with_position([&](Session& s) {
      return s.SeekGroup(group_queue, group_name, parsed_position);
    });
  });
  CLI::App* group_delete_cmd =
      app.add_subcommand("group-delete", "Delete a consumer group");
  group_delete_cmd->add_option("QUEUE", group_queue, "Queue name")->required();
  group_delete_cmd->add_option("GROUP", group_name, "Group name")->required();
  group_delete_cmd->callback([&] {
    run = [&](Session& s) { return s.DeleteGroup(group_queue, group_name); };
  });
  CLI::App* groups_cmd = app.add_subcommand(
      "groups",
      "List a queue's consumer groups: cursor, floor, lag, in flight");
  groups_cmd->add_option("QUEUE", group_queue, "Queue name")->required();
  groups_cmd->callback(
      [&] { run = [&](Session& s) { return s.ListGroups(group_queue); }; });

  int32_t read_max = 100;
  CLI::App* read_cmd = app.add_subcommand(
      "read", "Read messages by offset or time without leasing them (replay)");
  read_cmd->add_option("QUEUE", group_queue, "Queue name")->required();
  read_cmd->add_option("--from", position,
                       "earliest, latest, offset:N or time:UNIX_MS");
  read_cmd->add_option("-n,--max-messages", read_max,
                       "Most messages (1..1000)");
  read_cmd->callback([&] {
    run = with_position([&](Session& s) {
      return s.Read(group_queue, parsed_position, read_max);
    });
  });

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }

  ClientOptions options;
  options.default_timeout = absl::Seconds(timeout_s);
  absl::StatusOr<std::unique_ptr<Client>> client =
      Client::Connect(server, options);
  if (!client.ok()) return ReportError(client.status());
  Session session(*std::move(client));
  return run(session);
}

}  // namespace
}  // namespace weir

int main(int argc, char** argv) { return weir::Main(argc, argv); }
