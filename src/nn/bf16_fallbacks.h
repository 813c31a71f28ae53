#pragma once
// Layers that LibTorch 1.13 cannot run in bf16 on the CPU, or runs far too
// slowly, computed in float32 when given bf16 (and exactly as torch::nn's
// otherwise), so that a network asked to run in bf16 runs, and runs fast.
// All measured here:
// - transposed convolution: the bf16 kernel returns the size of a forward
//   convolution (2x3 -> 1x1 where 4x6 is due);
// - reflection padding: "reflection_pad2d" is not implemented for BFloat16;
// - layer norm: the bf16 kernel does 0.25 G elements/s on [2, 4096, 320],
//   float32 with both casts 2.6 (and it is the more accurate of the two).
#include <torch/torch.h>

namespace cn::nn {

class ConvTranspose2dImpl : public torch::nn::ConvTranspose2dImpl {
 public:
  using torch::nn::ConvTranspose2dImpl::ConvTranspose2dImpl;
  torch::Tensor forward(const torch::Tensor& x);
};
TORCH_MODULE(ConvTranspose2d);

class ReflectionPad2dImpl : public torch::nn::ReflectionPad2dImpl {
 public:
  using torch::nn::ReflectionPad2dImpl::ReflectionPad2dImpl;
  torch::Tensor forward(const torch::Tensor& x);
};
TORCH_MODULE(ReflectionPad2d);

class LayerNormImpl : public torch::nn::LayerNormImpl {
 public:
  using torch::nn::LayerNormImpl::LayerNormImpl;
  torch::Tensor forward(const torch::Tensor& x);
};
TORCH_MODULE(LayerNorm);

}  // namespace cn::nn
