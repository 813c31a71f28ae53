#pragma once
// ControlNet (diffusers ControlNetModel): a trainable copy of the UNet trunk fed
// with latents plus the embedded condition image, whose block outputs pass
// through zero convolutions to become residuals for the locked UNet.
#include <torch/torch.h>

#include "models/unet.h"

namespace cn::models {

struct ControlNetConfig {
  UNetConfig trunk;
  int64_t conditioning_channels = 3;
  std::vector<int64_t> conditioning_embedding_out_channels{16, 32, 96, 256};
  bool bgr_conditioning = false;  // controlnet_conditioning_channel_order "bgr"
  bool global_pool_conditions = false;

  static ControlNetConfig from_json(const nlohmann::json& config);
  // The ControlNet that clones `unet` (diffusers ControlNetModel.from_unet),
  // its hint encoder down-sampling by the VAE's factor (8 for SD).
  static ControlNetConfig from_unet(const UNetConfig& unet, int64_t vae_factor = 8);
  nlohmann::json to_json() const;
};

// The hint encoder: condition image (8x the latent size) -> latent-grid
// features added to conv_in's output. Its conv_out starts at zero.
class ControlNetConditioningEmbeddingImpl : public torch::nn::Module {
 public:
  ControlNetConditioningEmbeddingImpl(int64_t conditioning_channels, const std::vector<int64_t>& channels,
                                      int64_t out_channels);
  torch::Tensor forward(const torch::Tensor& condition);

 private:
  torch::nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  torch::nn::ModuleList blocks{nullptr};
};
TORCH_MODULE(ControlNetConditioningEmbedding);

class ControlNetModelImpl : public UNetTrunkImpl {
 public:
  // Zero convolutions and the hint encoder's last conv start at zero, as in
  // the paper; loading weights overwrites them.
  explicit ControlNetModelImpl(const ControlNetConfig& config);

  const ControlNetConfig& controlnet_config() const { return cn_config_; }

  // The condition image [B, 3, 8h, 8w] in [0, 1] (RGB) embedded on the latent
  // grid. It does not depend on the step, so a generation computes it once.
  torch::Tensor embed_hint(const torch::Tensor& condition, Trace* trace = nullptr);

  // The 12 + 1 residuals for latents `sample` at `timestep` with `context`,
  // given the embedded hint (batch must match `sample`). All residuals are
  // scaled by `conditioning_scale`; in guess mode residual i additionally by
  // 10^(-1 + i/12) (0.1 for the first, 1 for the mid block), as diffusers does.
  ControlResiduals forward(const torch::Tensor& sample, const torch::Tensor& timestep, const torch::Tensor& context,
                           const torch::Tensor& hint_embedding, double conditioning_scale = 1.0,
                           bool guess_mode = false, Trace* trace = nullptr);

  // Copies conv_in, time embedding, down and mid blocks from a UNet of the
  // same configuration (what `add-control` does).
  void copy_trunk_from(UNet2DConditionModelImpl& unet);

 private:
  ControlNetConfig cn_config_;
  ControlNetConditioningEmbedding controlnet_cond_embedding{nullptr};
  torch::nn::ModuleList controlnet_down_blocks{nullptr};
  torch::nn::Conv2d controlnet_mid_block{nullptr};
};
TORCH_MODULE(ControlNetModel);

}  // namespace cn::models
