// Receipt handles: the opaque token a consumer gets with each leased message
// and hands back to Delete or ChangeVisibility. It names the lease exactly
// (queue, group, group generation, offset, receive count), so a handle stops
// working once the message is leased again: the receive count moved on.
#ifndef WEIR_ENGINE_RECEIPT_H_
#define WEIR_ENGINE_RECEIPT_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace weir {

struct Receipt {
  uint64_t queue_id = 0;
  uint32_t group_id = 0;
  uint32_t generation = 0;
  uint64_t offset = 0;
  uint32_t receive_count = 0;

  friend bool operator==(const Receipt& a, const Receipt& b) {
    return a.queue_id == b.queue_id && a.group_id == b.group_id &&
           a.generation == b.generation && a.offset == b.offset &&
           a.receive_count == b.receive_count;
  }
};

// URL-safe base64 text; at most kMaxReceiptLength characters.
std::string EncodeReceipt(const Receipt& r);

inline constexpr size_t kMaxReceiptLength = 64;

// INVALID_ARGUMENT if `handle` is not a receipt Weir produced (bad length,
// alphabet, version or checksum). Never crashes on any input.
absl::StatusOr<Receipt> DecodeReceipt(absl::string_view handle);

}  // namespace weir

#endif  // WEIR_ENGINE_RECEIPT_H_
