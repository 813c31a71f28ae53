#include "preprocess/uniformer.h"

#include <array>
#include <opencv2/imgproc.hpp>

#include "controlnet/error.h"
#include "nn/attention.h"
#include "nn/bf16_fallbacks.h"
#include "nn/weights.h"
#include "preprocess/ade20k.h"
#include "preprocess/preprocess.h"

namespace cn::preprocess {

namespace F = torch::nn::functional;
using torch::nn::Module;

namespace uniformer_detail {

constexpr std::array<int64_t, 4> kEmbedDims = {64, 128, 320, 512};
constexpr std::array<int64_t, 4> kDepths = {3, 4, 8, 3};
constexpr int64_t kHeadDim = 64;
constexpr int64_t kMlpRatio = 4;
constexpr int64_t kHeadChannels = 512;
constexpr std::array<int64_t, 4> kPoolScales = {1, 2, 3, 6};

torch::nn::Conv2d conv(int64_t in, int64_t out, int64_t kernel, int64_t stride = 1, int64_t groups = 1,
                       bool bias = true) {
  return torch::nn::Conv2d(
      torch::nn::Conv2dOptions(in, out, kernel).stride(stride).padding(stride == 1 ? kernel / 2 : 0).groups(groups).bias(bias));
}

cn::nn::LayerNorm layer_norm(int64_t dim, double eps) {
  return cn::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(eps));
}

// A LayerNorm over the channels of a (B, C, H, W) map.
torch::Tensor norm_channels(cn::nn::LayerNorm& norm, const torch::Tensor& x) {
  return norm(x.permute({0, 2, 3, 1})).permute({0, 3, 1, 2}).contiguous();
}

// A strided conv that cuts the image into patches, LayerNorm'd over the
// channels (nn.LayerNorm's default eps, unlike the blocks' 1e-6).
class PatchEmbed : public Module {
 public:
  PatchEmbed(int64_t in, int64_t out, int64_t patch) {
    proj_ = register_module("proj", conv(in, out, patch, patch));
    norm_ = register_module("norm", layer_norm(out, 1e-5));
  }
  torch::Tensor forward(const torch::Tensor& x) { return norm_channels(norm_, proj_(x)); }

 private:
  torch::nn::Conv2d proj_{nullptr};
  cn::nn::LayerNorm norm_{nullptr};
};

// Stages 1-2: local relation aggregated by convolutions. A depthwise 3x3
// position encoding, then BatchNorm -> 1x1 -> depthwise 5x5 -> 1x1, then
// BatchNorm -> 1x1 MLP with GELU, each added to the input.
class CBlock : public Module {
 public:
  explicit CBlock(int64_t dim) {
    pos_embed_ = register_module("pos_embed", conv(dim, dim, 3, 1, dim));
    norm1_ = register_module("norm1", torch::nn::BatchNorm2d(dim));
    conv1_ = register_module("conv1", conv(dim, dim, 1));
    conv2_ = register_module("conv2", conv(dim, dim, 1));
    attn_ = register_module("attn", conv(dim, dim, 5, 1, dim));
    norm2_ = register_module("norm2", torch::nn::BatchNorm2d(dim));
    auto mlp = register_module("mlp", std::make_shared<Module>());
    fc1_ = mlp->register_module("fc1", conv(dim, dim * kMlpRatio, 1));
    fc2_ = mlp->register_module("fc2", conv(dim * kMlpRatio, dim, 1));
  }
  torch::Tensor forward(torch::Tensor x) {
    x = x + pos_embed_(x);
    x = x + conv2_(attn_(conv1_(norm1_(x))));
    return x + fc2_(torch::gelu(fc1_(norm2_(x))));
  }

 private:
  torch::nn::Conv2d pos_embed_{nullptr}, conv1_{nullptr}, conv2_{nullptr}, attn_{nullptr}, fc1_{nullptr}, fc2_{nullptr};
  torch::nn::BatchNorm2d norm1_{nullptr}, norm2_{nullptr};
};

}  // namespace uniformer_detail

torch::Tensor uniformer_detail::self_attention(const torch::Tensor& tokens, torch::nn::Linear& qkv,
                                               torch::nn::Linear& proj, int64_t heads) {
  // qkv gives [q | k | v] per token, each laid out heads x d as nn::attention splits them.
  const auto parts = qkv(tokens).chunk(3, -1);
  return proj(nn::attention(parts[0], parts[1], parts[2], heads));
}

