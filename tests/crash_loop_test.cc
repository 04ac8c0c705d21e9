// Crash loop under load: producers and consumers (threads, gRPC) run against
// the real weir_server while the test SIGKILLs it at random moments, starts
// it again on the same data directory, and goes on. A ledger records what
// every call was told; a call that failed, or whose outcome is unknown
// because the connection broke mid-call, is recorded as unknown, never as
// acknowledged. After every restart and at the end the ledger is checked
// against the server:
//
// - every message whose Send returned OK is still stored (Read) or was
//   deleted, in every group, by a Delete that returned OK;
// - no message is delivered to a group again after a Delete that returned
//   OK there;
// - no message is leased to two consumers of a group at once;
// - the receive counts of one message in one group only go up;
// - an offset never names two bodies, and a body never gets two offsets.
//
// Quick profile (./weir test): 24 kills per durability mode. Long profile
// (about 6 minutes per mode; one command line):
//   bazel test //tests:crash_loop_test --test_output=streamed
//     --test_env=WEIR_CRASH_LOOP_ITERATIONS=200 --test_timeout=2700
// WEIR_CRASH_LOOP_SEED=<n> replays a run's random choices (the thread
// interleaving still differs); the seed is printed at the start.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "tests/rpc_helpers.h"
#include "tests/server_process.h"
#include "tests/test_random.h"
#include "weir/v1/weir.pb.h"

namespace weir::test {
namespace {

using ::weir::v1::Message;

constexpr char kQueue[] = "crash";
// The default group (empty name) and one more, so each message is consumed
// twice, independently.
const std::vector<std::string>& Groups() {
  static const auto* groups = new std::vector<std::string>{"", "fanout"};
  return *groups;
}
constexpr int kProducers = 2;
// Consumers per group, by position in Groups().
constexpr int kConsumersPerGroup[] = {2, 1};
constexpr int kDefaultIterations = 24;
// Allowed difference between the test's and the server's readings of the
// same wall clock (both processes run on this machine and read
// CLOCK_REALTIME; the API carries milliseconds, truncated).
constexpr int64_t kClockSlackMs = 25;
// Lease durations the consumers ask for.
constexpr int64_t kMinLeaseMs = 300;
constexpr int64_t kMaxLeaseMs = 2500;
constexpr int kMaxViolationsShown = 30;

// One delivery of an offset to a consumer, as the Receive reply said.
struct Delivery {
  int consumer = 0;
  uint32_t receive_count = 0;
  std::string receipt;
  int64_t call_start_ms = 0;  // Test clock, before the call.
  int64_t call_end_ms = 0;    // Test clock, after the reply.
  int64_t granted_ms = 0;     // Server clock: deadline - visibility timeout.
  int64_t deadline_ms = 0;    // As the server reported it.
  // The lease cannot have ended before this (server clock): the deadline,
  // lowered by a release or a shorter extension that may have applied.
  int64_t ends_no_earlier_ms = 0;
  // The lease cannot end after this: raised by extensions that may have
  // applied.
  int64_t ends_no_later_ms = 0;
};

// A Delete of one receipt: what it was told, and when.
struct DeleteEvent {
  uint32_t receive_count = 0;  // Of the delivery whose receipt it named.
  bool ok = false;             // False: the outcome is unknown.
  int64_t call_start_ms = 0;
  int64_t call_end_ms = 0;
};

// What one group's consumers were told about one offset.
struct GroupRecord {
  std::vector<Delivery> deliveries;
  std::vector<DeleteEvent> deletes;

