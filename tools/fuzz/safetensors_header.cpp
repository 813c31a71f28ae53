// libFuzzer harness: the safetensors header parser. The first 8 bytes give the
// size of the data area the header must fit, the rest is the JSON text.
// A cn::Error is the expected answer to bad input; any other exception, a
// crash or a sanitizer report is a finding.
#include <cstdint>
#include <cstring>
#include <string>

#include "controlnet/error.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 8) return 0;
  uint64_t data_size = 0;
  std::memcpy(&data_size, data, 8);
  data_size &= (uint64_t(1) << 40) - 1;  // up to 1 TB: the parser must not allocate what is claimed
  const std::string json_text(reinterpret_cast<const char*>(data) + 8, size - 8);
  try {
    cn::io::Metadata metadata;
    cn::io::parse_safetensors_header(json_text, data_size, "fuzz.safetensors", &metadata);
  } catch (const cn::Error&) {
  }
  return 0;
}
