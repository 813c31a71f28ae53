#include "preprocess/midas.h"

#include <cmath>
#include <opencv2/imgproc.hpp>

#include "controlnet/error.h"
#include "nn/bf16_fallbacks.h"
#include "nn/weights.h"
#include "preprocess/preprocess.h"
#include "preprocess/same_padding.h"

namespace cn::preprocess {

namespace F = torch::nn::functional;
using torch::nn::Module;

namespace midas_detail {

// timm StdConv2dSame (eps 1e-8 in the hybrid ViT): each filter standardised
// (biased variance) on every call; no bias. Stride-1 convs pad statically and
// symmetrically, strided ones dynamically ("SAME"), as timm decides.
class StdConv2dSame : public Module {
 public:
  StdConv2dSame(int64_t in, int64_t out, int64_t kernel, int64_t stride) : kernel_(kernel), stride_(stride) {
    weight_ = register_parameter("weight", torch::empty({out, in, kernel, kernel}));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    const int64_t out = weight_.size(0);
    auto w = torch::batch_norm(weight_.reshape({1, out, -1}), {}, {}, {}, {}, /*training=*/true, 0.0, 1e-8,
                               /*cudnn_enabled=*/false)
                 .reshape_as(weight_);
    if (stride_ == 1) return F::conv2d(x, w, F::Conv2dFuncOptions().padding((kernel_ - 1) / 2));
    return F::conv2d(pad_same(x, kernel_, stride_, 0.0), w, F::Conv2dFuncOptions().stride(stride_));
  }

 private:
  int64_t kernel_, stride_;
  torch::Tensor weight_;
};

torch::nn::GroupNorm group_norm(Module& parent, const std::string& name, int64_t channels) {
  return parent.register_module(name, torch::nn::GroupNorm(torch::nn::GroupNormOptions(32, channels).eps(1e-5)));
}

// timm ResNetV2's non-pre-activation Bottleneck: 1x1, 3x3 (strided), 1x1 with
// GroupNorm (+ReLU except after the last), plus the shortcut (a strided 1x1
// conv + GroupNorm in the first block of a stage), then ReLU.
class Bottleneck : public Module {
 public:
  Bottleneck(int64_t in, int64_t out, int64_t stride, bool project) {
    const int64_t mid = out / 4;
    if (project) {
      auto downsample = register_module("downsample", std::make_shared<Module>());
      down_conv_ = downsample->register_module("conv", std::make_shared<StdConv2dSame>(in, out, 1, stride));
      down_norm_ = group_norm(*downsample, "norm", out);
    }
    conv1_ = register_module("conv1", std::make_shared<StdConv2dSame>(in, mid, 1, 1));
    norm1_ = group_norm(*this, "norm1", mid);
    conv2_ = register_module("conv2", std::make_shared<StdConv2dSame>(mid, mid, 3, stride));
    norm2_ = group_norm(*this, "norm2", mid);
    conv3_ = register_module("conv3", std::make_shared<StdConv2dSame>(mid, out, 1, 1));
    norm3_ = group_norm(*this, "norm3", out);
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto shortcut = down_conv_ ? down_norm_(down_conv_->forward(x)) : x;
    auto h = torch::relu(norm1_(conv1_->forward(x)));
    h = torch::relu(norm2_(conv2_->forward(h)));
    h = norm3_(conv3_->forward(h));
    return torch::relu(h + shortcut);
  }

 private:
  std::shared_ptr<StdConv2dSame> down_conv_, conv1_, conv2_, conv3_;
  torch::nn::GroupNorm down_norm_{nullptr}, norm1_{nullptr}, norm2_{nullptr}, norm3_{nullptr};
};

// The BiT ResNet-v2 of vit_base_resnet50_384: "same" stem (7x7/2 conv,
// GroupNorm+ReLU, 3x3/2 max pool padded with -inf) and stages of 3, 4 and 9
// bottlenecks (256, 512, 1024 channels; strides 1, 2, 2). Returns every
// stage's output (the DPT hooks read stages 0 and 1; stage 2 feeds the ViT).
class ResNetV2 : public Module {
 public:
  ResNetV2() {
    auto stem = register_module("stem", std::make_shared<Module>());
    stem_conv_ = stem->register_module("conv", std::make_shared<StdConv2dSame>(3, 64, 7, 2));
    stem_norm_ = group_norm(*stem, "norm", 64);
    auto stages = register_module("stages", std::make_shared<Module>());
    const int64_t depths[] = {3, 4, 9}, channels[] = {256, 512, 1024}, strides[] = {1, 2, 2};
    int64_t in = 64;
    for (int s = 0; s < 3; ++s) {
      auto stage = stages->register_module(std::to_string(s), std::make_shared<Module>());
      auto blocks = stage->register_module("blocks", torch::nn::Sequential());
      for (int64_t b = 0; b < depths[s]; ++b) {
        blocks->push_back(std::make_shared<Bottleneck>(b == 0 ? in : channels[s], channels[s], b == 0 ? strides[s] : 1, b == 0));
      }
      stages_.push_back(blocks);
      in = channels[s];
    }
  }
  std::vector<torch::Tensor> forward(const torch::Tensor& x) {
    auto h = torch::relu(stem_norm_(stem_conv_->forward(x)));
    h = torch::max_pool2d(pad_same(h, 3, 2, -std::numeric_limits<double>::infinity()), 3, 2);
    std::vector<torch::Tensor> outputs;
    for (auto& stage : stages_) {
      h = stage->forward(h);
      outputs.push_back(h);
    }
    return outputs;
  }