  bool DeletedOk() const {
    for (const DeleteEvent& e : deletes) {
      if (e.ok) return true;
    }
    return false;
  }
  bool MaybeDeleted() const { return !deletes.empty(); }
};

struct OffsetRecord {
  std::string body;
  bool acked = false;  // A Send that returned OK named this offset.
  std::vector<GroupRecord> groups = std::vector<GroupRecord>(Groups().size());
};

// The ledger: everything the server told the clients. Recording is
// thread-safe; the checks that compare calls of different threads run at
// checkpoints, when no call is in flight, so that the order in which
// threads recorded their replies does not matter.
class Ledger {
 public:
  // A Send of `bodies` returned OK with `offsets`.
  void SendOk(const std::vector<std::string>& bodies,
              const std::vector<uint64_t>& offsets) {
    absl::MutexLock lock(&mu_);
    for (size_t i = 0; i < bodies.size(); ++i) {
      ObserveLocked(offsets[i], bodies[i], "Send");
      offsets_[offsets[i]].acked = true;
      ++acked_sends_;
    }
  }
  // A Send failed or its outcome is unknown: each body may or may not be
  // stored.
  void SendUnknown(const std::vector<std::string>& bodies) {
    absl::MutexLock lock(&mu_);
    unknown_sends_ += bodies.size();
  }

  // A Receive asked for leases of `visibility_timeout_ms`; the reply came.
  void Received(int group, int consumer, int64_t visibility_timeout_ms,
                int64_t start_ms, int64_t end_ms,
                const std::vector<Message>& messages) {
    absl::MutexLock lock(&mu_);
    NoteLeaseBoundLocked(end_ms + visibility_timeout_ms);
    for (const Message& m : messages) {
      ObserveLocked(m.offset(), m.body(), "Receive");
      Delivery d;
      d.consumer = consumer;
      d.receive_count = m.receive_count();
      d.receipt = m.receipt_handle();
      d.call_start_ms = start_ms;
      d.call_end_ms = end_ms;
      d.deadline_ms = m.lease_deadline_ms();
      d.granted_ms = m.lease_deadline_ms() - visibility_timeout_ms;
      d.ends_no_earlier_ms = d.deadline_ms;
      d.ends_no_later_ms = d.deadline_ms;
      if (d.granted_ms < start_ms - kClockSlackMs ||
          d.granted_ms > end_ms + kClockSlackMs) {
        ViolationLocked(absl::StrCat(Name(group, m.offset(), d),
                                     ": lease granted at ", d.granted_ms,
                                     " by its deadline, outside the call [",
                                     start_ms, ", ", end_ms, "]"));
      }
      offsets_[m.offset()].groups[group].deliveries.push_back(std::move(d));
      ++deliveries_;
    }
  }
  // A Receive failed or its reply was lost: it may have leased messages
  // for up to end_ms + visibility_timeout_ms.
  void ReceiveUnknown(int64_t visibility_timeout_ms, int64_t end_ms) {
    absl::MutexLock lock(&mu_);
    NoteLeaseBoundLocked(end_ms + visibility_timeout_ms);
  }

  // A Delete naming `receipt` (of a delivery of `offset` to `group`) was
  // sent at start_ms and returned at end_ms: OK for this entry (`ok`), or
  // with an unknown outcome.
  void Deleted(int group, uint64_t offset, const std::string& receipt, bool ok,
               int64_t start_ms, int64_t end_ms) {
    absl::MutexLock lock(&mu_);
    GroupRecord& g = offsets_[offset].groups[group];
    const Delivery* d = FindLocked(g, receipt);
    if (d == nullptr) {
      ViolationLocked(
          absl::StrCat("Delete of an unknown receipt at offset ", offset));
      return;
    }
    g.deletes.push_back(DeleteEvent{d->receive_count, ok, start_ms, end_ms});
    if (ok) ++deletes_;
  }

  // A ChangeVisibility of `receipt` to `visibility_timeout_ms`, sent at
  // start_ms, returned at end_ms; `ok` as for Deleted. Either way it may
  // have applied: the bounds on the lease's end widen.
  void VisibilityChanged(int group, uint64_t offset, const std::string& receipt,
                         int64_t visibility_timeout_ms, int64_t start_ms,
                         int64_t end_ms, bool ok) {
    absl::MutexLock lock(&mu_);
    NoteLeaseBoundLocked(end_ms + visibility_timeout_ms);
    GroupRecord& g = offsets_[offset].groups[group];
    Delivery* d = FindLocked(g, receipt);
    if (d == nullptr) return;
    d->ends_no_earlier_ms =
        ok ? start_ms + visibility_timeout_ms
           : std::min(d->ends_no_earlier_ms, start_ms + visibility_timeout_ms);
    d->ends_no_later_ms =
        std::max(d->ends_no_later_ms, end_ms + visibility_timeout_ms);
  }