namespace uniformer_detail {

// Stages 3-4: the depthwise position encoding, then a transformer layer with
// global self-attention over all positions (LayerNorm eps 1e-6).
class SABlock : public Module {
 public:
  explicit SABlock(int64_t dim) : heads_(dim / kHeadDim) {
    pos_embed_ = register_module("pos_embed", conv(dim, dim, 3, 1, dim));
    norm1_ = register_module("norm1", layer_norm(dim, 1e-6));
    auto attn = register_module("attn", std::make_shared<Module>());
    qkv_ = attn->register_module("qkv", torch::nn::Linear(dim, dim * 3));
    proj_ = attn->register_module("proj", torch::nn::Linear(dim, dim));
    norm2_ = register_module("norm2", layer_norm(dim, 1e-6));
    auto mlp = register_module("mlp", std::make_shared<Module>());
    fc1_ = mlp->register_module("fc1", torch::nn::Linear(dim, dim * kMlpRatio));
    fc2_ = mlp->register_module("fc2", torch::nn::Linear(dim * kMlpRatio, dim));
  }
  torch::Tensor forward(torch::Tensor x) {
    x = x + pos_embed_(x);
    const auto sizes = x.sizes().vec();
    auto tokens = x.flatten(2).transpose(1, 2);
    tokens = tokens + self_attention(norm1_(tokens), qkv_, proj_, heads_);
    tokens = tokens + fc2_(torch::gelu(fc1_(norm2_(tokens))));
    return tokens.transpose(1, 2).reshape(sizes);
  }

 private:
  int64_t heads_;
  torch::nn::Conv2d pos_embed_{nullptr};
  cn::nn::LayerNorm norm1_{nullptr}, norm2_{nullptr};
  torch::nn::Linear qkv_{nullptr}, proj_{nullptr}, fc1_{nullptr}, fc2_{nullptr};
};

// The backbone: four stages at 1/4, 1/8, 1/16 and 1/32 of the input, each
// stage's output LayerNorm'd (norm1..norm4) into the head's four inputs.
class UniFormerSmall : public Module {
 public:
  UniFormerSmall() {
    int64_t in = 3;
    for (size_t s = 0; s < 4; ++s) {
      const auto name = std::to_string(s + 1);
      patch_embeds_[s] = register_module("patch_embed" + name,
                                         std::make_shared<PatchEmbed>(in, kEmbedDims[s], s == 0 ? 4 : 2));
      blocks_[s] = register_module("blocks" + name, torch::nn::ModuleList());
      for (int64_t b = 0; b < kDepths[s]; ++b) {
        if (s < 2) blocks_[s]->push_back(std::make_shared<CBlock>(kEmbedDims[s]));
        else blocks_[s]->push_back(std::make_shared<SABlock>(kEmbedDims[s]));
      }
      norms_[s] = register_module("norm" + name, layer_norm(kEmbedDims[s], 1e-6));
      in = kEmbedDims[s];
    }
  }
  std::array<torch::Tensor, 4> forward(torch::Tensor x) {
    std::array<torch::Tensor, 4> out;
    for (size_t s = 0; s < 4; ++s) {
      x = patch_embeds_[s]->forward(x);
      for (const auto& block : *blocks_[s]) {
        if (s < 2) x = block->as<CBlock>()->forward(x);
        else x = block->as<SABlock>()->forward(x);
      }
      out[s] = norm_channels(norms_[s], x);
    }
    return out;
  }

 private:
  std::array<std::shared_ptr<PatchEmbed>, 4> patch_embeds_;
  std::array<torch::nn::ModuleList, 4> blocks_{nullptr, nullptr, nullptr, nullptr};
  std::array<cn::nn::LayerNorm, 4> norms_{nullptr, nullptr, nullptr, nullptr};
};

// mmcv's ConvModule with a BatchNorm: conv without bias, BN, ReLU.
class ConvModule : public Module {
 public:
  ConvModule(int64_t in, int64_t out, int64_t kernel) {
    conv_ = register_module("conv", conv(in, out, kernel, 1, 1, /*bias=*/false));
    bn_ = register_module("bn", torch::nn::BatchNorm2d(out));
  }
  torch::Tensor forward(const torch::Tensor& x) { return torch::relu(bn_(conv_(x))); }