 private:
  std::shared_ptr<StdConv2dSame> stem_conv_;
  torch::nn::GroupNorm stem_norm_{nullptr};
  std::vector<torch::nn::Sequential> stages_;
};

// timm ViT block: pre-LayerNorm (eps 1e-6) multi-head self-attention with a
// biased qkv projection, then a GELU (erf) MLP, both residual.
class VitBlock : public Module {
 public:
  explicit VitBlock(int64_t dim, int64_t heads) : heads_(heads) {
    auto layer_norm = [&](const char* name) {
      return register_module(name, cn::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(1e-6)));
    };
    norm1_ = layer_norm("norm1");
    auto attn = register_module("attn", std::make_shared<Module>());
    qkv_ = attn->register_module("qkv", torch::nn::Linear(dim, 3 * dim));
    proj_ = attn->register_module("proj", torch::nn::Linear(dim, dim));
    norm2_ = layer_norm("norm2");
    auto mlp = register_module("mlp", std::make_shared<Module>());
    fc1_ = mlp->register_module("fc1", torch::nn::Linear(dim, 4 * dim));
    fc2_ = mlp->register_module("fc2", torch::nn::Linear(4 * dim, dim));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    const int64_t batch = x.size(0), tokens = x.size(1), dim = x.size(2), head_dim = dim / heads_;
    auto qkv = qkv_(norm1_(x)).reshape({batch, tokens, 3, heads_, head_dim}).permute({2, 0, 3, 1, 4});
    auto q = qkv[0], k = qkv[1], v = qkv[2];
    auto weights = (torch::matmul(q, k.transpose(-2, -1)) * std::pow(double(head_dim), -0.5)).softmax(-1);
    auto attended = torch::matmul(weights, v).transpose(1, 2).reshape({batch, tokens, dim});
    auto h = x + proj_(attended);
    return h + fc2_(torch::gelu(fc1_(norm2_(h))));
  }

 private:
  int64_t heads_;
  cn::nn::LayerNorm norm1_{nullptr}, norm2_{nullptr};
  torch::nn::Linear qkv_{nullptr}, proj_{nullptr}, fc1_{nullptr}, fc2_{nullptr};
};

// vit_base_resnet50_384 as DPT runs it (forward_flex): ResNet features ->
// 1x1 conv patch embedding -> [cls] + tokens + position embeddings whose
// 24x24 grid is bilinearly resized to the input's grid -> 12 blocks.
// Returns the ResNet stage 0 and 1 outputs and the tokens after blocks 8 and
// 11 (the final LayerNorm's output is not used by DPT, so it is not computed).
class HybridVit : public Module {
 public:
  static constexpr int64_t kDim = 768, kPatch = 16;
  HybridVit() {
    cls_token_ = register_parameter("cls_token", torch::empty({1, 1, kDim}));
    pos_embed_ = register_parameter("pos_embed", torch::empty({1, 1 + 24 * 24, kDim}));
    auto patch_embed = register_module("patch_embed", std::make_shared<Module>());
    backbone_ = patch_embed->register_module("backbone", std::make_shared<ResNetV2>());
    proj_ = patch_embed->register_module("proj", torch::nn::Conv2d(torch::nn::Conv2dOptions(1024, kDim, 1)));
    auto blocks = register_module("blocks", std::make_shared<Module>());
    for (int b = 0; b < 12; ++b) blocks_.push_back(blocks->register_module(std::to_string(b), std::make_shared<VitBlock>(kDim, 12)));
    norm_ = register_module("norm", cn::nn::LayerNorm(torch::nn::LayerNormOptions({kDim}).eps(1e-6)));
  }
  std::array<torch::Tensor, 4> forward(const torch::Tensor& x) {
    const int64_t grid_h = x.size(2) / kPatch, grid_w = x.size(3) / kPatch;
    const auto stages = backbone_->forward(x);
    auto tokens = proj_(stages.back()).flatten(2).transpose(1, 2);
    tokens = torch::cat({cls_token_.expand({x.size(0), -1, -1}), tokens}, 1) + resized_pos_embed(grid_h, grid_w);
    std::array<torch::Tensor, 4> hooks{stages[0], stages[1], {}, {}};
    for (size_t b = 0; b < blocks_.size(); ++b) {
      tokens = blocks_[b]->forward(tokens);
      if (b == 8) hooks[2] = tokens;
    }
    hooks[3] = tokens;
    return hooks;
  }

