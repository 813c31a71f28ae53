#pragma once
// Layers that LibTorch 1.13 cannot run in bf16 on the CPU, computed in float32
// when given bf16 (and exactly as torch::nn's otherwise), so that a network
// asked to run in bf16 still runs. Both measured here:
// - transposed convolution: the bf16 kernel returns the size of a forward
//   convolution (2x3 -> 1x1 where 4x6 is due);
// - reflection padding: "reflection_pad2d" is not implemented for BFloat16.
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

}  // namespace cn::nn
