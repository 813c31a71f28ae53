#pragma once
// TensorFlow's "SAME" padding as timm and geffnet apply it to strided convs
// and pools (the TF-ported ResNet-v2 and EfficientNet weights expect it): the
// input is padded so that out = ceil(in / stride), the odd element going
// after (right / bottom).
#include <torch/torch.h>

namespace cn::preprocess {

// (before, after) padding of one dimension.
inline std::pair<int64_t, int64_t> same_padding(int64_t size, int64_t kernel, int64_t stride) {
  const int64_t total = std::max((size + stride - 1) / stride * stride - stride + kernel - size, int64_t(0));
  return {total / 2, total - total / 2};
}

// x (B, C, H, W) padded with `value` for a square kernel.
inline torch::Tensor pad_same(const torch::Tensor& x, int64_t kernel, int64_t stride, double value = 0.0) {
  const auto [top, bottom] = same_padding(x.size(2), kernel, stride);
  const auto [left, right] = same_padding(x.size(3), kernel, stride);
  if (top + bottom + left + right == 0) return x;
  return torch::constant_pad_nd(x, {left, right, top, bottom}, value);
}

}  // namespace cn::preprocess
