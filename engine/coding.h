// Byte encodings shared by every key and record Weir stores: big-endian
// fixed-width integers (so that byte order is numeric order in keys) and
// varints / length-prefixed strings for record bodies.
#ifndef WEIR_ENGINE_CODING_H_
#define WEIR_ENGINE_CODING_H_

#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace weir {

void PutFixed32BE(std::string* dst, uint32_t v);
void PutFixed64BE(std::string* dst, uint64_t v);
void PutVarint64(std::string* dst, uint64_t v);
void PutLengthPrefixed(std::string* dst, absl::string_view s);

uint32_t DecodeFixed32BE(const char* p);
uint64_t DecodeFixed64BE(const char* p);

// Reads encoded values from the front of a byte string. Every getter returns
// false (and leaves the output unspecified) when the input is too short or
// malformed, so decoders can report corruption instead of crashing on it.
class ByteReader {
 public:
  // `in` is borrowed and must outlive the reader.
  explicit ByteReader(absl::string_view in) : in_(in) {}
  // A temporary string would be gone before the first read.
  explicit ByteReader(std::string&&) = delete;

  bool GetByte(uint8_t* v);
  bool GetFixed32BE(uint32_t* v);
  bool GetFixed64BE(uint64_t* v);
  bool GetVarint64(uint64_t* v);
  bool GetVarint32(uint32_t* v);
  bool GetLengthPrefixed(absl::string_view* v);
  // Takes everything that is left.
  absl::string_view TakeRest();

  bool empty() const { return in_.empty(); }
  size_t remaining() const { return in_.size(); }

 private:
  absl::string_view in_;
};

// A 32-bit FNV-1a checksum; stable across processes and machines.
uint32_t Checksum32(absl::string_view data);

}  // namespace weir

#endif  // WEIR_ENGINE_CODING_H_
