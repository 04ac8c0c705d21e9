// weir::Client and weir::Producer against the real server: every typed call
// once, errors with the server's code and message, and the producer's
// batching by count, bytes and linger time with per-message results.

#include <atomic>
#include <cstdint>
#include <future>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "client/producer.h"
#include "gtest/gtest.h"
#include "tests/client_fixture.h"
#include "tests/e2e_fixture.h"
#include "weir/v1/weir.pb.h"

namespace weir::test {
namespace {

using ::weir::v1::SendEntry;

SendEntry Entry(const std::string& body) {
  SendEntry entry;
  entry.set_body(body);
  return entry;
}

using ClientE2ETest = ClientLibraryTest;

TEST_F(ClientE2ETest, QueueCallsRoundTrip) {
  const std::string name = UniqueName("client-queue");
  v1::QueueConfig config;
  config.set_visibility_timeout_ms(5000);
  absl::StatusOr<v1::CreateQueueResponse> created =
      weir().CreateQueue(name, config);
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_TRUE(created->created());
  EXPECT_EQ(created->queue().config().visibility_timeout_ms(), 5000);

  absl::StatusOr<v1::Queue> got = weir().GetQueue(name);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->name(), name);

  config.set_visibility_timeout_ms(7000);
  absl::StatusOr<v1::Queue> updated =
      weir().UpdateQueue(name, config, {"visibility_timeout_ms"});
  ASSERT_TRUE(updated.ok()) << updated.status();
  EXPECT_EQ(updated->config().visibility_timeout_ms(), 7000);

  absl::StatusOr<std::vector<v1::Queue>> listed = weir().ListQueues(name);
  ASSERT_TRUE(listed.ok()) << listed.status();
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].name(), name);

  ASSERT_TRUE(weir().SendBody(name, "a").ok());
  absl::StatusOr<uint64_t> purged = weir().PurgeQueue(name);
  ASSERT_TRUE(purged.ok()) << purged.status();
  EXPECT_EQ(*purged, 1u);

  EXPECT_TRUE(weir().DeleteQueue(name).ok());
  absl::StatusOr<v1::Queue> gone = weir().GetQueue(name);
  EXPECT_EQ(gone.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(gone.status().message().find(name), std::string::npos)
      << gone.status();
}

