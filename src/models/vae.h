#pragma once
// The Stable Diffusion autoencoder (diffusers AutoencoderKL): images in
// [-1, 1] <-> latents on an 8x smaller grid.
#include <torch/torch.h>

#include <nlohmann/json_fwd.hpp>
#include <vector>

#include "models/trace.h"

namespace cn::models {

class VaeEncoderImpl;
class VaeDecoderImpl;

struct VaeConfig {
  int64_t in_channels = 3;
  int64_t out_channels = 3;
  int64_t latent_channels = 4;
  std::vector<int64_t> block_out_channels{128, 256, 512, 512};
  int64_t layers_per_block = 2;
  int64_t norm_num_groups = 32;
  double scaling_factor = 0.18215;
  int64_t sample_size = 512;

  static VaeConfig from_json(const nlohmann::json& config);
  nlohmann::json to_json() const;
  // Image pixels per latent along each side: one 2x down-sampling between
  // consecutive blocks (8 for SD's four blocks).
  int64_t downsampling_factor() const { return int64_t(1) << (block_out_channels.size() - 1); }
};

// The diagonal Gaussian the encoder predicts for each latent.
struct Posterior {
  torch::Tensor mean;
  torch::Tensor logvar;  // clamped to [-30, 20]
  torch::Tensor std() const { return (0.5 * logvar).exp(); }
  // mean + std * noise, the noise drawn from `generator` on the CPU in float32
  // (as diffusers does with a CPU generator) and moved to the mean's device.
  torch::Tensor sample(torch::Generator& generator) const;
};

class AutoencoderKLImpl : public torch::nn::Module {
 public:
  explicit AutoencoderKLImpl(const VaeConfig& config);
  const VaeConfig& config() const { return config_; }
  double scaling_factor() const { return config_.scaling_factor; }

  // `image` [B, 3, H, W] in [-1, 1].
  Posterior encode(const torch::Tensor& image);
  // Raw decoder output in about [-1, 1] for unscaled latents (divide SD
  // latents by the scaling factor first).
  torch::Tensor decode(const torch::Tensor& latents);
  // The same in overlapping tiles of `tile` latent pixels blended linearly
  // across `overlap` pixels: memory bounded by the tile, for large images.
  torch::Tensor decode_tiled(const torch::Tensor& latents, int64_t tile = 64, int64_t overlap = 16);

  // Filled by encode/decode when set: "encoder_out", "post_quant_conv_out".
  Trace* trace = nullptr;

 private:
  VaeConfig config_;
  std::shared_ptr<VaeEncoderImpl> encoder;
  std::shared_ptr<VaeDecoderImpl> decoder;
  torch::nn::Conv2d quant_conv{nullptr}, post_quant_conv{nullptr};
};
TORCH_MODULE(AutoencoderKL);

}  // namespace cn::models
