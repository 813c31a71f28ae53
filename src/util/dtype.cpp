#include "util/dtype.h"

#include "controlnet/error.h"

namespace cn {

torch::ScalarType parse_dtype(const std::string& name) {
  if (name == "fp32" || name == "float32") return torch::kFloat32;
  if (name == "bf16" || name == "bfloat16") return torch::kBFloat16;
  if (name == "fp16" || name == "float16") return torch::kFloat16;
  throw Error("unknown dtype '" + name + "' (valid: fp32, bf16, fp16)");
}

std::shared_mutex& default_dtype_mutex() {
  static std::shared_mutex mutex;
  return mutex;
}

}  // namespace cn
