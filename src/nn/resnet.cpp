#include "nn/resnet.h"

namespace cn::nn {

namespace F = torch::nn::functional;

ResnetBlock2DImpl::ResnetBlock2DImpl(const ResnetBlock2DOptions& o) {
  auto group_norm = [&](int64_t channels) {
    return torch::nn::GroupNorm(torch::nn::GroupNormOptions(o.groups, channels).eps(o.eps));
  };
  norm1 = register_module("norm1", group_norm(o.in_channels));
  conv1 = register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(o.in_channels, o.out_channels, 3).padding(1)));
  if (o.temb_channels > 0)
    time_emb_proj = register_module("time_emb_proj", torch::nn::Linear(o.temb_channels, o.out_channels));
  norm2 = register_module("norm2", group_norm(o.out_channels));
  conv2 = register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(o.out_channels, o.out_channels, 3).padding(1)));
  if (o.in_channels != o.out_channels)
    conv_shortcut = register_module("conv_shortcut", torch::nn::Conv2d(torch::nn::Conv2dOptions(o.in_channels, o.out_channels, 1)));
}

torch::Tensor ResnetBlock2DImpl::forward(const torch::Tensor& x, const torch::Tensor& temb) {
  auto h = conv1(torch::silu(norm1(x)));
  if (!time_emb_proj.is_empty() && temb.defined())
    h = h + time_emb_proj(torch::silu(temb)).unsqueeze(-1).unsqueeze(-1);
  h = conv2(torch::silu(norm2(h)));
  return (conv_shortcut.is_empty() ? x : conv_shortcut(x)) + h;
}

Downsample2DImpl::Downsample2DImpl(int64_t channels, bool vae_padding) : vae_padding_(vae_padding) {
  conv = register_module(
      "conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, channels, 3).stride(2).padding(vae_padding ? 0 : 1)));
}

torch::Tensor Downsample2DImpl::forward(const torch::Tensor& x) {
  return conv(vae_padding_ ? F::pad(x, F::PadFuncOptions({0, 1, 0, 1})) : x);
}

Upsample2DImpl::Upsample2DImpl(int64_t channels) {
  conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, channels, 3).padding(1)));
}

torch::Tensor Upsample2DImpl::forward(const torch::Tensor& x, c10::optional<at::IntArrayRef> size) {
  auto options = F::InterpolateFuncOptions().mode(torch::kNearest);
  if (size) options.size(std::vector<int64_t>(size->begin(), size->end()));
  else options.scale_factor(std::vector<double>{2.0, 2.0});
  return conv(F::interpolate(x, options));
}

}  // namespace cn::nn