 private:
  torch::nn::Conv2d conv_{nullptr};
  torch::nn::BatchNorm2d bn_{nullptr};
};

torch::Tensor resize_bilinear(const torch::Tensor& x, c10::IntArrayRef size) {
  return F::interpolate(
      x, F::InterpolateFuncOptions().size(size.vec()).mode(torch::kBilinear).align_corners(false));
}

// UPerNet: a pyramid pooling module on the last stage, a top-down FPN over
// the four, all levels upsampled to the first and fused, then the classifier
// (mmseg's UPerHead; its dropout is inactive at inference).
class UperHead : public Module {
 public:
  UperHead() {
    psp_modules_ = register_module("psp_modules", torch::nn::ModuleList());
    for (int64_t scale : kPoolScales)
      psp_modules_->push_back(torch::nn::Sequential(torch::nn::AdaptiveAvgPool2d(scale),
                                                    std::make_shared<ConvModule>(kEmbedDims[3], kHeadChannels, 1)));
    bottleneck_ = register_module(
        "bottleneck", std::make_shared<ConvModule>(kEmbedDims[3] + kPoolScales.size() * kHeadChannels, kHeadChannels, 3));
    lateral_convs_ = register_module("lateral_convs", torch::nn::ModuleList());
    fpn_convs_ = register_module("fpn_convs", torch::nn::ModuleList());
    for (size_t level = 0; level < 3; ++level) {
      lateral_convs_->push_back(std::make_shared<ConvModule>(kEmbedDims[level], kHeadChannels, 1));
      fpn_convs_->push_back(std::make_shared<ConvModule>(kHeadChannels, kHeadChannels, 3));
    }
    fpn_bottleneck_ = register_module("fpn_bottleneck", std::make_shared<ConvModule>(4 * kHeadChannels, kHeadChannels, 3));
    conv_seg_ = register_module("conv_seg", conv(kHeadChannels, kAde20kClasses, 1));
  }
  torch::Tensor forward(const std::array<torch::Tensor, 4>& features) {
    std::vector<torch::Tensor> laterals;
    for (size_t level = 0; level < 3; ++level)
      laterals.push_back(lateral_convs_[level]->as<ConvModule>()->forward(features[level]));
    laterals.push_back(pyramid_pooling(features[3]));
    // Top-down: each level gets the (already summed) coarser one upsampled.
    for (size_t level = 3; level > 0; --level)
      laterals[level - 1] = laterals[level - 1] + resize_bilinear(laterals[level], laterals[level - 1].sizes().slice(2));
    std::vector<torch::Tensor> outs;
    for (size_t level = 0; level < 3; ++level) outs.push_back(fpn_convs_[level]->as<ConvModule>()->forward(laterals[level]));
    outs.push_back(laterals[3]);
    for (size_t level = 1; level < 4; ++level) outs[level] = resize_bilinear(outs[level], outs[0].sizes().slice(2));
    return conv_seg_(fpn_bottleneck_->forward(torch::cat(outs, 1)));
  }

 private:
  // PPM: the map average-pooled to 1x1, 2x2, 3x3 and 6x6 (adaptive bins),
  // each through a 1x1 ConvModule and upsampled back, concatenated with the
  // map and fused by a 3x3 ConvModule.
  torch::Tensor pyramid_pooling(const torch::Tensor& x) {
    std::vector<torch::Tensor> branches = {x};
    for (const auto& branch : *psp_modules_)
      branches.push_back(resize_bilinear(branch->as<torch::nn::SequentialImpl>()->forward(x), x.sizes().slice(2)));
    return bottleneck_->forward(torch::cat(branches, 1));
  }

  torch::nn::ModuleList psp_modules_{nullptr}, lateral_convs_{nullptr}, fpn_convs_{nullptr};
  std::shared_ptr<ConvModule> bottleneck_, fpn_bottleneck_;
  torch::nn::Conv2d conv_seg_{nullptr};
};

}  // namespace uniformer_detail

UniformerSegmenterImpl::UniformerSegmenterImpl() {
  backbone_ = register_module("backbone", std::make_shared<uniformer_detail::UniFormerSmall>());
  decode_head_ = register_module("decode_head", std::make_shared<uniformer_detail::UperHead>());
}