TEST_F(ClientE2ETest, MessageCallsRoundTrip) {
  const std::string queue = NewQueue("client-messages");
  absl::StatusOr<std::vector<uint64_t>> offsets =
      weir().Send(queue, {Entry("a"), Entry("b"), Entry("c")});
  ASSERT_TRUE(offsets.ok()) << offsets.status();
  EXPECT_EQ(*offsets, (std::vector<uint64_t>{0, 1, 2}));
  absl::StatusOr<uint64_t> one = weir().SendBody(queue, "d", {{"k", "v"}});
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(*one, 3u);

  ReceiveOptions receive;
  receive.max_messages = 10;
  receive.visibility_timeout = absl::Minutes(10);
  receive.wait = absl::Seconds(5);
  absl::StatusOr<std::vector<v1::Message>> messages =
      weir().Receive(queue, receive);
  ASSERT_TRUE(messages.ok()) << messages.status();
  ASSERT_EQ(messages->size(), 4u);
  EXPECT_EQ((*messages)[3].attributes().at("k"), "v");

  absl::StatusOr<std::vector<absl::Status>> deleted =
      weir().Delete(queue, {(*messages)[0].receipt_handle(),
                            (*messages)[1].receipt_handle(), "not-a-receipt"});
  ASSERT_TRUE(deleted.ok()) << deleted.status();
  ASSERT_EQ(deleted->size(), 3u);
  EXPECT_TRUE((*deleted)[0].ok()) << (*deleted)[0];
  EXPECT_TRUE((*deleted)[1].ok()) << (*deleted)[1];
  EXPECT_EQ((*deleted)[2].code(), absl::StatusCode::kInvalidArgument);

  v1::VisibilityChange release;
  release.set_receipt_handle((*messages)[2].receipt_handle());
  release.set_visibility_timeout_ms(0);
  absl::StatusOr<std::vector<absl::Status>> changed =
      weir().ChangeVisibility(queue, {release});
  ASSERT_TRUE(changed.ok()) << changed.status();
  EXPECT_TRUE((*changed)[0].ok()) << (*changed)[0];
  // The released receipt is fenced once the message is leased again.
  absl::StatusOr<std::vector<v1::Message>> again =
      weir().Receive(queue, receive);
  ASSERT_TRUE(again.ok()) << again.status();
  ASSERT_EQ(again->size(), 1u);
  EXPECT_EQ((*again)[0].receive_count(), 2u);
  absl::StatusOr<std::vector<absl::Status>> stale =
      weir().Delete(queue, {(*messages)[2].receipt_handle()});
  ASSERT_TRUE(stale.ok()) << stale.status();
  EXPECT_EQ((*stale)[0].code(), absl::StatusCode::kFailedPrecondition);

  absl::StatusOr<v1::QueueStats> stats = weir().GetQueueStats(queue);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->in_flight(), 2u);
  EXPECT_EQ(stats->deleted_total(), 2u);

  absl::StatusOr<v1::ReadResponse> read = weir().Read(queue, OffsetPosition(2));
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_EQ(read->messages_size(), 2);
  EXPECT_EQ(read->messages(0).body(), "c");
  EXPECT_EQ(read->next_offset(), 4u);

  // Deleting the last two while asking for more: none is left to lease.
  absl::StatusOr<Client::DeleteAndReceiveResult> both = weir().DeleteAndReceive(
      queue, {(*again)[0].receipt_handle(), (*messages)[3].receipt_handle()},
      ReceiveOptions{.max_messages = 10});
  ASSERT_TRUE(both.ok()) << both.status();
  ASSERT_EQ(both->deletes.size(), 2u);
  EXPECT_TRUE(both->deletes[0].ok()) << both->deletes[0];
  EXPECT_TRUE(both->deletes[1].ok()) << both->deletes[1];
  EXPECT_TRUE(both->messages.empty());
  stats = weir().GetQueueStats(queue);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->in_flight(), 0u);
  EXPECT_EQ(stats->deleted_total(), 4u);

  absl::StatusOr<std::vector<absl::Status>> unknown =
      weir().Delete("no-such-queue", {"x"});
  EXPECT_FALSE(unknown.ok());
}

TEST_F(ClientE2ETest, GroupsAndRedrive) {
  const std::string dlq = NewQueue("client-dlq");
  v1::QueueConfig config;
  config.set_max_receives(1);
  config.set_dead_letter_queue(dlq);
  const std::string queue = NewQueue("client-groups", config);
  ASSERT_TRUE(weir().SendBody(queue, "x").ok());

  absl::StatusOr<v1::Group> group =
      weir().CreateGroup(queue, "audit", EarliestPosition());
  ASSERT_TRUE(group.ok()) << group.status();
  EXPECT_EQ(group->lag(), 1u);
  absl::StatusOr<std::vector<v1::Group>> groups = weir().ListGroups(queue);
  ASSERT_TRUE(groups.ok()) << groups.status();
  ASSERT_EQ(groups->size(), 2u);
  EXPECT_EQ((*groups)[1].name(), "audit");
  absl::StatusOr<v1::Group> sought =
      weir().SeekGroup(queue, "audit", LatestPosition());
  ASSERT_TRUE(sought.ok()) << sought.status();
  EXPECT_EQ(sought->lag(), 0u);
  EXPECT_TRUE(weir().DeleteGroup(queue, "audit").ok());
  EXPECT_EQ(weir().DeleteGroup(queue, "audit").code(),
            absl::StatusCode::kNotFound);

  // Delivered once and released: the next delivery dead-letters it.
  ReceiveOptions receive{.max_messages = 1,
                         .visibility_timeout = absl::Minutes(10)};
  absl::StatusOr<std::vector<v1::Message>> first =
      weir().Receive(queue, receive);
  ASSERT_TRUE(first.ok() && first->size() == 1) << first.status();
  v1::VisibilityChange release;
  release.set_receipt_handle((*first)[0].receipt_handle());
  ASSERT_TRUE(weir().ChangeVisibility(queue, {release}).ok());
  ASSERT_TRUE(weir().Receive(queue, receive).ok());
  absl::StatusOr<uint64_t> moved = weir().Redrive(dlq);
  ASSERT_TRUE(moved.ok()) << moved.status();
  EXPECT_EQ(*moved, 1u);
}

