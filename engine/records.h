// Encodings of the values Weir stores (see key_codec.h for where each lives).
// Every decoder validates its input and returns DATA_LOSS on a corrupted or
// truncated record instead of crashing on it.
#ifndef WEIR_ENGINE_RECORDS_H_
#define WEIR_ENGINE_RECORDS_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "engine/queue_config.h"

namespace weir {

using Attributes = std::vector<std::pair<std::string, std::string>>;

// A message as stored in the messages column family: written once, never
// rewritten.
struct MessageRecord {
  int64_t enqueue_time_us = 0;
  // 0 when the message was visible at once.
  int64_t visible_at_us = 0;
  Attributes attributes;
  // Empty when the message has none.
  std::string ordering_key;
  std::string dedup_id;
  std::string body;
};

std::string EncodeMessage(const MessageRecord& m);
absl::Status DecodeMessage(absl::string_view in, MessageRecord* m);

// A group's lease on one message: persisted so that a restart keeps
// in-flight messages invisible and keeps receive counts. receive_count 0
// marks a message held back by its send delay that nobody has received yet.
struct LeaseRecord {
  int64_t deadline_us = 0;
  uint32_t receive_count = 0;
};

std::string EncodeLease(const LeaseRecord& l);
absl::Status DecodeLease(absl::string_view in, LeaseRecord* l);

struct QueueRecord {
  uint64_t id = 0;
  std::string name;
  int64_t create_time_us = 0;
  QueueConfig config;
};

std::string EncodeQueue(const QueueRecord& q);
absl::Status DecodeQueue(absl::string_view in, QueueRecord* q);

struct GroupRecord {
  uint32_t id = 0;
  std::string name;
  // Every offset below delete_floor is deleted for this group.
  uint64_t delete_floor = 0;
  // Every offset below cursor_base has been passed by the delivery cursor.
  uint64_t cursor_base = 0;
  // Bumped by a seek: receipts of older generations are void.
  uint32_t generation = 0;
};

std::string EncodeGroup(const GroupRecord& g);
absl::Status DecodeGroup(absl::string_view in, GroupRecord* g);

// Monotonic totals, kept with a merge operator that adds field by field so
// that concurrent writers never overwrite each other.
struct Counters {
  uint64_t sent = 0;
  uint64_t received = 0;
  uint64_t deleted = 0;
};

std::string EncodeCounters(const Counters& c);
absl::Status DecodeCounters(absl::string_view in, Counters* c);

}  // namespace weir

#endif  // WEIR_ENGINE_RECORDS_H_
