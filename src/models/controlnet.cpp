#include "models/controlnet.h"

#include <nlohmann/json.hpp>

#include "controlnet/error.h"

namespace cn::models {
namespace {

torch::nn::Conv2d conv3x3(int64_t in, int64_t out, int64_t stride = 1) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).padding(1).stride(stride));
}

torch::nn::Conv2d zero_conv(int64_t in, int64_t out, int64_t kernel) {
  torch::nn::Conv2d conv(torch::nn::Conv2dOptions(in, out, kernel).padding(kernel / 2));
  torch::NoGradGuard no_grad;
  conv->weight.zero_();
  conv->bias.zero_();
  return conv;
}

}  // namespace

ControlNetConfig ControlNetConfig::from_json(const nlohmann::json& config) {
  ControlNetConfig c;
  c.trunk = UNetConfig::from_json(config);
  try {
    if (config.contains("conditioning_channels")) c.conditioning_channels = config["conditioning_channels"];
    if (config.contains("conditioning_embedding_out_channels"))
      c.conditioning_embedding_out_channels = config["conditioning_embedding_out_channels"].get<std::vector<int64_t>>();
    if (config.contains("global_pool_conditions")) c.global_pool_conditions = config["global_pool_conditions"];
    const std::string order = config.value("controlnet_conditioning_channel_order", "rgb");
    if (order != "rgb" && order != "bgr")
      throw Error("controlnet config: unsupported \"controlnet_conditioning_channel_order\": " + order);
    c.bgr_conditioning = order == "bgr";
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("controlnet config: ") + e.what());
  }
  if (c.conditioning_embedding_out_channels.empty())
    throw Error("controlnet config: \"conditioning_embedding_out_channels\" is empty");
  return c;
}

ControlNetConfig ControlNetConfig::from_unet(const UNetConfig& unet, int64_t vae_factor) {
  ControlNetConfig c;
  c.trunk = unet;
  // One stride-2 stage per factor of 2: (16, 32, 96, 256) for SD's 8x VAE.
  int64_t stages = 0;
  while ((int64_t(1) << stages) < vae_factor) ++stages;
  if ((int64_t(1) << stages) != vae_factor || stages > 3)
    throw Error("ControlNet: unsupported VAE down-sampling factor " + std::to_string(vae_factor));
  c.conditioning_embedding_out_channels.resize(stages + 1);
  return c;
}

nlohmann::json ControlNetConfig::to_json() const {
  auto j = trunk.to_json();
  j["_class_name"] = "ControlNetModel";
  j.erase("out_channels");
  j.erase("up_block_types");
  j["conditioning_channels"] = conditioning_channels;
  j["conditioning_embedding_out_channels"] = conditioning_embedding_out_channels;
  j["controlnet_conditioning_channel_order"] = bgr_conditioning ? "bgr" : "rgb";
  j["global_pool_conditions"] = global_pool_conditions;
  return j;
}

ControlNetConditioningEmbeddingImpl::ControlNetConditioningEmbeddingImpl(int64_t conditioning_channels,
                                                                         const std::vector<int64_t>& channels,
                                                                         int64_t out_channels) {
  conv_in = register_module("conv_in", conv3x3(conditioning_channels, channels[0]));
  blocks = register_module("blocks", torch::nn::ModuleList());
  for (size_t i = 0; i + 1 < channels.size(); ++i) {
    blocks->push_back(conv3x3(channels[i], channels[i]));
    blocks->push_back(conv3x3(channels[i], channels[i + 1], 2));
  }
  conv_out = register_module("conv_out", zero_conv(channels.back(), out_channels, 3));
}

torch::Tensor ControlNetConditioningEmbeddingImpl::forward(const torch::Tensor& condition) {
  auto x = torch::silu(conv_in(condition));
  for (const auto& block : *blocks) x = torch::silu(block->as<torch::nn::Conv2d>()->forward(x));
  return conv_out(x);
}

