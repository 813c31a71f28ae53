#pragma once
// ResNet block and the 2x down/up samplers shared by the UNet, the ControlNet
// and the VAE (diffusers ResnetBlock2D, Downsample2D, Upsample2D names).
#include <torch/torch.h>

namespace cn::nn {

struct ResnetBlock2DOptions {
  int64_t in_channels;
  int64_t out_channels;
  int64_t temb_channels = 0;  // 0: no time embedding (VAE)
  int64_t groups = 32;
  double eps = 1e-5;
};

// GroupNorm, SiLU, conv; + time_emb_proj(SiLU(temb)); GroupNorm, SiLU, conv;
// plus the input (through a 1x1 conv_shortcut when the channels change).
class ResnetBlock2DImpl : public torch::nn::Module {
 public:
  explicit ResnetBlock2DImpl(const ResnetBlock2DOptions& options);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& temb = {});

 private:
  torch::nn::GroupNorm norm1{nullptr}, norm2{nullptr};
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv_shortcut{nullptr};
  torch::nn::Linear time_emb_proj{nullptr};
};
TORCH_MODULE(ResnetBlock2D);

// 3x3 stride-2 conv. The UNet pads by 1 on every side; the VAE pads only
// right and bottom by 1 (LDM's asymmetric padding).
class Downsample2DImpl : public torch::nn::Module {
 public:
  Downsample2DImpl(int64_t channels, bool vae_padding);
  torch::Tensor forward(const torch::Tensor& x);

 private:
  bool vae_padding_;
  torch::nn::Conv2d conv{nullptr};
};
TORCH_MODULE(Downsample2D);

// Nearest-neighbour x2 (or to `size`), then a 3x3 conv.
class Upsample2DImpl : public torch::nn::Module {
 public:
  explicit Upsample2DImpl(int64_t channels);
  torch::Tensor forward(const torch::Tensor& x, c10::optional<at::IntArrayRef> size = c10::nullopt);

 private:
  torch::nn::Conv2d conv{nullptr};
};
TORCH_MODULE(Upsample2D);

}  // namespace cn::nn