  // Checks every pair of deliveries and deletes of one offset in one group.
  // Call when no call is in flight.
  void CheckDeliveries() {
    absl::MutexLock lock(&mu_);
    for (const auto& [offset, rec] : offsets_) {
      for (size_t group = 0; group < rec.groups.size(); ++group) {
        const GroupRecord& g = rec.groups[group];
        for (const Delivery& a : g.deliveries) {
          for (const Delivery& b : g.deliveries) {
            if (&a == &b) continue;
            if (a.receive_count == b.receive_count && &a < &b) {
              ViolationLocked(absl::StrCat(Name(group, offset, b),
                                           ": receive count handed out twice"));
            }
            // Leased again while the earlier lease certainly still ran.
            if (a.receive_count < b.receive_count &&
                b.granted_ms < a.ends_no_earlier_ms - kClockSlackMs) {
              ViolationLocked(absl::StrCat(
                  Name(group, offset, b), ": leased at ", b.granted_ms,
                  " while the lease of receive_count ", a.receive_count,
                  " (consumer ", a.consumer, ") ran until at least ",
                  a.ends_no_earlier_ms));
            }
            // Receive counts go down over time.
            if (a.granted_ms + kClockSlackMs < b.granted_ms &&
                a.receive_count > b.receive_count) {
              ViolationLocked(absl::StrCat(
                  Name(group, offset, b), ": granted after receive_count ",
                  a.receive_count, " yet counts less"));
            }
          }
        }
        for (const DeleteEvent& del : g.deletes) {
          if (!del.ok) continue;
          for (const Delivery& later : g.deliveries) {
            if (later.receive_count <= del.receive_count) continue;
            if (later.granted_ms > del.call_end_ms + kClockSlackMs) {
              ViolationLocked(absl::StrCat(
                  Name(group, offset, later), ": delivered at ",
                  later.granted_ms,
                  " after a Delete (receipt of "
                  "receive_count ",
                  del.receive_count, ") returned OK at ", del.call_end_ms));
              continue;
            }
            // Before that Delete returned, a later lease was handed out:
            // the receipt was stale, and OK is right only if the message
            // was deleted by then (Delete is idempotent).
            bool deleted_by_then = false;
            for (const DeleteEvent& other : g.deletes) {
              if (other.receive_count >= later.receive_count &&
                  other.call_start_ms <= del.call_end_ms + kClockSlackMs) {
                deleted_by_then = true;
              }
            }
            if (!deleted_by_then) {
              ViolationLocked(absl::StrCat(
                  Name(group, offset, later),
                  ": a Delete with the stale "
                  "receipt of receive_count ",
                  del.receive_count, " returned OK at ", del.call_end_ms,
                  " though this later lease was not deleted"));
            }
          }
        }
      }
    }
  }

  // Checks a full Read of the log (offset -> body) against the ledger.
  void CheckStored(const std::map<uint64_t, std::string>& stored,
                   const std::string& when) {
    absl::MutexLock lock(&mu_);
    for (const auto& [offset, body] : stored) {
      ObserveLocked(offset, body, absl::StrCat("Read ", when));
    }
    for (const auto& [offset, rec] : offsets_) {
      if (!rec.acked || stored.count(offset) > 0) continue;
      // Physically removed only once every group may have deleted it.
      bool removable = true;
      for (const GroupRecord& g : rec.groups) {
        if (!g.MaybeDeleted()) removable = false;
      }
      if (!removable) {
        ViolationLocked(absl::StrCat(when, ": offset ", offset, " (\"",
                                     rec.body,
                                     "\") was acknowledged and not deleted "
                                     "by every group, but is gone"));
      }
    }
  }