 private:
  torch::Tensor resized_pos_embed(int64_t grid_h, int64_t grid_w) const {
    const int64_t old_grid = 24;
    auto grid = pos_embed_.slice(1, 1).reshape({1, old_grid, old_grid, kDim}).permute({0, 3, 1, 2});
    grid = F::interpolate(grid, F::InterpolateFuncOptions()
                                    .size(std::vector<int64_t>{grid_h, grid_w})
                                    .mode(torch::kBilinear)
                                    .align_corners(false));
    grid = grid.permute({0, 2, 3, 1}).reshape({1, grid_h * grid_w, kDim});
    return torch::cat({pos_embed_.slice(1, 0, 1), grid}, 1);
  }

  torch::Tensor cls_token_, pos_embed_;
  std::shared_ptr<ResNetV2> backbone_;
  torch::nn::Conv2d proj_{nullptr};
  std::vector<std::shared_ptr<VitBlock>> blocks_;
  cn::nn::LayerNorm norm_{nullptr};
};

// DPT's act_postprocess3/4 with readout "project": every token concatenated
// with the [cls] token -> Linear(1536, 768) -> GELU, back to the token grid,
// a 1x1 conv, and for the deepest level a 3x3 stride-2 conv.
class ReadoutReassemble : public Module {
 public:
  explicit ReadoutReassemble(bool downsample) {
    const int64_t dim = HybridVit::kDim;
    auto readout = register_module("0", std::make_shared<Module>());
    auto project = readout->register_module("project", std::make_shared<Module>());
    project_ = project->register_module("0", torch::nn::Linear(2 * dim, dim));
    conv_ = register_module("3", torch::nn::Conv2d(torch::nn::Conv2dOptions(dim, dim, 1)));
    if (downsample)
      down_ = register_module("4", torch::nn::Conv2d(torch::nn::Conv2dOptions(dim, dim, 3).stride(2).padding(1)));
  }
  torch::Tensor forward(const torch::Tensor& tokens, int64_t grid_h, int64_t grid_w) {
    auto patches = tokens.slice(1, 1);
    auto readout = tokens.slice(1, 0, 1).expand_as(patches);
    auto h = torch::gelu(project_(torch::cat({patches, readout}, -1)));
    h = conv_(h.transpose(1, 2).unflatten(2, {grid_h, grid_w}));
    return down_ ? down_(h) : h;
  }

 private:
  torch::nn::Linear project_{nullptr};
  torch::nn::Conv2d conv_{nullptr}, down_{nullptr};
};

torch::nn::Conv2d conv3x3(Module& parent, const std::string& name, int64_t in, int64_t out, bool bias = true) {
  return parent.register_module(name, torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).padding(1).bias(bias)));
}

torch::Tensor upsample2x(const torch::Tensor& x) {
  return F::interpolate(x, F::InterpolateFuncOptions()
                               .size(std::vector<int64_t>{2 * x.size(2), 2 * x.size(3)})
                               .mode(torch::kBilinear)
                               .align_corners(true));
}

// ResidualConvUnit_custom without BatchNorm: x + conv2(relu(conv1(relu(x)))).
class ResidualConvUnit : public Module {
 public:
  explicit ResidualConvUnit(int64_t features) {
    conv1_ = conv3x3(*this, "conv1", features, features);
    conv2_ = conv3x3(*this, "conv2", features, features);
  }
  torch::Tensor forward(const torch::Tensor& x) { return conv2_(torch::relu(conv1_(torch::relu(x)))) + x; }

 private:
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr};
};

