#include "engine/records.h"

#include "absl/strings/str_cat.h"
#include "engine/coding.h"

namespace weir {
namespace {

constexpr uint8_t kMessageVersion = 1;
constexpr uint8_t kLeaseVersion = 1;

absl::Status Corrupt(absl::string_view what) {
  return absl::DataLossError(absl::StrCat("corrupted ", what, " record"));
}

// Tagged fields for the rarely written meta records, so fields can be added
// later without a format change: tag = field << 1 | type, where type 0 is a
// varint and 1 is a length-prefixed string. Unknown fields are skipped.
void PutVarintField(std::string* dst, uint32_t field, uint64_t v) {
  PutVarint64(dst, field << 1);
  PutVarint64(dst, v);
}

void PutStringField(std::string* dst, uint32_t field, absl::string_view v) {
  PutVarint64(dst, (field << 1) | 1);
  PutLengthPrefixed(dst, v);
}

// Calls on_varint(field, value) / on_string(field, value) for each field.
template <typename OnVarint, typename OnString>
bool ReadFields(absl::string_view in, OnVarint on_varint, OnString on_string) {
  ByteReader r(in);
  while (!r.empty()) {
    uint64_t tag;
    if (!r.GetVarint64(&tag)) return false;
    if (tag & 1) {
      absl::string_view v;
      if (!r.GetLengthPrefixed(&v)) return false;
      on_string(tag >> 1, v);
    } else {
      uint64_t v;
      if (!r.GetVarint64(&v)) return false;
      on_varint(tag >> 1, v);
    }
  }
  return true;
}

}  // namespace

std::string EncodeMessage(const MessageRecord& m) {
  std::string out;
  size_t size = 32 + m.body.size();
  for (const auto& [k, v] : m.attributes) size += k.size() + v.size() + 4;
  out.reserve(size);
  out.push_back(static_cast<char>(kMessageVersion));
  PutFixed64BE(&out, static_cast<uint64_t>(m.enqueue_time_us));
  PutVarint64(&out, static_cast<uint64_t>(m.visible_at_us));
  PutVarint64(&out, m.attributes.size());
  for (const auto& [k, v] : m.attributes) {
    PutLengthPrefixed(&out, k);
    PutLengthPrefixed(&out, v);
  }
  PutLengthPrefixed(&out, m.ordering_key);
  PutLengthPrefixed(&out, m.dedup_id);
  out.append(m.body);
  return out;
}

absl::Status DecodeMessage(absl::string_view in, MessageRecord* m) {
  ByteReader r(in);
  uint8_t version;
  uint64_t enqueue, visible, nattrs;
  if (!r.GetByte(&version) || version != kMessageVersion ||
      !r.GetFixed64BE(&enqueue) || !r.GetVarint64(&visible) ||
      !r.GetVarint64(&nattrs) || nattrs > r.remaining()) {
    return Corrupt("message");
  }
  m->enqueue_time_us = static_cast<int64_t>(enqueue);
  m->visible_at_us = static_cast<int64_t>(visible);
  m->attributes.clear();
  m->attributes.reserve(nattrs);
  for (uint64_t i = 0; i < nattrs; ++i) {
    absl::string_view k, v;
    if (!r.GetLengthPrefixed(&k) || !r.GetLengthPrefixed(&v)) {
      return Corrupt("message");
    }
    m->attributes.emplace_back(std::string(k), std::string(v));
  }
  absl::string_view key, dedup;
  if (!r.GetLengthPrefixed(&key) || !r.GetLengthPrefixed(&dedup)) {
    return Corrupt("message");
  }
  m->ordering_key = std::string(key);
  m->dedup_id = std::string(dedup);
  m->body = std::string(r.TakeRest());
  return absl::OkStatus();
}

std::string EncodeLease(const LeaseRecord& l) {
  std::string out;
  out.push_back(static_cast<char>(kLeaseVersion));
  PutFixed64BE(&out, static_cast<uint64_t>(l.deadline_us));
  PutVarint64(&out, l.receive_count);
  return out;
}

absl::Status DecodeLease(absl::string_view in, LeaseRecord* l) {
  ByteReader r(in);
  uint8_t version;
  uint64_t deadline;
  if (!r.GetByte(&version) || version != kLeaseVersion ||
      !r.GetFixed64BE(&deadline) || !r.GetVarint32(&l->receive_count) ||
      !r.empty()) {
    return Corrupt("lease");
  }
  l->deadline_us = static_cast<int64_t>(deadline);
  return absl::OkStatus();
}

// QueueRecord fields.
enum : uint32_t {
  kQueueId = 1,
  kQueueName = 2,
  kQueueCreateTime = 3,
  kQueueVisibilityUs = 4,
  kQueueMaxMessageBytes = 5,
  kQueueDelayUs = 6,
  kQueueMaxAgeUs = 7,
  kQueueKeepDeletedUs = 8,
  kQueueMaxReceives = 9,
  kQueueDeadLetterQueue = 10,
  kQueueDedupWindowUs = 11,
};

std::string EncodeQueue(const QueueRecord& q) {
  std::string out;
  PutVarintField(&out, kQueueId, q.id);
  PutStringField(&out, kQueueName, q.name);
  PutVarintField(&out, kQueueCreateTime, q.create_time_us);
  PutVarintField(&out, kQueueVisibilityUs,
                 absl::ToInt64Microseconds(q.config.visibility_timeout));
  PutVarintField(&out, kQueueMaxMessageBytes, q.config.max_message_bytes);
  PutVarintField(&out, kQueueDelayUs,
                 absl::ToInt64Microseconds(q.config.delay));
  PutVarintField(&out, kQueueMaxAgeUs,
                 absl::ToInt64Microseconds(q.config.retention_max_age));
  PutVarintField(
      &out, kQueueKeepDeletedUs,
      absl::ToInt64Microseconds(q.config.retention_keep_deleted_for));
  PutVarintField(&out, kQueueMaxReceives,
                 static_cast<uint32_t>(q.config.max_receives));
  PutStringField(&out, kQueueDeadLetterQueue, q.config.dead_letter_queue);
  PutVarintField(&out, kQueueDedupWindowUs,
                 absl::ToInt64Microseconds(q.config.dedup_window));
  return out;
}

absl::Status DecodeQueue(absl::string_view in, QueueRecord* q) {
  *q = QueueRecord();
  bool ok = ReadFields(
      in,
      [q](uint32_t field, uint64_t v) {
        const int64_t s = static_cast<int64_t>(v);
        switch (field) {
          case kQueueId:
            q->id = v;
            break;
          case kQueueCreateTime:
            q->create_time_us = s;
            break;
          case kQueueVisibilityUs:
            q->config.visibility_timeout = absl::Microseconds(s);
            break;
          case kQueueMaxMessageBytes:
            q->config.max_message_bytes = s;
            break;
          case kQueueDelayUs:
            q->config.delay = absl::Microseconds(s);
            break;
          case kQueueMaxAgeUs:
            q->config.retention_max_age = absl::Microseconds(s);
            break;
          case kQueueKeepDeletedUs:
            q->config.retention_keep_deleted_for = absl::Microseconds(s);
            break;
          case kQueueMaxReceives:
            q->config.max_receives = static_cast<int32_t>(v);
            break;
          case kQueueDedupWindowUs:
            q->config.dedup_window = absl::Microseconds(s);
            break;
        }
      },
      [q](uint32_t field, absl::string_view v) {
        if (field == kQueueName) q->name = std::string(v);
        if (field == kQueueDeadLetterQueue) {
          q->config.dead_letter_queue = std::string(v);
        }
      });
  if (!ok || q->id == 0 || q->name.empty()) return Corrupt("queue");
  return absl::OkStatus();
}

// GroupRecord fields.
enum : uint32_t {
  kGroupId = 1,
  kGroupName = 2,
  kGroupDeleteFloor = 3,
  kGroupCursorBase = 4,
  kGroupGeneration = 5,
};

std::string EncodeGroup(const GroupRecord& g) {
  std::string out;
  PutVarintField(&out, kGroupId, g.id);
  PutStringField(&out, kGroupName, g.name);
  PutVarintField(&out, kGroupDeleteFloor, g.delete_floor);
  PutVarintField(&out, kGroupCursorBase, g.cursor_base);
  PutVarintField(&out, kGroupGeneration, g.generation);
  return out;
}

absl::Status DecodeGroup(absl::string_view in, GroupRecord* g) {
  *g = GroupRecord();
  bool ok = ReadFields(
      in,
      [g](uint32_t field, uint64_t v) {
        switch (field) {
          case kGroupId:
            g->id = static_cast<uint32_t>(v);
            break;
          case kGroupDeleteFloor:
            g->delete_floor = v;
            break;
          case kGroupCursorBase:
            g->cursor_base = v;
            break;
          case kGroupGeneration:
            g->generation = static_cast<uint32_t>(v);
            break;
        }
      },
      [g](uint32_t field, absl::string_view v) {
        if (field == kGroupName) g->name = std::string(v);
      });
  if (!ok) return Corrupt("group");
  return absl::OkStatus();
}

std::string EncodeCounters(const Counters& c) {
  std::string out;
  PutFixed64BE(&out, c.sent);
  PutFixed64BE(&out, c.received);
  PutFixed64BE(&out, c.deleted);
  return out;
}

absl::Status DecodeCounters(absl::string_view in, Counters* c) {
  ByteReader r(in);
  if (!r.GetFixed64BE(&c->sent) || !r.GetFixed64BE(&c->received) ||
      !r.GetFixed64BE(&c->deleted) || !r.empty()) {
    return Corrupt("counters");
  }
  return absl::OkStatus();
}

}  // namespace weir