torch::Tensor UniformerSegmenterImpl::forward(const torch::Tensor& x) {
  // The smallest input whose 1/32 stage is not empty.
  if (x.dim() != 4 || x.size(1) != 3 || x.size(2) < 32 || x.size(3) < 32)
    throw Error("UniFormer input must be (B, 3, H, W) with H and W at least 32, got " + c10::str(x.sizes()));
  return decode_head_->forward(backbone_->forward(x));
}

const std::vector<std::string>& uniformer_auxiliary_head_keys() {
  static const std::vector<std::string> keys = {
      "auxiliary_head.convs.0.conv.weight",         "auxiliary_head.convs.0.bn.weight",
      "auxiliary_head.convs.0.bn.bias",             "auxiliary_head.convs.0.bn.running_mean",
      "auxiliary_head.convs.0.bn.running_var",      "auxiliary_head.convs.0.bn.num_batches_tracked",
      "auxiliary_head.conv_seg.weight",             "auxiliary_head.conv_seg.bias"};
  return keys;
}

UniformerSegmenter load_uniformer(const io::TensorMap& state_dict, const std::string& what) {
  io::TensorMap state;
  for (const auto& [name, tensor] : state_dict)
    state[name.rfind("module.", 0) == 0 ? name.substr(7) : name] = tensor;
  UniformerSegmenter model;
  nn::load_weights(*model, state, what, uniformer_auxiliary_head_keys());
  model->eval();
  return model;
}

UniformerSegmenter uniformer_from_file(const std::filesystem::path& path, torch::ScalarType dtype) {
  return load_once<UniformerSegmenter>(path, dtype, [](const std::filesystem::path& p) {
    return load_uniformer(load_annotator_weights(p, {}), p.string());
  });
}

cv::Size uniformer_network_size(cv::Size image) {
  const double long_side = std::max(image.width, image.height), short_side = std::min(image.width, image.height);
  const double scale = std::min(2048.0 / long_side, 512.0 / short_side);
  return {int(image.width * scale + 0.5), int(image.height * scale + 0.5)};
}

torch::Tensor uniformer_input(const cv::Mat& rgb) {
  if (rgb.type() != CV_8UC3) throw Error("expected an RGB uint8 image");
  cv::Mat resized;
  cv::resize(rgb, resized, uniformer_network_size(rgb.size()), 0, 0, cv::INTER_LINEAR);
  // to_rgb on an RGB array: channel 0 becomes blue, normalised as red.
  cv::cvtColor(resized, resized, cv::COLOR_RGB2BGR);
  const auto pixels = torch::from_blob(resized.data, {resized.rows, resized.cols, 3}, torch::kUInt8);
  // mmcv's imnormalize: subtract the mean, multiply by 1 / std.
  const auto mean = torch::tensor({123.675f, 116.28f, 103.53f});
  const auto inverse_std = torch::tensor({float(1 / 58.395), float(1 / 57.12), float(1 / 57.375)});
  return ((pixels.to(torch::kFloat32) - mean) * inverse_std).permute({2, 0, 1}).unsqueeze(0).contiguous();
}

cv::Mat uniformer_labels(const torch::Tensor& logits, cv::Size network_size, cv::Size size) {
  if (logits.dim() != 4 || logits.size(0) != 1 || logits.size(1) != kAde20kClasses)
    throw Error("UniFormer logits must be (1, 150, H, W), got " + c10::str(logits.sizes()));
  using uniformer_detail::resize_bilinear;
  auto x = resize_bilinear(logits.to(torch::kFloat32), {network_size.height, network_size.width});
  if (network_size != size) x = resize_bilinear(x, {size.height, size.width});
  const auto labels = x.softmax(1).argmax(1)[0].to(torch::kUInt8).contiguous();
  return cv::Mat(size, CV_8UC1, labels.data_ptr<uint8_t>()).clone();
}

cv::Mat uniformer_detect(UniformerSegmenter& model, const cv::Mat& rgb) {
  torch::NoGradGuard no_grad;
  const auto input = uniformer_input(rgb);
  const cv::Size network_size(int(input.size(3)), int(input.size(2)));
  const auto logits = model->forward(input.to(network_dtype(*model)));
  return colorize_ade20k(uniformer_labels(logits, network_size, rgb.size()));
}

}  // namespace cn::preprocess