// FeatureFusionBlock_custom: (path [+ unit1(skip)]) -> unit2 -> bilinear x2
// (align_corners) -> 1x1 conv.
class FusionBlock : public Module {
 public:
  explicit FusionBlock(int64_t features) {
    unit1_ = register_module("resConfUnit1", std::make_shared<ResidualConvUnit>(features));
    unit2_ = register_module("resConfUnit2", std::make_shared<ResidualConvUnit>(features));
    out_conv_ = register_module("out_conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(features, features, 1)));
  }
  torch::Tensor forward(const torch::Tensor& path, const torch::Tensor& skip = {}) {
    auto h = skip.defined() ? path + unit1_->forward(skip) : path;
    return out_conv_(upsample2x(unit2_->forward(h)));
  }

 private:
  std::shared_ptr<ResidualConvUnit> unit1_, unit2_;
  torch::nn::Conv2d out_conv_{nullptr};
};

// DPT's "scratch": 3x3 convs to 256 channels, the four fusion blocks from the
// deepest level up, and the depth head (conv, x2, conv, ReLU, 1x1 conv, ReLU).
class DptScratch : public Module {
 public:
  static constexpr int64_t kFeatures = 256;
  DptScratch() {
    const int64_t in_channels[] = {256, 512, 768, 768};
    for (int i = 0; i < 4; ++i)
      layer_rn_[i] = conv3x3(*this, "layer" + std::to_string(i + 1) + "_rn", in_channels[i], kFeatures, false);
    for (int i = 0; i < 4; ++i)
      refine_[i] = register_module("refinenet" + std::to_string(i + 1), std::make_shared<FusionBlock>(kFeatures));
    auto head = register_module("output_conv", std::make_shared<Module>());
    head0_ = conv3x3(*head, "0", kFeatures, kFeatures / 2);
    head2_ = conv3x3(*head, "2", kFeatures / 2, 32);
    head4_ = head->register_module("4", torch::nn::Conv2d(torch::nn::Conv2dOptions(32, 1, 1)));
  }
  torch::Tensor forward(const std::array<torch::Tensor, 4>& layers) {
    auto path = refine_[3]->forward(layer_rn_[3](layers[3]));
    for (int i = 2; i >= 0; --i) path = refine_[i]->forward(path, layer_rn_[i](layers[i]));
    auto h = upsample2x(head0_(path));
    return torch::relu(head4_(torch::relu(head2_(h))));
  }

 private:
  std::array<torch::nn::Conv2d, 4> layer_rn_{nullptr, nullptr, nullptr, nullptr};
  std::array<std::shared_ptr<FusionBlock>, 4> refine_;
  torch::nn::Conv2d head0_{nullptr}, head2_{nullptr}, head4_{nullptr};
};

}  // namespace midas_detail

DptHybridImpl::DptHybridImpl() {
  using namespace midas_detail;
  auto pretrained = register_module("pretrained", std::make_shared<Module>());
  vit_ = pretrained->register_module("model", std::make_shared<HybridVit>());
  postprocess3_ = pretrained->register_module("act_postprocess3", std::make_shared<ReadoutReassemble>(false));
  postprocess4_ = pretrained->register_module("act_postprocess4", std::make_shared<ReadoutReassemble>(true));
  scratch_ = register_module("scratch", std::make_shared<DptScratch>());
}

torch::Tensor DptHybridImpl::forward(const torch::Tensor& x) {
  if (x.dim() != 4 || x.size(1) != 3 || x.size(2) % 32 != 0 || x.size(3) % 32 != 0)
    throw Error("MiDaS input must be (B, 3, H, W) with H and W multiples of 32, got " + std::to_string(x.size(2)) +
                "x" + std::to_string(x.size(3)));
  const int64_t grid_h = x.size(2) / midas_detail::HybridVit::kPatch, grid_w = x.size(3) / midas_detail::HybridVit::kPatch;
  auto hooks = vit_->forward(x);
  hooks[2] = postprocess3_->forward(hooks[2], grid_h, grid_w);
  hooks[3] = postprocess4_->forward(hooks[3], grid_h, grid_w);
  return scratch_->forward(hooks).squeeze(1);
}

