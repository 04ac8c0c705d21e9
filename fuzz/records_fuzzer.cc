// Fuzzes the decoders of everything Weir stores (engine/records.h,
// engine/key_codec.h, engine/coding.h). The first byte picks a decoder, the
// rest is its input. A corrupted record must come back as DATA_LOSS (a key
// that is not one as false), never as a crash; what decodes must survive an
// encode/decode round trip unchanged.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "engine/coding.h"
#include "engine/key_codec.h"
#include "engine/queue_config.h"
#include "engine/records.h"

namespace weir {
namespace {

void Check(bool ok) {
  if (!ok) std::abort();
}

// A decoder's verdict: OK, or DATA_LOSS for corrupted input.
bool Decoded(const absl::Status& s) {
  Check(s.ok() || s.code() == absl::StatusCode::kDataLoss);
  return s.ok();
}

bool SameMessage(const MessageRecord& a, const MessageRecord& b) {
  return a.enqueue_time_us == b.enqueue_time_us &&
         a.visible_at_us == b.visible_at_us && a.attributes == b.attributes &&
         a.ordering_key == b.ordering_key && a.dedup_id == b.dedup_id &&
         a.body == b.body;
}

void FuzzMessage(absl::string_view in) {
  MessageRecord m;
  if (!Decoded(DecodeMessage(in, &m))) return;
  MessageRecord again;
  Check(DecodeMessage(EncodeMessage(m), &again).ok());
  Check(SameMessage(m, again));
}

void FuzzLease(absl::string_view in) {
  LeaseRecord l;
  if (!Decoded(DecodeLease(in, &l))) return;
  LeaseRecord again;
  Check(DecodeLease(EncodeLease(l), &again).ok());
  Check(again.deadline_us == l.deadline_us &&
        again.receive_count == l.receive_count);
}

void FuzzQueue(absl::string_view in) {
  QueueRecord q;
  if (!Decoded(DecodeQueue(in, &q))) return;
  QueueRecord again;
  Check(DecodeQueue(EncodeQueue(q), &again).ok());
  Check(again.id == q.id && again.name == q.name &&
        again.create_time_us == q.create_time_us && again.config == q.config);
  // A stored configuration may be anything a corrupted record holds: it
  // must be normalized or refused, not crashed on.
  QueueConfig config = q.config;
  absl::Status s = NormalizeQueueConfig(&config);
  Check(s.ok() || s.code() == absl::StatusCode::kInvalidArgument);
  (void)ValidateQueueName(q.name);
  (void)ValidateQueueName(q.config.dead_letter_queue);
}

void FuzzGroup(absl::string_view in) {
  GroupRecord g;
  if (!Decoded(DecodeGroup(in, &g))) return;
  GroupRecord again;
  Check(DecodeGroup(EncodeGroup(g), &again).ok());
  Check(again.id == g.id && again.name == g.name &&
        again.delete_floor == g.delete_floor &&
        again.cursor_base == g.cursor_base && again.generation == g.generation);
  (void)ValidateGroupName(g.name);
}

void FuzzCounters(absl::string_view in) {
  Counters c;
  if (!Decoded(DecodeCounters(in, &c))) return;
  Check(EncodeCounters(c) == in);
}

// Keys are fixed-width: one that parses is exactly the key built from its
// parts.
void FuzzKeys(absl::string_view key) {
  uint64_t qid, a, offset;
  uint32_t gid;
  absl::string_view id;
  if (keys::ParseMessage(key, &qid, &offset)) {
    Check(keys::Message(qid, offset) == key);
  }
  if (keys::ParseGroupOffset(key, &qid, &gid, &offset)) {
    Check(keys::GroupOffset(qid, gid, offset) == key);
  }
  if (keys::ParseDelay(key, &qid, &a, &offset)) {
    Check(keys::Delay(qid, a, offset) == key);
  }
  if (keys::ParseTimeIndex(key, &qid, &a, &offset)) {
    Check(keys::TimeIndex(qid, a, offset) == key);
  }
  if (keys::ParseOrderingKey(key, &qid, &offset)) {
    Check(keys::OrderingKey(qid, offset) == key);
  }
  if (keys::ParseDedup(key, &qid, &a, &id)) {
    Check(keys::Dedup(qid, a, id) == key);
  }
  // PrefixSuccessor's precondition: not all 0xff bytes (nor empty).
  if (key.find_first_not_of('\xff') != absl::string_view::npos) {
    Check(keys::PrefixSuccessor(key) > key);
  }
}

// Drives ByteReader with its own input: each byte picks the next getter.
void FuzzByteReader(absl::string_view in) {
  if (in.empty()) return;
  const absl::string_view ops = in.substr(0, in.size() / 2 + 1);
  ByteReader r(in.substr(ops.size()));
  for (char op : ops) {
    const size_t before = r.remaining();
    bool ok = false;
    switch (static_cast<uint8_t>(op) % 7) {
      case 0: {
        uint8_t v;
        ok = r.GetByte(&v);
        break;
      }
      case 1: {
        uint32_t v;
        ok = r.GetFixed32BE(&v);
        break;
      }
      case 2: {
        uint64_t v;
        ok = r.GetFixed64BE(&v);
        break;
      }
      case 3: {
        uint64_t v;
        ok = r.GetVarint64(&v);
        if (ok) {
          std::string enc;
          PutVarint64(&enc, v);
          Check(enc.size() <= before - r.remaining());
        }
        break;
      }
      case 4: {
        uint32_t v;
        ok = r.GetVarint32(&v);
        break;
      }
      case 5: {
        absl::string_view v;
        ok = r.GetLengthPrefixed(&v);
        if (ok) Check(v.size() <= before);
        break;
      }
      case 6:
        ok = true;
        (void)r.TakeRest();
        Check(r.empty());
        break;
    }
    Check(r.remaining() <= before);
    if (!ok) break;
  }
}

}  // namespace
}  // namespace weir

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const absl::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 7) {
    case 0:
      weir::FuzzMessage(in);
      break;
    case 1:
      weir::FuzzLease(in);
      break;
    case 2:
      weir::FuzzQueue(in);
      break;
    case 3:
      weir::FuzzGroup(in);
      break;
    case 4:
      weir::FuzzCounters(in);
      break;
    case 5:
      weir::FuzzKeys(in);
      break;
    case 6:
      weir::FuzzByteReader(in);
      break;
  }
  return 0;
}
