#pragma once
// The Stable Diffusion UNet (diffusers UNet2DConditionModel) and the trunk it
// shares with the ControlNet (conv_in, time embedding, down blocks, mid block).
#include <torch/torch.h>

#include <map>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "models/trace.h"
#include "nn/embeddings.h"
#include "nn/unet_blocks.h"

namespace cn::models {

// The architecture, as diffusers' unet/config.json describes it. SD1.x, SD2.x
// and the tiny models are the same code with different numbers.
struct UNetConfig {
  int64_t in_channels = 4;
  int64_t out_channels = 4;
  std::vector<int64_t> block_out_channels{320, 640, 1280, 1280};
  std::vector<std::string> down_block_types{"CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                            "DownBlock2D"};
  std::vector<std::string> up_block_types{"UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                                          "CrossAttnUpBlock2D"};
  int64_t layers_per_block = 2;
  // Attention heads per down block (the up path uses them reversed). diffusers
  // stores these in "attention_head_dim" for SD1/SD2 (a historical misnomer).
  std::vector<int64_t> heads{8, 8, 8, 8};
  std::vector<int64_t> transformer_layers{1, 1, 1, 1};
  int64_t cross_attention_dim = 768;
  bool use_linear_projection = false;
  bool upcast_attention = false;
  int64_t norm_num_groups = 32;
  double norm_eps = 1e-5;
  bool flip_sin_to_cos = true;
  double freq_shift = 0;
  int64_t sample_size = 64;

  // Reads a diffusers UNet2DConditionModel (or ControlNetModel) config; values
  // this implementation does not support are refused naming the key.
  static UNetConfig from_json(const nlohmann::json& config);
  nlohmann::json to_json() const;
  int64_t time_embed_dim() const { return 4 * block_out_channels.at(0); }
};

// The 12 + 1 ControlNet residuals added to the UNet's skip connections and
// to its mid-block output.
struct ControlResiduals {
  std::vector<torch::Tensor> down;
  torch::Tensor mid;

  bool empty() const { return down.empty() && !mid.defined(); }
  // Element-wise sum, as several ControlNets combine.
  void accumulate(const ControlResiduals& other);
};

// conv_in, time embedding, down blocks and mid block: the part of the UNet
// that the ControlNet clones.
class UNetTrunkImpl : public torch::nn::Module {
 public:
  const UNetConfig& config() const { return config_; }

 protected:
  explicit UNetTrunkImpl(const UNetConfig& config);

  // The time embedding for `timestep` (0-dim or [B]) in the model's dtype.
  torch::Tensor embed_time(const torch::Tensor& timestep, int64_t batch, Trace* trace);
  // Runs conv_in (plus `hint_embedding` if defined), the down blocks and the
  // mid block; `skips` receives every skip connection in order.
  torch::Tensor encode(const torch::Tensor& sample, const torch::Tensor& temb, const torch::Tensor& context,
                       const torch::Tensor& hint_embedding, std::vector<torch::Tensor>& skips, Trace* trace);
  // Channels of each skip connection, in the order `encode` produces them.
  std::vector<int64_t> skip_channels() const;
  nn::UNetBlockOptions block_options(int64_t block, int64_t in_channels, int64_t out_channels, int64_t layers,
                                     bool cross_attention) const;

  UNetConfig config_;
  torch::nn::Conv2d conv_in{nullptr};
  nn::TimestepEmbedding time_embedding{nullptr};
  torch::nn::ModuleList down_blocks{nullptr};
  nn::MidBlock mid_block{nullptr};
};

class UNet2DConditionModelImpl : public UNetTrunkImpl {
 public:
  explicit UNet2DConditionModelImpl(const UNetConfig& config);

  // Noise (or v) prediction for latents `sample` [B, C, H, W] at `timestep`
  // (0-dim or [B], integer or fractional), text conditioning `context`
  // [B, T, D], and optionally ControlNet residuals.
  torch::Tensor forward(const torch::Tensor& sample, const torch::Tensor& timestep, const torch::Tensor& context,
                        const ControlResiduals* residuals = nullptr, Trace* trace = nullptr);

 private:
  torch::nn::ModuleList up_blocks{nullptr};
  torch::nn::GroupNorm conv_norm_out{nullptr};
  torch::nn::Conv2d conv_out{nullptr};
};
TORCH_MODULE(UNet2DConditionModel);

}  // namespace cn::models
