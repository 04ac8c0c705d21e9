#include "engine/receipt.h"

#include "absl/strings/escaping.h"
#include "engine/coding.h"

namespace weir {
namespace {

constexpr uint8_t kReceiptVersion = 1;
// version + queue + group + generation + offset + receive count + checksum.
constexpr size_t kReceiptBytes = 1 + 8 + 4 + 4 + 8 + 4 + 4;

}  // namespace

std::string EncodeReceipt(const Receipt& r) {
  std::string raw;
  raw.reserve(kReceiptBytes);
  raw.push_back(static_cast<char>(kReceiptVersion));
  PutFixed64BE(&raw, r.queue_id);
  PutFixed32BE(&raw, r.group_id);
  PutFixed32BE(&raw, r.generation);
  PutFixed64BE(&raw, r.offset);
  PutFixed32BE(&raw, r.receive_count);
  PutFixed32BE(&raw, Checksum32(raw));
  return absl::WebSafeBase64Escape(raw);
}

absl::StatusOr<Receipt> DecodeReceipt(absl::string_view handle) {
  const auto invalid = [] {
    return absl::InvalidArgumentError("malformed receipt handle");
  };
  if (handle.empty() || handle.size() > kMaxReceiptLength) return invalid();
  std::string raw;
  if (!absl::WebSafeBase64Unescape(handle, &raw) ||
      raw.size() != kReceiptBytes) {
    return invalid();
  }
  // Re-encoding must give back the same text: rejects non-canonical forms.
  ByteReader r(raw);
  uint8_t version;
  Receipt out;
  uint32_t checksum;
  if (!r.GetByte(&version) || version != kReceiptVersion ||
      !r.GetFixed64BE(&out.queue_id) || !r.GetFixed32BE(&out.group_id) ||
      !r.GetFixed32BE(&out.generation) || !r.GetFixed64BE(&out.offset) ||
      !r.GetFixed32BE(&out.receive_count) || !r.GetFixed32BE(&checksum)) {
    return invalid();
  }
  if (checksum !=
          Checksum32(absl::string_view(raw).substr(0, raw.size() - 4)) ||
      EncodeReceipt(out) != handle) {
    return invalid();
  }
  return out;
}

}  // namespace weir
