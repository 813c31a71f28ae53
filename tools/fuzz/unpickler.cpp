// libFuzzer harness: the restricted unpickler on arbitrary pickle bytes.
// Storages are served as zeros up to 1 MiB (a real archive bounds them by its
// records); a larger claim is refused as the archive reader would.
// A cn::Error is the expected answer to bad input; any other exception, a
// crash or a sanitizer report is a finding.
#include <cstdint>
#include <string>

#include "controlnet/error.h"
#include "io/pickle.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string pickle(reinterpret_cast<const char*>(data), size);
  auto storage = [](const std::string& key, torch::ScalarType dtype, int64_t numel) {
    if (numel < 0 || numel > (int64_t(1) << 20) / int64_t(c10::elementSize(dtype)))
      throw cn::Error("fuzz: storage " + key + " larger than the archive");
    return torch::zeros({numel}, torch::dtype(dtype));
  };
  try {
    cn::io::unpickle_state_dict(pickle, "fuzz.pth", storage);
  } catch (const cn::Error&) {
  }
  return 0;
}
