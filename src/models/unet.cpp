#include "models/unet.h"

#include <nlohmann/json.hpp>

#include "controlnet/error.h"

namespace cn::models {
namespace {

using json = nlohmann::json;

// Keys whose value must be the one listed (the SD1/SD2 value); any other value
// selects an architecture this implementation does not have.
const std::vector<std::pair<std::string, json>> kFixedKeys = {
    {"act_fn", "silu"},
    {"addition_embed_type", nullptr},
    {"center_input_sample", false},
    {"class_embed_type", nullptr},
    {"conv_in_kernel", 3},
    {"conv_out_kernel", 3},
    {"downsample_padding", 1},
    {"dual_cross_attention", false},
    {"encoder_hid_dim", nullptr},
    {"encoder_hid_dim_type", nullptr},
    {"mid_block_scale_factor", 1.0},
    {"mid_block_type", "UNetMidBlock2DCrossAttn"},
    {"num_class_embeds", nullptr},
    {"only_cross_attention", false},
    {"resnet_time_scale_shift", "default"},
    {"time_cond_proj_dim", nullptr},
    {"time_embedding_type", "positional"},
    {"class_embeddings_concat", false},
    {"resnet_out_scale_factor", 1.0},
    {"resnet_skip_time_act", false},
    {"time_embedding_act_fn", nullptr},
    {"time_embedding_dim", nullptr},
    {"timestep_post_act", nullptr},
    {"attention_type", "default"},
    {"cross_attention_norm", nullptr},
    {"mid_block_only_cross_attention", nullptr},
    {"reverse_transformer_layers_per_block", nullptr},
};

std::vector<int64_t> per_block(const json& value, size_t blocks, const char* key) {
  if (value.is_number_integer()) return std::vector<int64_t>(blocks, value.get<int64_t>());
  if (!value.is_array() || value.size() != blocks)
    throw Error(std::string("unet config: \"") + key + "\" must be an integer or a list of " +
                std::to_string(blocks) + " integers");
  return value.get<std::vector<int64_t>>();
}

template <typename T>
void read(const json& config, const char* key, T& field) {
  if (config.contains(key) && !config.at(key).is_null()) field = config.at(key).get<T>();
}

}  // namespace

UNetConfig UNetConfig::from_json(const json& config) {
  for (const auto& [key, expected] : kFixedKeys) {
    if (!config.contains(key)) continue;
    const auto& value = config.at(key);
    const bool same = value.is_number() && expected.is_number() ? value.get<double>() == expected.get<double>()
                                                                 : value == expected;
    if (!same)
      throw Error("unet config: unsupported \"" + key + "\": " + value.dump() + " (supported: " + expected.dump() + ")");
  }
  UNetConfig c;
  try {
    read(config, "in_channels", c.in_channels);
    read(config, "out_channels", c.out_channels);
    read(config, "block_out_channels", c.block_out_channels);
    read(config, "down_block_types", c.down_block_types);
    read(config, "up_block_types", c.up_block_types);
    read(config, "layers_per_block", c.layers_per_block);
    read(config, "cross_attention_dim", c.cross_attention_dim);
    read(config, "use_linear_projection", c.use_linear_projection);
    read(config, "upcast_attention", c.upcast_attention);
    read(config, "norm_num_groups", c.norm_num_groups);
    read(config, "norm_eps", c.norm_eps);
    read(config, "flip_sin_to_cos", c.flip_sin_to_cos);
    read(config, "freq_shift", c.freq_shift);
    read(config, "sample_size", c.sample_size);
  } catch (const json::exception& e) {
    throw Error(std::string("unet config: ") + e.what());
  }
  const size_t blocks = c.block_out_channels.size();
  if (blocks == 0 || c.down_block_types.size() != blocks)
    throw Error("unet config: \"down_block_types\" and \"block_out_channels\" must have the same non-zero length");
  for (const auto& type : c.down_block_types)
    if (type != "CrossAttnDownBlock2D" && type != "DownBlock2D")
      throw Error("unet config: unsupported down block type \"" + type + "\"");
  for (const auto& type : c.up_block_types)
    if (type != "CrossAttnUpBlock2D" && type != "UpBlock2D")
      throw Error("unet config: unsupported up block type \"" + type + "\"");
  // num_attention_heads takes precedence; SD configs only set attention_head_dim,
  // which diffusers interprets as the number of heads.
  const char* heads_key = config.contains("num_attention_heads") && !config["num_attention_heads"].is_null()
                              ? "num_attention_heads"
                              : "attention_head_dim";
  c.heads = config.contains(heads_key) ? per_block(config[heads_key], blocks, heads_key)
                                       : std::vector<int64_t>(blocks, 8);
  c.transformer_layers = config.contains("transformer_layers_per_block")
                             ? per_block(config["transformer_layers_per_block"], blocks, "transformer_layers_per_block")
                             : std::vector<int64_t>(blocks, 1);
  for (size_t i = 0; i < blocks; ++i)
    if (c.heads[i] <= 0 || c.block_out_channels[i] % c.heads[i] != 0)
      throw Error("unet config: " + std::to_string(c.block_out_channels[i]) + " channels of block " +
                  std::to_string(i) + " do not split into " + std::to_string(c.heads[i]) + " heads");
  return c;
}

json UNetConfig::to_json() const {
  json j = {{"_class_name", "UNet2DConditionModel"},
            {"in_channels", in_channels},
            {"out_channels", out_channels},
            {"block_out_channels", block_out_channels},
            {"down_block_types", down_block_types},
            {"up_block_types", up_block_types},
            {"mid_block_type", "UNetMidBlock2DCrossAttn"},
            {"layers_per_block", layers_per_block},
            {"attention_head_dim", heads},
            {"transformer_layers_per_block", transformer_layers},
            {"cross_attention_dim", cross_attention_dim},
            {"use_linear_projection", use_linear_projection},
            {"upcast_attention", upcast_attention},
            {"norm_num_groups", norm_num_groups},
            {"norm_eps", norm_eps},
            {"flip_sin_to_cos", flip_sin_to_cos},
            {"freq_shift", freq_shift},
            {"sample_size", sample_size},
            {"act_fn", "silu"},
            {"downsample_padding", 1}};
  return j;
}

void ControlResiduals::accumulate(const ControlResiduals& other) {
  if (empty()) {
    *this = other;
    return;
  }
  TORCH_CHECK(down.size() == other.down.size(), "ControlNet residual counts differ: ", down.size(), " vs ",
              other.down.size());
  for (size_t i = 0; i < down.size(); ++i) down[i] = down[i] + other.down[i];
  mid = mid + other.mid;
}

UNetTrunkImpl::UNetTrunkImpl(const UNetConfig& config) : config_(config) {
  const auto& ch = config.block_out_channels;
  conv_in = register_module(
      "conv_in", torch::nn::Conv2d(torch::nn::Conv2dOptions(config.in_channels, ch[0], 3).padding(1)));
  time_embedding = register_module("time_embedding", nn::TimestepEmbedding(ch[0], config.time_embed_dim()));
  down_blocks = register_module("down_blocks", torch::nn::ModuleList());
  for (size_t i = 0; i < ch.size(); ++i) {
    const bool last = i + 1 == ch.size();
    down_blocks->push_back(nn::DownBlock(
        block_options(i, i == 0 ? ch[0] : ch[i - 1], ch[i], config.layers_per_block,
                      config.down_block_types[i] == "CrossAttnDownBlock2D"),
        !last));
  }
  mid_block = register_module("mid_block", nn::MidBlock(block_options(ch.size() - 1, ch.back(), ch.back(), 1, true)));
}

nn::UNetBlockOptions UNetTrunkImpl::block_options(int64_t block, int64_t in_channels, int64_t out_channels,
                                                  int64_t layers, bool cross_attention) const {
  nn::UNetBlockOptions o;
  o.in_channels = in_channels;
  o.out_channels = out_channels;
  o.temb_channels = config_.time_embed_dim();
  o.layers = layers;
  o.cross_attention = cross_attention;
  o.groups = config_.norm_num_groups;
  o.eps = config_.norm_eps;
  o.transformer.heads = config_.heads.at(block);
  o.transformer.layers = config_.transformer_layers.at(block);
  o.transformer.context_dim = config_.cross_attention_dim;
  o.transformer.linear_projection = config_.use_linear_projection;
  o.transformer.upcast_attention = config_.upcast_attention;
  return o;
}

std::vector<int64_t> UNetTrunkImpl::skip_channels() const {
  const auto& ch = config_.block_out_channels;
  std::vector<int64_t> skips{ch[0]};
  for (size_t i = 0; i < ch.size(); ++i) {
    const size_t count = config_.layers_per_block + (i + 1 < ch.size() ? 1 : 0);
    skips.insert(skips.end(), count, ch[i]);
  }
  return skips;
}

torch::Tensor UNetTrunkImpl::embed_time(const torch::Tensor& timestep, int64_t batch, Trace* trace) {
  auto projected = nn::timestep_embedding(timestep.to(conv_in->weight.device()), batch,
                                          config_.block_out_channels[0], config_.flip_sin_to_cos, config_.freq_shift);
  auto temb = time_embedding(projected.to(conv_in->weight.scalar_type()));
  if (trace) (*trace)["intermediate.time_proj"] = projected, (*trace)["intermediate.time_embedding"] = temb;
  return temb;
}

torch::Tensor UNetTrunkImpl::encode(const torch::Tensor& sample, const torch::Tensor& temb,
                                    const torch::Tensor& context, const torch::Tensor& hint_embedding,
                                    std::vector<torch::Tensor>& skips, Trace* trace) {
  auto x = conv_in(sample);
  if (trace) (*trace)["intermediate.conv_in"] = x;
  if (hint_embedding.defined()) x = x + hint_embedding;
  skips.push_back(x);
  for (size_t i = 0; i < down_blocks->size(); ++i) {
    x = down_blocks[i]->as<nn::DownBlock>()->forward(x, temb, context, skips);
    if (trace) (*trace)["intermediate.down_blocks." + std::to_string(i)] = x;
  }
  x = mid_block(x, temb, context);
  if (trace) (*trace)["intermediate.mid_block"] = x;
  return x;
}

UNet2DConditionModelImpl::UNet2DConditionModelImpl(const UNetConfig& config) : UNetTrunkImpl(config) {
  const auto& ch = config.block_out_channels;
  const int64_t blocks = ch.size();
  if (static_cast<int64_t>(config.up_block_types.size()) != blocks)
    throw Error("unet config: \"up_block_types\" must have as many entries as \"block_out_channels\"");
  auto skips = skip_channels();
  up_blocks = register_module("up_blocks", torch::nn::ModuleList());
  int64_t prev_out = ch.back();
  for (int64_t i = 0; i < blocks; ++i) {
    const int64_t level = blocks - 1 - i;  // the down level this up block mirrors
    const int64_t layers = config.layers_per_block + 1;
    std::vector<int64_t> consumed;
    for (int64_t j = 0; j < layers; ++j) consumed.push_back(skips.back()), skips.pop_back();
    up_blocks->push_back(nn::UpBlock(block_options(level, 0, ch[level], layers,
                                                   config.up_block_types[i] == "CrossAttnUpBlock2D"),
                                     prev_out, consumed, i + 1 < blocks));
    prev_out = ch[level];
  }
  conv_norm_out = register_module(
      "conv_norm_out",
      torch::nn::GroupNorm(torch::nn::GroupNormOptions(config.norm_num_groups, ch[0]).eps(config.norm_eps)));
  conv_out = register_module("conv_out",
                             torch::nn::Conv2d(torch::nn::Conv2dOptions(ch[0], config.out_channels, 3).padding(1)));
}

torch::Tensor UNet2DConditionModelImpl::forward(const torch::Tensor& sample, const torch::Tensor& timestep,
                                                const torch::Tensor& context, const ControlResiduals* residuals,
                                                Trace* trace) {
  auto temb = embed_time(timestep, sample.size(0), trace);
  std::vector<torch::Tensor> skips;
  auto x = encode(sample, temb, context, {}, skips, trace);
  if (residuals && !residuals->empty()) {
    if (residuals->down.size() != skips.size())
      throw Error("ControlNet gives " + std::to_string(residuals->down.size()) + " residuals, the UNet has " +
                  std::to_string(skips.size()) + " skip connections");
    for (size_t i = 0; i < skips.size(); ++i) skips[i] = skips[i] + residuals->down[i];
    x = x + residuals->mid;
  }
  for (size_t i = 0; i < up_blocks->size(); ++i) {
    x = up_blocks[i]->as<nn::UpBlock>()->forward(x, temb, context, skips);
    if (trace) (*trace)["intermediate.up_blocks." + std::to_string(i)] = x;
  }
  x = conv_norm_out(x);
  if (trace) (*trace)["intermediate.conv_norm_out"] = x;
  x = conv_out(torch::silu(x));
  if (trace) (*trace)["intermediate.conv_out"] = x;
  return x;
}

}  // namespace cn::models
