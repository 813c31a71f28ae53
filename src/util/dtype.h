#pragma once
// The names users give compute and storage dtypes (--dtype, --precision, the
// library's string options).
#include <torch/torch.h>

#include <shared_mutex>
#include <string>

namespace cn {

// fp32 / float32, bf16 / bfloat16, fp16 / float16; anything else is an Error
// listing the valid names.
torch::ScalarType parse_dtype(const std::string& name);

// Held exclusively by construct_in. LibTorch's default dtype is one setting
// for the whole process, so code that creates tensors without naming their
// dtype while another thread may be constructing a model (the server's
// detection requests) holds it shared.
std::shared_mutex& default_dtype_mutex();

// Returns make() run with `dtype` as the default dtype of new tensors: a
// model constructed this way is born in its compute dtype, so a bf16 model
// never exists in float32 first (that copy would double the peak memory of
// loading one).
template <typename Make>
auto construct_in(torch::ScalarType dtype, const Make& make) {
  struct Restore {
    caffe2::TypeMeta previous = c10::get_default_dtype();
    ~Restore() { c10::set_default_dtype(previous); }
  };
  const std::unique_lock<std::shared_mutex> lock(default_dtype_mutex());
  const Restore restore;
  c10::set_default_dtype(c10::scalarTypeToTypeMeta(dtype));
  return make();
}

}  // namespace cn
