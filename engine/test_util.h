// Helpers shared by the engine's tests.
#ifndef WEIR_ENGINE_TEST_UTIL_H_
#define WEIR_ENGINE_TEST_UTIL_H_

#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/clock.h"
#include "engine/engine.h"
#include "gtest/gtest.h"

namespace weir {

// A new, empty directory under the test's temporary directory.
inline std::string NewTempDir() {
  const char* base = std::getenv("TEST_TMPDIR");
  std::string templ =
      std::string(base != nullptr ? base : "/tmp") + "/weir-test-XXXXXX";
  char* dir = mkdtemp(templ.data());
  EXPECT_NE(dir, nullptr);
  return templ;
}

// Opens an Engine on a fresh directory with a FakeClock, with helpers that
// fail the test on unexpected errors.
class EngineFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = NewTempDir();
    Reopen();
  }

  void Reopen() {
    engine_.reset();
    EngineOptions options;
    options.clock = &clock_;
    options.durability = Durability::kAsync;
    options.after_blocking_write_for_test = after_blocking_write_;
    absl::StatusOr<std::unique_ptr<Engine>> e = Engine::Open(options, dir_);
    ASSERT_TRUE(e.ok()) << e.status();
    engine_ = std::move(*e);
  }

  void Create(const std::string& name, QueueConfig config = QueueConfig()) {
    auto r = engine_->CreateQueue(name, config);
    ASSERT_TRUE(r.ok()) << r.status();
  }

  std::vector<uint64_t> SendBodies(const std::string& q,
                                   const std::vector<std::string>& bodies) {
    std::vector<SendEntry> entries;
    for (const auto& b : bodies) entries.push_back(SendEntry{b, {}, {}});
    auto r = engine_->Send(q, entries);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : std::vector<uint64_t>();
  }

  std::vector<ReceivedMessage> Recv(const std::string& q, int n = 1,
                                    absl::Duration vt = absl::Seconds(30),
                                    const std::string& group = "") {
    ReceiveOptions o;
    o.group = group;
    o.max_messages = n;
    o.visibility_timeout = vt;
    auto r = engine_->Receive(q, o);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : std::vector<ReceivedMessage>();
  }

  absl::Status DeleteOne(const std::string& q, const std::string& receipt) {
    auto r = engine_->Delete(q, {receipt});
    if (!r.ok()) return r.status();
    return (*r)[0];
  }

  absl::Status ChangeOne(const std::string& q, const std::string& receipt,
                         absl::Duration d) {
    auto r = engine_->ChangeVisibility(q, {VisibilityChange{receipt, d}});
    if (!r.ok()) return r.status();
    return (*r)[0];
  }

  QueueStats Stats(const std::string& q, const std::string& group = "") {
    auto r = engine_->GetQueueStats(q, group);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : QueueStats();
  }

  FakeClock clock_;
  // Passed to the engine by the next Reopen (see EngineOptions).
  std::function<void()> after_blocking_write_;
  std::string dir_;
  std::unique_ptr<Engine> engine_;
};

}  // namespace weir

#endif  // WEIR_ENGINE_TEST_UTIL_H_