ControlNetModelImpl::ControlNetModelImpl(const ControlNetConfig& config)
    : UNetTrunkImpl(config.trunk), cn_config_(config) {
  const auto& ch = config.trunk.block_out_channels;
  controlnet_cond_embedding = register_module(
      "controlnet_cond_embedding",
      ControlNetConditioningEmbedding(config.conditioning_channels, config.conditioning_embedding_out_channels, ch[0]));
  controlnet_down_blocks = register_module("controlnet_down_blocks", torch::nn::ModuleList());
  for (int64_t channels : skip_channels()) controlnet_down_blocks->push_back(zero_conv(channels, channels, 1));
  controlnet_mid_block = register_module("controlnet_mid_block", zero_conv(ch.back(), ch.back(), 1));
}

torch::Tensor ControlNetModelImpl::embed_hint(const torch::Tensor& condition, Trace* trace) {
  if (condition.dim() != 4 || condition.size(1) != cn_config_.conditioning_channels)
    throw Error("control image: expected [B, " + std::to_string(cn_config_.conditioning_channels) +
                ", H, W], got " + c10::str(condition.sizes()));
  const int64_t factor = int64_t(1) << (cn_config_.conditioning_embedding_out_channels.size() - 1);
  if (condition.size(2) % factor || condition.size(3) % factor)
    throw Error("control image: " + std::to_string(condition.size(3)) + "x" + std::to_string(condition.size(2)) +
                " is not a multiple of the hint encoder's factor " + std::to_string(factor));
  auto input = condition.to(conv_in->weight.options());
  if (cn_config_.bgr_conditioning) input = input.flip({1});
  auto embedding = controlnet_cond_embedding(input);
  if (trace) (*trace)["intermediate.controlnet_cond_embedding"] = embedding;
  return embedding;
}

ControlResiduals ControlNetModelImpl::forward(const torch::Tensor& sample, const torch::Tensor& timestep,
                                              const torch::Tensor& context, const torch::Tensor& hint_embedding,
                                              double conditioning_scale, bool guess_mode, Trace* trace) {
  auto temb = embed_time(timestep, sample.size(0), trace);
  std::vector<torch::Tensor> skips;
  auto x = encode(sample, temb, context, hint_embedding, skips, trace);

  ControlResiduals out;
  const size_t n = skips.size();
  // float32 scales as the reference computes them (logspace in float32).
  auto scales = guess_mode ? torch::logspace(-1, 0, static_cast<int64_t>(n) + 1, 10.0, torch::kFloat)
                           : torch::ones({static_cast<int64_t>(n) + 1}, torch::kFloat);
  scales = (scales * conditioning_scale).to(x.device());
  auto finish = [&](torch::Tensor r, int64_t i) {
    if (cn_config_.global_pool_conditions) r = r.mean({2, 3}, true);
    return r * scales[i];
  };
  for (size_t i = 0; i < n; ++i)
    out.down.push_back(finish(controlnet_down_blocks[i]->as<torch::nn::Conv2d>()->forward(skips[i]), i));
  out.mid = finish(controlnet_mid_block(x), n);
  return out;
}

void ControlNetModelImpl::copy_trunk_from(UNet2DConditionModelImpl& unet) {
  torch::NoGradGuard no_grad;
  auto source = unet.named_parameters();
  for (auto& item : named_parameters()) {
    const auto& name = item.key();
    auto& param = item.value();
    const bool trunk = name.rfind("conv_in.", 0) == 0 || name.rfind("time_embedding.", 0) == 0 ||
                       name.rfind("down_blocks.", 0) == 0 || name.rfind("mid_block.", 0) == 0;
    if (!trunk) continue;
    auto* from = source.find(name);
    if (!from || !from->sizes().equals(param.sizes()))
      throw Error("add-control: the UNet has no parameter " + name + " of shape " + c10::str(param.sizes()));
    param.copy_(*from);
  }
}

}  // namespace cn::models