TEST_F(ClientE2ETest, PerCallDeadline) {
  const std::string queue = NewQueue("client-deadline");
  // A frozen server answers nothing: the call ends at its deadline.
  const absl::Status frozen = server().Freeze();
  ASSERT_TRUE(frozen.ok()) << frozen;
  absl::StatusOr<v1::QueueStats> stats = weir().GetQueueStats(
      queue, "", CallOptions{.timeout = absl::Milliseconds(200)});
  const absl::Status thawed = server().Thaw();
  ASSERT_TRUE(thawed.ok()) << thawed;
  EXPECT_EQ(stats.status().code(), absl::StatusCode::kDeadlineExceeded)
      << stats.status();
  // A long poll's deadline is the timeout plus its wait: the call outlives
  // its timeout alone by far, and still has 2 s of slack for a loaded
  // machine.
  ReceiveOptions receive{.max_messages = 1, .wait = absl::Seconds(4)};
  absl::StatusOr<std::vector<v1::Message>> messages =
      weir().Receive(queue, receive, CallOptions{.timeout = absl::Seconds(2)});
  ASSERT_TRUE(messages.ok()) << messages.status();
  EXPECT_TRUE(messages->empty());
}

// Waits for every future, failing the test if one is not ready in time.
std::vector<absl::StatusOr<uint64_t>> Results(
    std::vector<std::future<absl::StatusOr<uint64_t>>>& futures) {
  std::vector<absl::StatusOr<uint64_t>> results;
  for (auto& future : futures) {
    if (future.wait_for(std::chrono::seconds(60)) !=
        std::future_status::ready) {
      ADD_FAILURE() << "a send got no result within 60 s";
      results.push_back(absl::DeadlineExceededError("no result"));
      continue;
    }
    results.push_back(future.get());
  }
  return results;
}

TEST_F(ClientE2ETest, ProducerBatchesByCount) {
  const std::string queue = NewQueue("producer-count");
  ProducerOptions options{.queue = queue, .max_batch_messages = 10};
  // Only full batches can go: the linger never ends.
  options.linger = absl::Hours(1);
  Producer producer(weir(), options);
  std::vector<std::future<absl::StatusOr<uint64_t>>> futures;
  for (int i = 0; i < 30; ++i) {
    futures.push_back(producer.Send(Entry(std::to_string(i))));
  }
  std::vector<absl::StatusOr<uint64_t>> results = Results(futures);
  for (int i = 0; i < 30; ++i) {
    ASSERT_TRUE(results[i].ok()) << results[i].status();
    EXPECT_EQ(*results[i], static_cast<uint64_t>(i));
  }
  const ProducerStats stats = producer.stats();
  EXPECT_EQ(stats.batches, 3u);
  EXPECT_EQ(stats.largest_batch, 10u);
  EXPECT_EQ(stats.succeeded, 30u);
}

TEST_F(ClientE2ETest, ProducerBatchesByBytes) {
  const std::string queue = NewQueue("producer-bytes");
  ProducerOptions options{.queue = queue, .max_batch_messages = 1000};
  options.max_batch_bytes = 3500;  // three 1000-byte bodies, not four
  options.linger = absl::Hours(1);
  Producer producer(weir(), options);
  std::vector<std::future<absl::StatusOr<uint64_t>>> futures;
  for (int i = 0; i < 12; ++i) {
    futures.push_back(producer.Send(Entry(std::string(1000, 'a' + i))));
  }
  producer.Flush();
  for (const absl::StatusOr<uint64_t>& result : Results(futures)) {
    EXPECT_TRUE(result.ok()) << result.status();
  }
  const ProducerStats stats = producer.stats();
  EXPECT_LE(stats.largest_batch, 3u);
  EXPECT_GE(stats.batches, 4u);
  absl::StatusOr<v1::QueueStats> queue_stats = weir().GetQueueStats(queue);
  ASSERT_TRUE(queue_stats.ok());
  EXPECT_EQ(queue_stats->sent_total(), 12u);
}