DptHybrid load_dpt_hybrid(const io::TensorMap& checkpoint, const std::string& what) {
  // BaseModel.load takes {'model': sd, 'optimizer': ...} too. Flattened, the
  // model's names begin with "model." (DPT's own begin with "pretrained." or
  // "scratch."); the optimizer's state, if any tensor of it is named, is not ours.
  io::TensorMap weights;
  for (const auto& [key, tensor] : checkpoint) {
    if (key.rfind("optimizer.", 0) == 0) continue;
    weights[key.rfind("model.", 0) == 0 ? key.substr(6) : key] = tensor;
  }
  DptHybrid model;
  // The ImageNet classifier of timm's ViT is in the official file but unused by DPT.
  nn::load_weights(*model, weights, what, {"pretrained.model.head.weight", "pretrained.model.head.bias"});
  model->eval();
  return model;
}

DptHybrid dpt_hybrid_from_file(const std::filesystem::path& path, torch::ScalarType dtype) {
  return load_once<DptHybrid>(path, dtype, [](const std::filesystem::path& p) {
    return load_dpt_hybrid(load_annotator_weights(p, {}), p.string());
  });
}

torch::Tensor midas_input(const cv::Mat& rgb) {
  if (rgb.type() != CV_8UC3) throw Error("expected an RGB uint8 image");
  const cv::Mat pixels = rgb.isContinuous() ? rgb : rgb.clone();
  auto image = torch::from_blob(pixels.data, {rgb.rows, rgb.cols, 3}, torch::kUInt8).to(torch::kFloat32);
  return (image / 127.5 - 1.0).permute({2, 0, 1}).unsqueeze(0).contiguous();
}

torch::Tensor midas_raw_depth(DptHybrid& model, const cv::Mat& rgb) {
  torch::NoGradGuard no_grad;
  return model->forward(midas_input(rgb).to(network_dtype(*model)))[0];
}

namespace {

// torch: depth -= min(depth); depth /= max(depth) (float32).
torch::Tensor normalised_depth(const torch::Tensor& raw_depth) {
  auto d = raw_depth.to(torch::kFloat32) - raw_depth.to(torch::kFloat32).min();
  return (d / d.max()).contiguous();
}

cv::Mat as_mat(const torch::Tensor& t) {
  return cv::Mat(int(t.size(0)), int(t.size(1)), CV_32F, t.data_ptr<float>());
}

// numpy's float32 (v * 127.5 + 127.5).clip(0, 255).astype(uint8), one
// rounding per operation (volatile keeps the compiler from fusing them).
uint8_t to_u8(float v, float scale, float offset) {
  volatile float scaled = v * scale;
  const float shifted = scaled + offset;
  return uint8_t(std::clamp(shifted, 0.0f, 255.0f));
}

}  // namespace

cv::Mat midas_depth_map(const torch::Tensor& raw_depth) {
  const auto d = normalised_depth(raw_depth);
  const float* v = d.data_ptr<float>();
  cv::Mat out(int(d.size(0)), int(d.size(1)), CV_8U);
  for (int64_t i = 0; i < d.numel(); ++i) out.data[i] = to_u8(v[i], 255.0f, 0.0f);
  return out;
}

cv::Mat midas_normal_map_v10(const torch::Tensor& raw_depth, double a, double bg_th) {
  if (raw_depth.dim() != 2) throw Error("MiDaS depth must be (H, W)");
  const auto raw = raw_depth.to(torch::kFloat32).contiguous();
  const auto depth = normalised_depth(raw);
  cv::Mat gx, gy;
  cv::Sobel(as_mat(raw), gx, CV_32F, 1, 0, 3);
  cv::Sobel(as_mat(raw), gy, CV_32F, 0, 1, 3);
  // numpy compares the float32 depth with the threshold converted to float32.
  const float threshold = float(bg_th), z = float(a);
  const float* normalised = depth.data_ptr<float>();
  cv::Mat out(gx.size(), CV_8UC3);
  for (int y = 0; y < out.rows; ++y)
    for (int x = 0; x < out.cols; ++x) {
      const bool background = normalised[int64_t(y) * out.cols + x] < threshold;
      const float n[3] = {background ? 0.0f : gx.at<float>(y, x), background ? 0.0f : gy.at<float>(y, x), z};
      // np.sum(n ** 2, axis=2) adds the squares in order, in float32; ** 0.5 is sqrt.
      volatile float xx = n[0] * n[0], yy = n[1] * n[1], zz = n[2] * n[2];
      volatile float partial = xx + yy;
      const float length = std::sqrt(partial + zz);
      auto& pixel = out.at<cv::Vec3b>(y, x);
      for (int c = 0; c < 3; ++c) pixel[c] = to_u8(n[c] / length, 127.5f, 127.5f);
    }
  return out;
}

}  // namespace cn::preprocess