  // Checks a group's message count (ready + in flight + delayed) against
  // what the ledger allows.
  void CheckGroupCount(int group, uint64_t count, const std::string& when) {
    absl::MutexLock lock(&mu_);
    uint64_t at_least = 0, at_most = unknown_sends_;
    for (const auto& [offset, rec] : offsets_) {
      const GroupRecord& g = rec.groups[group];
      if (!rec.acked) continue;
      if (!g.DeletedOk()) ++at_most;
      if (!g.MaybeDeleted()) ++at_least;
    }
    if (count < at_least || count > at_most) {
      ViolationLocked(absl::StrCat(
          when, ": group '", Groups()[group], "' holds ", count,
          " messages; the ledger allows [", at_least, ", ", at_most, "]"));
    }
  }

  // Every offset the group still has to deliver: acknowledged, and no
  // Delete of it was even tried.
  std::set<uint64_t> Undeleted(int group) {
    absl::MutexLock lock(&mu_);
    std::set<uint64_t> out;
    for (const auto& [offset, rec] : offsets_) {
      if (rec.acked && !rec.groups[group].MaybeDeleted()) out.insert(offset);
    }
    return out;
  }

  // No lease handed out so far, known or not, lasts beyond this (test
  // clock, ms).
  int64_t LeasesEndBy() {
    absl::MutexLock lock(&mu_);
    return leases_end_by_ms_;
  }

  std::vector<std::string> Violations() {
    absl::MutexLock lock(&mu_);
    return violations_;
  }

  std::string Summary() {
    absl::MutexLock lock(&mu_);
    return absl::StrCat(acked_sends_, " sends acknowledged, ", unknown_sends_,
                        " unknown; ", deliveries_, " deliveries; ", deletes_,
                        " deletes acknowledged; ", offsets_.size(),
                        " offsets seen");
  }

 private:
  static std::string Name(size_t group, uint64_t offset, const Delivery& d) {
    return absl::StrCat("group '", Groups()[group], "' offset ", offset,
                        " (receive_count ", d.receive_count, ", consumer ",
                        d.consumer, ")");
  }

  // `offset` was seen with `body`: offsets and bodies pair up one to one.
  void ObserveLocked(uint64_t offset, const std::string& body,
                     const std::string& source)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    OffsetRecord& rec = offsets_[offset];
    if (rec.body.empty()) {
      rec.body = body;
      auto [it, inserted] = offset_by_body_.emplace(body, offset);
      if (!inserted && it->second != offset) {
        ViolationLocked(absl::StrCat(source, ": body \"", body,
                                     "\" stored at offsets ", it->second,
                                     " and ", offset));
      }
    } else if (rec.body != body) {
      ViolationLocked(absl::StrCat(source, ": offset ", offset, " reused: \"",
                                   rec.body, "\" then \"", body, "\""));
    }
  }

  static Delivery* FindLocked(GroupRecord& g, const std::string& receipt) {
    for (Delivery& d : g.deliveries) {
      if (d.receipt == receipt) return &d;
    }
    return nullptr;
  }

  void NoteLeaseBoundLocked(int64_t ms) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    leases_end_by_ms_ = std::max(leases_end_by_ms_, ms);
  }

  void ViolationLocked(std::string v) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (violations_.size() < 1000) violations_.push_back(std::move(v));
  }

  absl::Mutex mu_;
  std::map<uint64_t, OffsetRecord> offsets_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, uint64_t> offset_by_body_ ABSL_GUARDED_BY(mu_);
  uint64_t acked_sends_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t unknown_sends_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t deliveries_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t deletes_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t leases_end_by_ms_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::string> violations_ ABSL_GUARDED_BY(mu_);
};

// A lease a consumer holds, possibly across a restart.
struct Held {
  uint64_t offset = 0;
  std::string receipt;
};

// Everything a worker thread needs for one stretch between restarts.
struct Stretch {
  std::shared_ptr<grpc::Channel> channel;
  std::atomic<bool>* stop = nullptr;
  Ledger* ledger = nullptr;
};

