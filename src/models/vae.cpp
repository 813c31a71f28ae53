#include "models/vae.h"

#include <nlohmann/json.hpp>

#include "controlnet/error.h"
#include "nn/attention.h"
#include "nn/resnet.h"

namespace cn::models {
namespace {

constexpr double kEps = 1e-6;  // every VAE norm uses 1e-6

torch::nn::GroupNorm group_norm(int64_t groups, int64_t channels) {
  return torch::nn::GroupNorm(torch::nn::GroupNormOptions(groups, channels).eps(kEps));
}

torch::nn::Conv2d conv(int64_t in, int64_t out, int64_t kernel) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, kernel).padding(kernel / 2));
}

// Single-head self-attention over the pixels with a GroupNorm in front and a
// residual connection (LDM's AttnBlock; diffusers names to_q/to_k/to_v/to_out.0).
class VaeAttentionImpl : public torch::nn::Module {
 public:
  VaeAttentionImpl(int64_t channels, int64_t groups) {
    norm = register_module("group_norm", group_norm(groups, channels));
    to_q = register_module("to_q", torch::nn::Linear(channels, channels));
    to_k = register_module("to_k", torch::nn::Linear(channels, channels));
    to_v = register_module("to_v", torch::nn::Linear(channels, channels));
    to_out = register_module("to_out", torch::nn::ModuleList(torch::nn::Linear(channels, channels)));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    const auto b = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
    auto tokens = norm(x).reshape({b, c, h * w}).transpose(1, 2);
    auto out = nn::attention(to_q(tokens), to_k(tokens), to_v(tokens), 1, /*upcast=*/true);
    out = to_out[0]->as<torch::nn::Linear>()->forward(out);
    return out.transpose(1, 2).reshape({b, c, h, w}) + x;
  }

 private:
  torch::nn::GroupNorm norm{nullptr};
  torch::nn::Linear to_q{nullptr}, to_k{nullptr}, to_v{nullptr};
  torch::nn::ModuleList to_out{nullptr};
};
TORCH_MODULE(VaeAttention);

// resnet, attention, resnet (diffusers UNetMidBlock2D without time embedding).
class VaeMidBlockImpl : public torch::nn::Module {
 public:
  VaeMidBlockImpl(int64_t channels, int64_t groups) {
    resnets = register_module("resnets", torch::nn::ModuleList(resnet(channels, channels, groups),
                                                               resnet(channels, channels, groups)));
    attentions = register_module("attentions", torch::nn::ModuleList(VaeAttention(channels, groups)));
  }
  torch::Tensor forward(torch::Tensor x) {
    x = resnets[0]->as<nn::ResnetBlock2D>()->forward(x);
    x = attentions[0]->as<VaeAttention>()->forward(x);
    return resnets[1]->as<nn::ResnetBlock2D>()->forward(x);
  }
  static nn::ResnetBlock2D resnet(int64_t in, int64_t out, int64_t groups) {
    nn::ResnetBlock2DOptions o;
    o.in_channels = in;
    o.out_channels = out;
    o.groups = groups;
    o.eps = kEps;
    return nn::ResnetBlock2D(o);
  }

 private:
  torch::nn::ModuleList resnets{nullptr}, attentions{nullptr};
};
TORCH_MODULE(VaeMidBlock);

// A level of the encoder or decoder: resnets, then an optional resampler
// (DownEncoderBlock2D with "downsamplers", UpDecoderBlock2D with "upsamplers").
class VaeLevelImpl : public torch::nn::Module {
 public:
  enum class Resample { none, down, up };
  VaeLevelImpl(int64_t in, int64_t out, int64_t layers, int64_t groups, Resample resample) {
    resnets = register_module("resnets", torch::nn::ModuleList());
    for (int64_t i = 0; i < layers; ++i) resnets->push_back(VaeMidBlockImpl::resnet(i == 0 ? in : out, out, groups));
    if (resample == Resample::down)
      resampler = register_module("downsamplers", torch::nn::ModuleList(nn::Downsample2D(out, /*vae_padding=*/true)));
    if (resample == Resample::up) resampler = register_module("upsamplers", torch::nn::ModuleList(nn::Upsample2D(out)));
    resample_ = resample;
  }
  torch::Tensor forward(torch::Tensor x) {
    for (const auto& r : *resnets) x = r->as<nn::ResnetBlock2D>()->forward(x);
    if (resample_ == Resample::down) x = resampler[0]->as<nn::Downsample2D>()->forward(x);
    if (resample_ == Resample::up) x = resampler[0]->as<nn::Upsample2D>()->forward(x);
    return x;
  }

