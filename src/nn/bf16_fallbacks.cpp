#include "nn/bf16_fallbacks.h"

namespace cn::nn {

torch::Tensor ConvTranspose2dImpl::forward(const torch::Tensor& x) {
  if (x.scalar_type() != torch::kBFloat16) return torch::nn::ConvTranspose2dImpl::forward(x);
  const auto& o = options;
  const auto padding = c10::get<torch::ExpandingArray<2>>(o.padding());
  const auto wide_bias = bias.defined() ? bias.to(torch::kFloat32) : torch::Tensor();
  return torch::conv_transpose2d(x.to(torch::kFloat32), weight.to(torch::kFloat32), wide_bias, o.stride(), padding,
                                 o.output_padding(), o.groups(), o.dilation())
      .to(x.scalar_type());
}

torch::Tensor ReflectionPad2dImpl::forward(const torch::Tensor& x) {
  if (x.scalar_type() != torch::kBFloat16) return torch::nn::ReflectionPad2dImpl::forward(x);
  return torch::nn::ReflectionPad2dImpl::forward(x.to(torch::kFloat32)).to(x.scalar_type());
}

torch::Tensor LayerNormImpl::forward(const torch::Tensor& x) {
  // Other devices have float-accumulating half-precision kernels of their own.
  if (x.scalar_type() != torch::kBFloat16 || !x.device().is_cpu()) return torch::nn::LayerNormImpl::forward(x);
  const auto widen = [](const torch::Tensor& t) { return t.defined() ? t.to(torch::kFloat32) : t; };
  return torch::layer_norm(x.to(torch::kFloat32), options.normalized_shape(), widen(weight), widen(bias), options.eps())
      .to(x.scalar_type());
}

}  // namespace cn::nn