// Sends batches of unique bodies until told to stop.
void RunProducer(const Stretch& s, int producer, uint64_t seed,
                 uint64_t* next_seq) {
  std::mt19937_64 rng(seed);
  TestClient client(s.channel);
  while (!s.stop->load()) {
    const int n = std::uniform_int_distribution<int>(1, 20)(rng);
    std::vector<std::string> bodies;
    for (int i = 0; i < n; ++i) {
      bodies.push_back(absl::StrCat("p", producer, "-", (*next_seq)++));
    }
    Reply<weir::v1::SendResponse> sent = client.SendBodies(kQueue, bodies);
    if (sent.ok() && sent.response.offsets_size() == n) {
      s.ledger->SendOk(bodies, {sent.response.offsets().begin(),
                                sent.response.offsets().end()});
    } else {
      s.ledger->SendUnknown(bodies);
      if (!sent.ok()) absl::SleepFor(absl::Milliseconds(20));  // Back off.
    }
    // Paced so that the consumers keep up and messages go through every
    // state, not only into a backlog.
    absl::SleepFor(
        absl::Milliseconds(std::uniform_int_distribution<int>(0, 8)(rng)));
  }
}

// Receives from one group and, per message, deletes it, releases it,
// extends it (and keeps it), or keeps it until its lease lapses. Held
// leases survive restarts: the next stretch deletes or releases them.
void RunConsumer(const Stretch& s, int group, int consumer, uint64_t seed,
                 std::vector<Held>* held) {
  std::mt19937_64 rng(seed);
  TestClient client(s.channel);
  auto now = [] { return NowUnixMs(); };
  auto settle = [&](std::vector<Held>& to_delete,
                    std::vector<Held>& to_release) {
    if (!to_delete.empty()) {
      std::vector<std::string> receipts;
      for (const Held& h : to_delete) receipts.push_back(h.receipt);
      const int64_t start = now();
      Reply<weir::v1::DeleteResponse> deleted = client.Delete(kQueue, receipts);
      const int64_t end = now();
      for (size_t i = 0; i < to_delete.size(); ++i) {
        const bool ok = deleted.ok() &&
                        deleted.response.results_size() ==
                            static_cast<int>(to_delete.size()) &&
                        deleted.response.results(i).code() == kCodeOk;
        // A per-entry error is a definite "not deleted" only when the call
        // itself went through; FAILED_PRECONDITION (lease lapsed and taken
        // again) is expected here.
        const bool definitely_not = deleted.ok() &&
                                    deleted.response.results_size() ==
                                        static_cast<int>(to_delete.size()) &&
                                    !ok;
        if (!definitely_not) {
          s.ledger->Deleted(group, to_delete[i].offset, to_delete[i].receipt,
                            ok, start, end);
        }
      }
    }
    if (!to_release.empty()) {
      weir::v1::ChangeVisibilityRequest request;
      request.set_queue(kQueue);
      for (const Held& h : to_release) {
        weir::v1::VisibilityChange* c = request.add_entries();
        c->set_receipt_handle(h.receipt);
        c->set_visibility_timeout_ms(0);
      }
      const int64_t start = now();
      Reply<weir::v1::ChangeVisibilityResponse> changed =
          client.ChangeVisibility(request);
      const int64_t end = now();
      for (size_t i = 0; i < to_release.size(); ++i) {
        const bool ok = changed.ok() &&
                        changed.response.results_size() ==
                            static_cast<int>(to_release.size()) &&
                        changed.response.results(i).code() == kCodeOk;
        s.ledger->VisibilityChanged(group, to_release[i].offset,
                                    to_release[i].receipt, 0, start, end, ok);
      }
    }
    to_delete.clear();
    to_release.clear();
  };

  // Leases kept from before the restart: their receipts must still work.
  {
    std::vector<Held> to_delete, to_release;
    for (Held& h : *held) {
      (std::bernoulli_distribution(0.5)(rng) ? to_delete : to_release)
          .push_back(std::move(h));
    }
    held->clear();
    settle(to_delete, to_release);
  }

  while (!s.stop->load()) {
    const int64_t lease_ms =
        std::uniform_int_distribution<int64_t>(kMinLeaseMs, kMaxLeaseMs)(rng);
    const int64_t wait_ms = std::uniform_int_distribution<int64_t>(0, 300)(rng);
    const int max = std::uniform_int_distribution<int>(1, 30)(rng);
    const int64_t start = now();
    Reply<weir::v1::ReceiveResponse> received = client.ReceiveFromGroup(
        kQueue, Groups()[group], max, lease_ms, wait_ms);
    const int64_t end = now();
    if (!received.ok()) {
      s.ledger->ReceiveUnknown(lease_ms, end);
      absl::SleepFor(absl::Milliseconds(20));  // Back off.
      continue;
    }
    std::vector<Message> messages(received.response.messages().begin(),
                                  received.response.messages().end());
    s.ledger->Received(group, consumer, lease_ms, start, end, messages);

    std::vector<Held> to_delete, to_release, to_extend;
    for (const Message& m : messages) {
      Held h{m.offset(), m.receipt_handle()};
      const double r = std::uniform_real_distribution<double>(0, 1)(rng);
      if (r < 0.55) {
        to_delete.push_back(std::move(h));
      } else if (r < 0.7) {
        to_release.push_back(std::move(h));
      } else if (r < 0.85) {
        to_extend.push_back(std::move(h));
      }  // Else: left to lapse.
    }
    settle(to_delete, to_release);
    if (!to_extend.empty()) {
      const int64_t extend_ms =
          std::uniform_int_distribution<int64_t>(kMinLeaseMs, kMaxLeaseMs)(rng);
      weir::v1::ChangeVisibilityRequest request;
      request.set_queue(kQueue);
      for (const Held& h : to_extend) {
        weir::v1::VisibilityChange* c = request.add_entries();
        c->set_receipt_handle(h.receipt);
        c->set_visibility_timeout_ms(extend_ms);
      }
      const int64_t cv_start = now();
      Reply<weir::v1::ChangeVisibilityResponse> changed =
          client.ChangeVisibility(request);
      const int64_t cv_end = now();
      for (size_t i = 0; i < to_extend.size(); ++i) {
        const bool ok = changed.ok() &&
                        changed.response.results_size() ==
                            static_cast<int>(to_extend.size()) &&
                        changed.response.results(i).code() == kCodeOk;
        s.ledger->VisibilityChanged(group, to_extend[i].offset,
                                    to_extend[i].receipt, extend_ms, cv_start,
                                    cv_end, ok);
        if (ok) held->push_back(std::move(to_extend[i]));
      }
      // Keep a bounded number; the rest lapse.
      if (held->size() > 50) held->erase(held->begin(), held->end() - 50);
    }
  }
}

class CrashLoopTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    seed_ = static_cast<uint64_t>(
        EnvInt("WEIR_CRASH_LOOP_SEED", std::random_device()()));
    iterations_ = static_cast<int>(
        EnvInt("WEIR_CRASH_LOOP_ITERATIONS", kDefaultIterations));
    std::cerr << "crash loop (" << GetParam() << "): seed " << seed_ << ", "
              << iterations_
              << " kills; replay with WEIR_CRASH_LOOP_SEED=" << seed_
              << std::endl;
    rng_.seed(seed_);
  }

  // Reads the whole log: offset -> body.
  std::map<uint64_t, std::string> ReadAll(TestClient& client) {
    std::map<uint64_t, std::string> out;
    weir::v1::LogPosition from = Earliest();
    for (;;) {
      Reply<weir::v1::ReadResponse> read =
          client.Read(kQueue, from, /*max_messages=*/1000);
      EXPECT_TRUE(read.ok()) << Describe(read.status);
      if (!read.ok() || read.response.messages().empty()) return out;
      for (const Message& m : read.response.messages()) {
        out[m.offset()] = m.body();
      }
      from = AtOffset(read.response.next_offset());
    }
  }

  // The checks that need the server: a full Read, and every group's count.
  void CheckServer(TestClient& client, Ledger& ledger,
                   const std::string& when) {
    ledger.CheckStored(ReadAll(client), when);
    for (size_t g = 0; g < Groups().size(); ++g) {
      Reply<weir::v1::QueueStats> stats =
          client.GetQueueStats(kQueue, Groups()[g]);
      ASSERT_TRUE(stats.ok()) << Describe(stats.status);
      ledger.CheckGroupCount(static_cast<int>(g),
                             stats.response.ready() +
                                 stats.response.in_flight() +
                                 stats.response.delayed(),
                             when);
    }
  }

  void ExpectNoViolations(Ledger& ledger, const std::string& when) {
    std::vector<std::string> v = ledger.Violations();
    if (v.empty()) return;
    if (v.size() > kMaxViolationsShown) v.resize(kMaxViolationsShown);
    ADD_FAILURE() << ledger.Violations().size() << " violations " << when
                  << " (seed " << seed_ << "):\n  " << absl::StrJoin(v, "\n  ");
  }

  uint64_t seed_ = 0;
  int iterations_ = 0;
  std::mt19937_64 rng_;
};