 private:
  Resample resample_;
  torch::nn::ModuleList resnets{nullptr}, resampler{nullptr};
};
TORCH_MODULE(VaeLevel);

}  // namespace

class VaeEncoderImpl : public torch::nn::Module {
 public:
  explicit VaeEncoderImpl(const VaeConfig& c) {
    const auto& ch = c.block_out_channels;
    conv_in = register_module("conv_in", conv(c.in_channels, ch[0], 3));
    down_blocks = register_module("down_blocks", torch::nn::ModuleList());
    for (size_t i = 0; i < ch.size(); ++i)
      down_blocks->push_back(VaeLevel(i == 0 ? ch[0] : ch[i - 1], ch[i], c.layers_per_block, c.norm_num_groups,
                                      i + 1 < ch.size() ? VaeLevelImpl::Resample::down : VaeLevelImpl::Resample::none));
    mid_block = register_module("mid_block", VaeMidBlock(ch.back(), c.norm_num_groups));
    conv_norm_out = register_module("conv_norm_out", group_norm(c.norm_num_groups, ch.back()));
    conv_out = register_module("conv_out", conv(ch.back(), 2 * c.latent_channels, 3));
  }
  torch::Tensor forward(const torch::Tensor& image) {
    auto x = conv_in(image);
    for (const auto& block : *down_blocks) x = block->as<VaeLevel>()->forward(x);
    x = mid_block(x);
    return conv_out(torch::silu(conv_norm_out(x)));
  }

 private:
  torch::nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  torch::nn::ModuleList down_blocks{nullptr};
  VaeMidBlock mid_block{nullptr};
  torch::nn::GroupNorm conv_norm_out{nullptr};
};

class VaeDecoderImpl : public torch::nn::Module {
 public:
  explicit VaeDecoderImpl(const VaeConfig& c) {
    const auto& ch = c.block_out_channels;
    conv_in = register_module("conv_in", conv(c.latent_channels, ch.back(), 3));
    mid_block = register_module("mid_block", VaeMidBlock(ch.back(), c.norm_num_groups));
    up_blocks = register_module("up_blocks", torch::nn::ModuleList());
    int64_t prev = ch.back();
    for (size_t i = 0; i < ch.size(); ++i) {
      const int64_t out = ch[ch.size() - 1 - i];
      up_blocks->push_back(VaeLevel(prev, out, c.layers_per_block + 1, c.norm_num_groups,
                                    i + 1 < ch.size() ? VaeLevelImpl::Resample::up : VaeLevelImpl::Resample::none));
      prev = out;
    }
    conv_norm_out = register_module("conv_norm_out", group_norm(c.norm_num_groups, ch[0]));
    conv_out = register_module("conv_out", conv(ch[0], c.out_channels, 3));
  }
  torch::Tensor forward(const torch::Tensor& z) {
    auto x = mid_block(conv_in(z));
    for (const auto& block : *up_blocks) x = block->as<VaeLevel>()->forward(x);
    return conv_out(torch::silu(conv_norm_out(x)));
  }

 private:
  torch::nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  torch::nn::ModuleList up_blocks{nullptr};
  VaeMidBlock mid_block{nullptr};
  torch::nn::GroupNorm conv_norm_out{nullptr};
};

VaeConfig VaeConfig::from_json(const nlohmann::json& j) {
  VaeConfig c;
  try {
    if (j.value("act_fn", "silu") != "silu") throw Error("vae config: unsupported \"act_fn\": " + j["act_fn"].dump());
    for (const char* key : {"down_block_types", "up_block_types"})
      for (const auto& type : j.value(key, nlohmann::json::array()))
        if (type != "DownEncoderBlock2D" && type != "UpDecoderBlock2D")
          throw Error(std::string("vae config: unsupported block type in \"") + key + "\": " + type.dump());
    c.in_channels = j.value("in_channels", c.in_channels);
    c.out_channels = j.value("out_channels", c.out_channels);
    c.latent_channels = j.value("latent_channels", c.latent_channels);
    c.block_out_channels = j.value("block_out_channels", c.block_out_channels);
    c.layers_per_block = j.value("layers_per_block", c.layers_per_block);
    c.norm_num_groups = j.value("norm_num_groups", c.norm_num_groups);
    c.scaling_factor = j.value("scaling_factor", c.scaling_factor);
    c.sample_size = j.value("sample_size", c.sample_size);
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("vae config: ") + e.what());
  }
  if (c.block_out_channels.empty()) throw Error("vae config: \"block_out_channels\" is empty");
  return c;
}

