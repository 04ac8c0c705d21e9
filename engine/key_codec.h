// The storage layout: every RocksDB column family Weir uses and the shape of
// its keys. Integers in keys are big-endian and fixed-width, so byte order is
// numeric order: a queue's messages sort by offset, a group's leases by
// offset, the delay index by time.
//
//   column family  key                                  value
//   -------------  -----------------------------------  ---------------------
//   meta           'N' name                             queue id (fixed64)
//                  'Q' qid                              QueueRecord
//                  'G' qid gid                          GroupRecord
//                  'T' qid gid                          Counters (merge: add)
//                  'H' qid                              next group id
//                  'X'                                  next queue id
//   messages       qid offset                           MessageRecord (once)
//   leases         qid gid offset                       LeaseRecord
//   deleted        qid gid offset (offset >= floor)     empty
//   index          'D' qid visible_at_us offset         empty (delay index)
//                  'I' qid enqueue_time_us offset       empty (sparse time
//                                                       index: an entry at
//                                                       least every 1024
//                                                       messages or 1 s)
//                  'K' qid offset                       ordering key of a
//                                                       keyed message
//                  'E' qid enqueue_time_us dedup_id     offset (dedup index)
//
// qid: fixed64, never reused. gid: fixed32, 0 is a queue's default group.
#ifndef WEIR_ENGINE_KEY_CODEC_H_
#define WEIR_ENGINE_KEY_CODEC_H_

#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace weir {

// Column family names.
inline constexpr char kMetaCf[] = "meta";
inline constexpr char kMessagesCf[] = "messages";
inline constexpr char kLeasesCf[] = "leases";
inline constexpr char kDeletedCf[] = "deleted";
inline constexpr char kIndexCf[] = "index";

namespace keys {

// meta
std::string QueueName(absl::string_view name);  // 'N' name
inline constexpr char kQueueNamePrefix[] = "N";
std::string Queue(uint64_t qid);                   // 'Q' qid
std::string Group(uint64_t qid, uint32_t gid);     // 'G' qid gid
std::string GroupPrefix(uint64_t qid);             // 'G' qid
std::string Counters(uint64_t qid, uint32_t gid);  // 'T' qid gid
std::string CountersPrefix(uint64_t qid);          // 'T' qid
std::string NextQueueId();                         // 'X'
std::string NextGroupId(uint64_t qid);             // 'H' qid

// messages
std::string Message(uint64_t qid, uint64_t offset);
// Decodes a messages key; false if it is not one.
bool ParseMessage(absl::string_view key, uint64_t* qid, uint64_t* offset);

// leases and deleted share one shape.
std::string GroupOffset(uint64_t qid, uint32_t gid, uint64_t offset);
bool ParseGroupOffset(absl::string_view key, uint64_t* qid, uint32_t* gid,
                      uint64_t* offset);

// index: delay entries.
std::string Delay(uint64_t qid, uint64_t visible_at_us, uint64_t offset);
bool ParseDelay(absl::string_view key, uint64_t* qid, uint64_t* visible_at_us,
                uint64_t* offset);

// index: sparse time -> offset entries.
std::string TimeIndex(uint64_t qid, uint64_t time_us, uint64_t offset);
bool ParseTimeIndex(absl::string_view key, uint64_t* qid, uint64_t* time_us,
                    uint64_t* offset);
// 'D' qid / 'I' qid: every delay / time entry of a queue.
std::string DelayPrefix(uint64_t qid);
std::string TimeIndexPrefix(uint64_t qid);
// index: ordering keys of keyed messages.
std::string OrderingKey(uint64_t qid, uint64_t offset);
bool ParseOrderingKey(absl::string_view key, uint64_t* qid, uint64_t* offset);
std::string OrderingKeyPrefix(uint64_t qid);
// index: dedup ids, by the time they were first sent.
std::string Dedup(uint64_t qid, uint64_t time_us, absl::string_view id);
bool ParseDedup(absl::string_view key, uint64_t* qid, uint64_t* time_us,
                absl::string_view* id);
std::string DedupPrefix(uint64_t qid);

// The key range of one group in the leases and deleted families.
std::string GroupOffsetPrefix(uint64_t qid, uint32_t gid);

// The smallest key above every key that starts with `prefix` (for iterator
// upper bounds and range deletes). `prefix` must not be all 0xff bytes.
std::string PrefixSuccessor(absl::string_view prefix);

// A queue's whole key range in a column family keyed by qid first.
std::string QueueBegin(uint64_t qid);
std::string QueueEnd(uint64_t qid);

}  // namespace keys
}  // namespace weir

#endif  // WEIR_ENGINE_KEY_CODEC_H_