TEST_P(CrashLoopTest, NothingAcknowledgedIsLostAcrossRandomKills) {
  ServerOptions options;
  options.durability = GetParam();
  absl::StatusOr<std::unique_ptr<ServerProcess>> started =
      ServerProcess::Start(options);
  ASSERT_TRUE(started.ok()) << started.status();
  ServerProcess& server = **started;
  {
    TestClient client(server.Channel());
    Reply<weir::v1::CreateQueueResponse> created = client.CreateQueue(kQueue);
    ASSERT_TRUE(created.ok()) << Describe(created.status);
    Reply<weir::v1::Group> group =
        client.CreateGroup(kQueue, Groups()[1], Earliest());
    ASSERT_TRUE(group.ok()) << Describe(group.status);
  }

  Ledger ledger;
  std::vector<uint64_t> next_seq(kProducers, 0);
  // Per consumer: its group and the leases it keeps across restarts.
  std::vector<int> consumer_group;
  for (size_t g = 0; g < Groups().size(); ++g) {
    for (int i = 0; i < kConsumersPerGroup[g]; ++i) {
      consumer_group.push_back(static_cast<int>(g));
    }
  }
  std::vector<std::vector<Held>> held(consumer_group.size());

  const absl::Time began = absl::Now();
  for (int iteration = 0; iteration < iterations_; ++iteration) {
    std::atomic<bool> stop{false};
    Stretch s{server.Channel(), &stop, &ledger};
    std::vector<std::thread> workers;
    for (int p = 0; p < kProducers; ++p) {
      workers.emplace_back(RunProducer, s, p, rng_(), &next_seq[p]);
    }
    for (size_t c = 0; c < consumer_group.size(); ++c) {
      workers.emplace_back(RunConsumer, s, consumer_group[c],
                           static_cast<int>(c), rng_(), &held[c]);
    }
    // The kill comes at a random moment of the load; now and then right
    // after the restart, while the server is still warming up.
    const int64_t run_ms =
        std::bernoulli_distribution(0.15)(rng_)
            ? std::uniform_int_distribution<int64_t>(0, 50)(rng_)
            : std::uniform_int_distribution<int64_t>(100, 1500)(rng_);
    absl::SleepFor(absl::Milliseconds(run_ms));
    server.Kill();
    stop.store(true);
    for (std::thread& t : workers) t.join();

    absl::Status restarted = server.Restart();
    ASSERT_TRUE(restarted.ok()) << "restart " << iteration << ": " << restarted;
    TestClient client(server.Channel());
    const std::string when = absl::StrCat("after kill ", iteration + 1);
    ledger.CheckDeliveries();
    ASSERT_NO_FATAL_FAILURE(CheckServer(client, ledger, when));
    ExpectNoViolations(ledger, when);
    if (HasFailure()) return;
    std::cerr << when << " (" << run_ms << " ms of load): " << ledger.Summary()
              << std::endl;
  }
  const absl::Duration looped = absl::Now() - began;

  // The final drain. Once every lease that may exist has lapsed, each
  // group must hand out every acknowledged message no Delete was tried on.
  TestClient client(server.Channel());
  ASSERT_NO_FATAL_FAILURE(CheckServer(client, ledger, "before the drain"));
  const int64_t lapsed_by = ledger.LeasesEndBy() + kClockSlackMs;
  constexpr int64_t kDrainLeaseMs = 600'000;
  for (size_t g = 0; g < Groups().size(); ++g) {
    const int group = static_cast<int>(g);
    const std::set<uint64_t> expected = ledger.Undeleted(group);
    // Receives and deletes what comes; false once a Receive found nothing.
    auto drain_once = [&](int64_t wait_ms) {
      const int64_t start = NowUnixMs();
      Reply<weir::v1::ReceiveResponse> r = client.ReceiveFromGroup(
          kQueue, Groups()[g], 1000, kDrainLeaseMs, wait_ms);
      EXPECT_TRUE(r.ok()) << Describe(r.status);
      std::vector<Message> got(r.response.messages().begin(),
                               r.response.messages().end());
      ledger.Received(group, -1, kDrainLeaseMs, start, NowUnixMs(), got);
      if (got.empty()) return false;
      std::vector<std::string> receipts;
      for (const Message& m : got) receipts.push_back(m.receipt_handle());
      const int64_t delete_start = NowUnixMs();
      Reply<weir::v1::DeleteResponse> d = client.Delete(kQueue, receipts);
      EXPECT_TRUE(d.ok()) << Describe(d.status);
      const int64_t delete_end = NowUnixMs();
      for (size_t i = 0; i < got.size(); ++i) {
        const bool ok = d.ok() && d.response.results_size() == got.size() &&
                        d.response.results(i).code() == kCodeOk;
        EXPECT_TRUE(ok) << "drain: Delete of offset " << got[i].offset();
        ledger.Deleted(group, got[i].offset(), receipts[i], ok, delete_start,
                       delete_end);
      }
      return true;
    };
    // Long polls, not sleeps, pass the time until the last lease lapses.
    while (NowUnixMs() <= lapsed_by) {
      drain_once(std::clamp<int64_t>(lapsed_by - NowUnixMs() + 1, 1, 20'000));
    }
    while (drain_once(0)) {
    }
    const std::set<uint64_t> missing = ledger.Undeleted(group);
    EXPECT_TRUE(missing.empty())
        << missing.size() << " of " << expected.size()
        << " acknowledged, undeleted messages never came back to group '"
        << Groups()[g] << "', e.g. offset " << *missing.begin() << " (seed "
        << seed_ << ")";
    Reply<weir::v1::QueueStats> stats =
        client.GetQueueStats(kQueue, Groups()[g]);
    ASSERT_TRUE(stats.ok()) << Describe(stats.status);
    EXPECT_EQ(stats.response.ready() + stats.response.in_flight() +
                  stats.response.delayed(),
              0u)
        << "group '" << Groups()[g] << "' after the drain";
  }
  ledger.CheckDeliveries();
  ASSERT_NO_FATAL_FAILURE(CheckServer(client, ledger, "after the drain"));
  ExpectNoViolations(ledger, "in the drain");
  std::cerr << "crash loop (" << GetParam() << "): " << iterations_
            << " kills in " << looped << "; " << ledger.Summary() << std::endl;

  absl::StatusOr<int> exit_code = server.Stop();
  ASSERT_TRUE(exit_code.ok()) << exit_code.status();
  EXPECT_EQ(*exit_code, 0);
}

INSTANTIATE_TEST_SUITE_P(Durability, CrashLoopTest,
                         ::testing::Values("sync", "async"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

}  // namespace
}  // namespace weir::test
