#include "engine/key_codec.h"

#include "engine/coding.h"

namespace weir {
namespace keys {

std::string QueueName(absl::string_view name) {
  std::string k = "N";
  k.append(name.data(), name.size());
  return k;
}

std::string Queue(uint64_t qid) {
  std::string k = "Q";
  PutFixed64BE(&k, qid);
  return k;
}

std::string Group(uint64_t qid, uint32_t gid) {
  std::string k = GroupPrefix(qid);
  PutFixed32BE(&k, gid);
  return k;
}

std::string GroupPrefix(uint64_t qid) {
  std::string k = "G";
  PutFixed64BE(&k, qid);
  return k;
}

std::string Counters(uint64_t qid, uint32_t gid) {
  std::string k = CountersPrefix(qid);
  PutFixed32BE(&k, gid);
  return k;
}

std::string CountersPrefix(uint64_t qid) {
  std::string k = "T";
  PutFixed64BE(&k, qid);
  return k;
}

std::string NextQueueId() { return "X"; }

std::string NextGroupId(uint64_t qid) {
  std::string k = "H";
  PutFixed64BE(&k, qid);
  return k;
}

std::string Message(uint64_t qid, uint64_t offset) {
  std::string k;
  k.reserve(16);
  PutFixed64BE(&k, qid);
  PutFixed64BE(&k, offset);
  return k;
}

bool ParseMessage(absl::string_view key, uint64_t* qid, uint64_t* offset) {
  if (key.size() != 16) return false;
  *qid = DecodeFixed64BE(key.data());
  *offset = DecodeFixed64BE(key.data() + 8);
  return true;
}

std::string GroupOffset(uint64_t qid, uint32_t gid, uint64_t offset) {
  std::string k;
  k.reserve(20);
  PutFixed64BE(&k, qid);
  PutFixed32BE(&k, gid);
  PutFixed64BE(&k, offset);
  return k;
}

bool ParseGroupOffset(absl::string_view key, uint64_t* qid, uint32_t* gid,
                      uint64_t* offset) {
  if (key.size() != 20) return false;
  *qid = DecodeFixed64BE(key.data());
  *gid = DecodeFixed32BE(key.data() + 8);
  *offset = DecodeFixed64BE(key.data() + 12);
  return true;
}

namespace {

std::string TaggedTimeKey(char tag, uint64_t qid, uint64_t t, uint64_t offset) {
  std::string k(1, tag);
  PutFixed64BE(&k, qid);
  PutFixed64BE(&k, t);
  PutFixed64BE(&k, offset);
  return k;
}

bool ParseTaggedTimeKey(char tag, absl::string_view key, uint64_t* qid,
                        uint64_t* t, uint64_t* offset) {
  if (key.size() != 25 || key[0] != tag) return false;
  *qid = DecodeFixed64BE(key.data() + 1);
  *t = DecodeFixed64BE(key.data() + 9);
  *offset = DecodeFixed64BE(key.data() + 17);
  return true;
}

std::string TaggedPrefix(char tag, uint64_t qid) {
  std::string k(1, tag);
  PutFixed64BE(&k, qid);
  return k;
}

}  // namespace

std::string TimeIndex(uint64_t qid, uint64_t time_us, uint64_t offset) {
  return TaggedTimeKey('I', qid, time_us, offset);
}

bool ParseTimeIndex(absl::string_view key, uint64_t* qid, uint64_t* time_us,
                    uint64_t* offset) {
  return ParseTaggedTimeKey('I', key, qid, time_us, offset);
}

std::string Delay(uint64_t qid, uint64_t visible_at_us, uint64_t offset) {
  return TaggedTimeKey('D', qid, visible_at_us, offset);
}

bool ParseDelay(absl::string_view key, uint64_t* qid, uint64_t* visible_at_us,
                uint64_t* offset) {
  return ParseTaggedTimeKey('D', key, qid, visible_at_us, offset);
}

std::string DelayPrefix(uint64_t qid) { return TaggedPrefix('D', qid); }
std::string TimeIndexPrefix(uint64_t qid) { return TaggedPrefix('I', qid); }

std::string OrderingKey(uint64_t qid, uint64_t offset) {
  std::string k = TaggedPrefix('K', qid);
  PutFixed64BE(&k, offset);
  return k;
}

bool ParseOrderingKey(absl::string_view key, uint64_t* qid, uint64_t* offset) {
  if (key.size() != 17 || key[0] != 'K') return false;
  *qid = DecodeFixed64BE(key.data() + 1);
  *offset = DecodeFixed64BE(key.data() + 9);
  return true;
}

std::string OrderingKeyPrefix(uint64_t qid) { return TaggedPrefix('K', qid); }

std::string Dedup(uint64_t qid, uint64_t time_us, absl::string_view id) {
  std::string k = TaggedPrefix('E', qid);
  PutFixed64BE(&k, time_us);
  k.append(id.data(), id.size());
  return k;
}

bool ParseDedup(absl::string_view key, uint64_t* qid, uint64_t* time_us,
                absl::string_view* id) {
  if (key.size() < 17 || key[0] != 'E') return false;
  *qid = DecodeFixed64BE(key.data() + 1);
  *time_us = DecodeFixed64BE(key.data() + 9);
  *id = key.substr(17);
  return true;
}

std::string DedupPrefix(uint64_t qid) { return TaggedPrefix('E', qid); }

std::string GroupOffsetPrefix(uint64_t qid, uint32_t gid) {
  std::string k;
  PutFixed64BE(&k, qid);
  PutFixed32BE(&k, gid);
  return k;
}

std::string PrefixSuccessor(absl::string_view prefix) {
  std::string s(prefix);
  while (!s.empty()) {
    unsigned char last = static_cast<unsigned char>(s.back());
    if (last != 0xff) {
      s.back() = static_cast<char>(last + 1);
      return s;
    }
    s.pop_back();
  }
  return s;  // Unreachable for valid prefixes.
}

std::string QueueBegin(uint64_t qid) {
  std::string k;
  PutFixed64BE(&k, qid);
  return k;
}

std::string QueueEnd(uint64_t qid) { return PrefixSuccessor(QueueBegin(qid)); }

}  // namespace keys
}  // namespace weir