nlohmann::json VaeConfig::to_json() const {
  return {{"_class_name", "AutoencoderKL"},
          {"act_fn", "silu"},
          {"in_channels", in_channels},
          {"out_channels", out_channels},
          {"latent_channels", latent_channels},
          {"block_out_channels", block_out_channels},
          {"down_block_types", std::vector<std::string>(block_out_channels.size(), "DownEncoderBlock2D")},
          {"up_block_types", std::vector<std::string>(block_out_channels.size(), "UpDecoderBlock2D")},
          {"layers_per_block", layers_per_block},
          {"norm_num_groups", norm_num_groups},
          {"scaling_factor", scaling_factor},
          {"sample_size", sample_size}};
}

torch::Tensor Posterior::sample(torch::Generator& generator) const {
  auto noise = torch::randn(mean.sizes(), generator, torch::dtype(torch::kFloat));
  return mean + std() * noise.to(mean.options());
}

AutoencoderKLImpl::AutoencoderKLImpl(const VaeConfig& config) : config_(config) {
  encoder = register_module("encoder", std::make_shared<VaeEncoderImpl>(config));
  decoder = register_module("decoder", std::make_shared<VaeDecoderImpl>(config));
  const int64_t z = config.latent_channels;
  quant_conv = register_module("quant_conv", conv(2 * z, 2 * z, 1));
  post_quant_conv = register_module("post_quant_conv", conv(z, z, 1));
}

Posterior AutoencoderKLImpl::encode(const torch::Tensor& image) {
  auto h = encoder->forward(image.to(quant_conv->weight.options()));
  if (trace) (*trace)["encoder_out"] = h;
  auto moments = quant_conv(h);
  if (trace) (*trace)["moments"] = moments;
  auto parts = moments.chunk(2, 1);
  return {parts[0], parts[1].clamp(-30.0, 20.0)};
}

torch::Tensor AutoencoderKLImpl::decode(const torch::Tensor& latents) {
  auto z = post_quant_conv(latents.to(quant_conv->weight.options()));
  if (trace) (*trace)["post_quant_conv_out"] = z;
  return decoder->forward(z);
}

torch::Tensor AutoencoderKLImpl::decode_tiled(const torch::Tensor& latents, int64_t tile, int64_t overlap) {
  const int64_t h = latents.size(2), w = latents.size(3);
  if (h <= tile && w <= tile) return decode(latents);
  TORCH_CHECK(overlap >= 0 && overlap < tile, "decode_tiled: overlap must be smaller than the tile");
  const int64_t scale = config_.downsampling_factor();
  const int64_t stride = tile - overlap;
  auto starts = [&](int64_t size) {
    std::vector<int64_t> s;
    for (int64_t p = 0;; p += stride) {
      if (p + tile >= size) {
        s.push_back(std::max<int64_t>(0, size - tile));
        break;
      }
      s.push_back(p);
    }
    return s;
  };
  torch::Tensor sum, weight;
  for (int64_t y : starts(h)) {
    for (int64_t x : starts(w)) {
      const int64_t th = std::min(tile, h), tw = std::min(tile, w);
      auto out = decode(latents.narrow(2, y, th).narrow(3, x, tw));
      // Weights ramp linearly over the overlap on sides shared with a neighbour.
      auto ramp = [&](int64_t n, bool low_edge, bool high_edge) {
        auto r = torch::ones({n}, out.options());
        const int64_t o = overlap * scale;
        if (o > 0) {
          auto up = torch::arange(1, o + 1, out.options()) / double(o + 1);
          if (!low_edge) r.narrow(0, 0, o).copy_(up);
          if (!high_edge) r.narrow(0, n - o, o).copy_(up.flip(0));
        }
        return r;
      };
      auto wy = ramp(th * scale, y == 0, y + th >= h), wx = ramp(tw * scale, x == 0, x + tw >= w);
      auto mask = wy.view({-1, 1}) * wx.view({1, -1});
      if (!sum.defined()) {
        sum = torch::zeros({out.size(0), out.size(1), h * scale, w * scale}, out.options());
        weight = torch::zeros({h * scale, w * scale}, out.options());
      }
      sum.narrow(2, y * scale, th * scale).narrow(3, x * scale, tw * scale).add_(out * mask);
      weight.narrow(0, y * scale, th * scale).narrow(1, x * scale, tw * scale).add_(mask);
    }
  }
  return sum / weight;
}

}  // namespace cn::models
