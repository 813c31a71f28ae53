#pragma once
// The names users give compute and storage dtypes (--dtype, --precision, the
// library's string options).
#include <torch/torch.h>

#include <string>

namespace cn {

// fp32 / float32, bf16 / bfloat16, fp16 / float16; anything else is an Error
// listing the valid names.
torch::ScalarType parse_dtype(const std::string& name);

}  // namespace cn
