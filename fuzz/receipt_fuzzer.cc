// Fuzzes receipt-handle decoding (engine/receipt.h): any text must decode to
// a receipt or INVALID_ARGUMENT, never crash, and a receipt that decodes must
// be exactly the one Weir would encode for those fields.
#include <cstdint>
#include <cstdlib>

#include "absl/strings/string_view.h"
#include "engine/receipt.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view handle(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<weir::Receipt> r = weir::DecodeReceipt(handle);
  if (!r.ok()) {
    if (r.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
    return 0;
  }
  if (handle.size() > weir::kMaxReceiptLength) std::abort();
  // Canonical: the handle is the encoding of what it decodes to.
  if (weir::EncodeReceipt(*r) != handle) std::abort();
  absl::StatusOr<weir::Receipt> again = weir::DecodeReceipt(handle);
  if (!again.ok() || !(*again == *r)) std::abort();
  return 0;
}
