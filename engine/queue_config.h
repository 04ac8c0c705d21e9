// A queue's configuration: defaults, limits and validation.
#ifndef WEIR_ENGINE_QUEUE_CONFIG_H_
#define WEIR_ENGINE_QUEUE_CONFIG_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace weir {

// Limits that apply to every queue.
struct Limits {
  static constexpr size_t kMaxQueueNameLength = 80;
  static constexpr absl::Duration kMaxVisibilityTimeout = absl::Hours(12);
  static constexpr absl::Duration kMaxDelay = absl::Minutes(15);
  static constexpr absl::Duration kMaxWaitTime = absl::Seconds(20);
  static constexpr int64_t kMaxMessageBytes = 4 << 20;
  static constexpr int kMaxBatchEntries = 1000;
  static constexpr size_t kMaxAttributeKeyLength = 256;
  static constexpr size_t kMaxOrderingKeyLength = 128;
  static constexpr size_t kMaxDedupIdLength = 128;
  static constexpr int32_t kMaxReceives = 1000;
  static constexpr absl::Duration kMaxDedupWindow = absl::Hours(12);
};

// Per-queue settings. A zero field means "use the default" when a queue is
// created; the stored configuration always has the defaults filled in.
struct QueueConfig {
  // How long a received message stays leased when Receive names no timeout.
  absl::Duration visibility_timeout = absl::Seconds(30);
  // Largest message accepted: body plus attribute keys and values.
  int64_t max_message_bytes = 256 << 10;
  // Delay applied to messages sent without one.
  absl::Duration delay = absl::ZeroDuration();
  // Messages older than this are removed whatever their state. 0: no limit.
  absl::Duration retention_max_age = absl::ZeroDuration();
  // How long a message deleted by every group is kept for replay before it
  // is removed. 0: removed as soon as every group has deleted it.
  absl::Duration retention_keep_deleted_for = absl::ZeroDuration();
  // A message that would be delivered for the (max_receives+1)-th time to a
  // group goes to dead_letter_queue instead. 0 (and no queue): never.
  int32_t max_receives = 0;
  std::string dead_letter_queue;
  // How long a dedup id is remembered. Zero on creation: 5 minutes.
  absl::Duration dedup_window = absl::Minutes(5);

  friend bool operator==(const QueueConfig& a, const QueueConfig& b) {
    return a.visibility_timeout == b.visibility_timeout &&
           a.max_message_bytes == b.max_message_bytes && a.delay == b.delay &&
           a.retention_max_age == b.retention_max_age &&
           a.retention_keep_deleted_for == b.retention_keep_deleted_for &&
           a.max_receives == b.max_receives &&
           a.dead_letter_queue == b.dead_letter_queue &&
           a.dedup_window == b.dedup_window;
  }
  friend bool operator!=(const QueueConfig& a, const QueueConfig& b) {
    return !(a == b);
  }
};

// Returns `config` with zero fields replaced by the defaults, or
// INVALID_ARGUMENT naming the first field out of range.
absl::Status NormalizeQueueConfig(QueueConfig* config);

// OK if `name` is 1-80 characters of [A-Za-z0-9_-]; INVALID_ARGUMENT if not.
absl::Status ValidateQueueName(absl::string_view name);
// The same rule for consumer group names (the default group has none).
absl::Status ValidateGroupName(absl::string_view name);

}  // namespace weir

#endif  // WEIR_ENGINE_QUEUE_CONFIG_H_