TEST_F(ClientE2ETest, ProducerSendsAfterLingerOrFlush) {
  const std::string queue = NewQueue("producer-linger");
  {
    ProducerOptions options{.queue = queue};
    options.linger = absl::Hours(1);
    Producer producer(weir(), options);
    std::future<absl::StatusOr<uint64_t>> held = producer.Send(Entry("held"));
    EXPECT_EQ(held.wait_for(std::chrono::milliseconds(300)),
              std::future_status::timeout)
        << "sent before the batch was full, flushed or had lingered";
    producer.Flush();
    ASSERT_EQ(held.wait_for(std::chrono::seconds(0)),
              std::future_status::ready);
    EXPECT_EQ(*held.get(), 0u);
  }
  ProducerOptions options{.queue = queue};
  options.linger = absl::Milliseconds(20);
  Producer producer(weir(), options);
  std::future<absl::StatusOr<uint64_t>> lingered =
      producer.Send(Entry("lingered"));
  // No Flush: the linger time alone sends it.
  ASSERT_EQ(lingered.wait_for(std::chrono::seconds(60)),
            std::future_status::ready);
  absl::StatusOr<uint64_t> offset = lingered.get();
  ASSERT_TRUE(offset.ok()) << offset.status();
  EXPECT_EQ(*offset, 1u);
}

TEST_F(ClientE2ETest, ProducerReportsErrorsPerMessage) {
  {
    Producer producer(weir(), ProducerOptions{.queue = "no-such-queue"});
    std::vector<std::future<absl::StatusOr<uint64_t>>> futures;
    for (int i = 0; i < 5; ++i) futures.push_back(producer.Send(Entry("x")));
    producer.Flush();
    for (const absl::StatusOr<uint64_t>& result : Results(futures)) {
      EXPECT_EQ(result.status().code(), absl::StatusCode::kNotFound)
          << result.status();
    }
    EXPECT_EQ(producer.stats().failed, 5u);
  }

  // One entry over the queue's size limit fails alone; its batch mates are
  // stored.
  v1::QueueConfig config;
  config.set_max_message_bytes(1024);
  const std::string queue = NewQueue("producer-errors", config);
  ProducerOptions options{.queue = queue};
  options.linger = absl::Hours(1);
  Producer producer(weir(), options);
  std::vector<std::future<absl::StatusOr<uint64_t>>> futures;
  futures.push_back(producer.Send(Entry("small-1")));
  futures.push_back(producer.Send(Entry(std::string(2000, 'x'))));
  futures.push_back(producer.Send(Entry("small-2")));
  producer.Flush();
  std::vector<absl::StatusOr<uint64_t>> results = Results(futures);
  EXPECT_TRUE(results[0].ok()) << results[0].status();
  EXPECT_EQ(results[1].status().code(), absl::StatusCode::kInvalidArgument)
      << results[1].status();
  EXPECT_TRUE(results[2].ok()) << results[2].status();
  absl::StatusOr<v1::ReadResponse> read =
      weir().Read(queue, EarliestPosition());
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_EQ(read->messages_size(), 2);
  EXPECT_EQ(read->messages(0).body(), "small-1");
  EXPECT_EQ(read->messages(1).body(), "small-2");
}

TEST_F(ClientE2ETest, ProducerCloseFlushesAndConcurrentSendsKeepOrder) {
  const std::string queue = NewQueue("producer-close");
  std::vector<std::future<absl::StatusOr<uint64_t>>> futures[4];
  {
    ProducerOptions options{.queue = queue, .max_batch_messages = 50};
    options.linger = absl::Milliseconds(2);
    options.max_pending_messages = 64;  // the senders block now and then
    Producer producer(weir(), options);
    std::vector<std::thread> senders;
    for (int t = 0; t < 4; ++t) {
      senders.emplace_back([&, t] {
        for (int i = 0; i < 250; ++i) {
          futures[t].push_back(producer.Send(Entry(std::to_string(i))));
        }
      });
    }
    for (std::thread& sender : senders) sender.join();
    // The destructor flushes.
  }
  std::set<uint64_t> offsets;
  for (auto& per_thread : futures) {
    uint64_t previous = 0;
    bool first = true;
    for (const absl::StatusOr<uint64_t>& result : Results(per_thread)) {
      ASSERT_TRUE(result.ok()) << result.status();
      if (!first) {
        EXPECT_GT(*result, previous) << "offsets out of Send order";
      }
      previous = *result;
      first = false;
      offsets.insert(*result);
    }
  }
  EXPECT_EQ(offsets.size(), 1000u);
  EXPECT_EQ(*offsets.rbegin(), 999u);
}

}  // namespace
}  // namespace weir::test
