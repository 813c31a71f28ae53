#include "preprocess/pidinet.h"


#include "controlnet/error.h"
#include "nn/weights.h"
#include "preprocess/edges.h"
#include "preprocess/preprocess.h"

namespace cn::preprocess {

namespace F = torch::nn::functional;
using torch::nn::Conv2d;
using torch::nn::Conv2dOptions;

namespace pidinet_detail {

// The four operators of a PiDiNet layer: vanilla, central, angular and radial
// pixel differences.
enum class Difference { vanilla, central, angular, radial };

// A 3x3 convolution (bias-free, padding 1) whose kernel acts on pixel
// differences. Applied as the reference does during training - not folded
// into an equivalent plain kernel - so the float rounding is the same:
//   central: conv(x, w) - conv(x, sum(w)) (the centre subtracted from every tap);
//   angular: conv(x, w - w rotated one step clockwise around the centre);
//   radial:  a 5x5 kernel, the weights on the outer ring and their negatives
//            on the inner ring, padding 2.
class PixelDifferenceConv : public torch::nn::Module {
 public:
  PixelDifferenceConv(Difference kind, int64_t in, int64_t out, int64_t groups) : kind_(kind), groups_(groups) {
    weight_ = register_parameter("weight", torch::zeros({out, in / groups, 3, 3}));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    const auto options = F::Conv2dFuncOptions().groups(groups_);
    switch (kind_) {
      case Difference::vanilla:
        return F::conv2d(x, weight_, F::Conv2dFuncOptions(options).padding(1));
      case Difference::central: {
        const auto centre = F::conv2d(x, weight_.sum({2, 3}, /*keepdim=*/true), options);
        return F::conv2d(x, weight_, F::Conv2dFuncOptions(options).padding(1)) - centre;
      }
      case Difference::angular: {
        // Each tap minus its clockwise predecessor on the 3x3 ring (centre: itself).
        static const std::vector<int64_t> predecessor = {3, 0, 1, 6, 4, 2, 7, 8, 5};
        const auto flat = weight_.flatten(2);
        const auto kernel = (flat - flat.index_select(2, torch::tensor(predecessor))).view_as(weight_);
        return F::conv2d(x, kernel, F::Conv2dFuncOptions(options).padding(1));
      }
      case Difference::radial: {
        static const std::vector<int64_t> outer = {0, 2, 4, 10, 14, 20, 22, 24};
        static const std::vector<int64_t> inner = {6, 7, 8, 11, 13, 16, 17, 18};
        const auto ring = weight_.flatten(2).slice(2, 1);  // the 8 non-first taps
        auto kernel = torch::zeros({weight_.size(0), weight_.size(1), 25}, weight_.options());
        kernel.index_copy_(2, torch::tensor(outer), ring);
        kernel.index_copy_(2, torch::tensor(inner), -ring);
        return F::conv2d(x, kernel.view({weight_.size(0), weight_.size(1), 5, 5}),
                         F::Conv2dFuncOptions(options).padding(2));
      }
    }
    throw Error("unknown pixel difference");
  }

 private:
  Difference kind_;
  int64_t groups_;
  torch::Tensor weight_;
};

// Depthwise pixel-difference conv, ReLU, 1x1 conv, plus the input; a block
// that changes the stage first max-pools 2x2 and projects the shortcut.
class PdcBlock : public torch::nn::Module {
 public:
  PdcBlock(Difference kind, int64_t in, int64_t out, bool down_sample) : down_sample_(down_sample) {
    if (down_sample_) shortcut_ = register_module("shortcut", Conv2d(Conv2dOptions(in, out, 1)));
    conv1_ = register_module("conv1", std::make_shared<PixelDifferenceConv>(kind, in, in, in));
    conv2_ = register_module("conv2", Conv2d(Conv2dOptions(in, out, 1).bias(false)));
  }
  torch::Tensor forward(torch::Tensor x) {
    if (down_sample_) x = F::max_pool2d(x, F::MaxPool2dFuncOptions(2).stride(2));
    auto y = conv2_(torch::relu(conv1_->forward(x)));
    return y + (down_sample_ ? shortcut_(x) : x);
  }

 private:
  bool down_sample_;
  Conv2d shortcut_{nullptr}, conv2_{nullptr};
  std::shared_ptr<PixelDifferenceConv> conv1_;
};

// CDCM: ReLU, 1x1 reduction, then the sum of four dilated 3x3 convs (5, 7, 9, 11).
class Cdcm : public torch::nn::Module {
 public:
  Cdcm(int64_t in, int64_t out) {
    conv1_ = register_module("conv1", Conv2d(Conv2dOptions(in, out, 1)));
    for (int64_t dilation : {5, 7, 9, 11})
      dilated_.push_back(register_module("conv2_" + std::to_string(dilated_.size() + 1),
                                         Conv2d(Conv2dOptions(out, out, 3).dilation(dilation).padding(dilation).bias(false))));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    const auto h = conv1_(torch::relu(x));
    torch::Tensor sum = dilated_[0](h);
    for (size_t i = 1; i < dilated_.size(); ++i) sum = sum + dilated_[i](h);
    return sum;
  }

 private:
  Conv2d conv1_{nullptr};
  std::vector<Conv2d> dilated_;
};

// CSAM: x scaled by a one-channel spatial attention computed from ReLU(x).
class Csam : public torch::nn::Module {
 public:
  explicit Csam(int64_t channels) {
    conv1_ = register_module("conv1", Conv2d(Conv2dOptions(channels, 4, 1)));
    conv2_ = register_module("conv2", Conv2d(Conv2dOptions(4, 1, 3).padding(1).bias(false)));
  }
  torch::Tensor forward(const torch::Tensor& x) { return x * torch::sigmoid(conv2_(conv1_(torch::relu(x)))); }

 private:
  Conv2d conv1_{nullptr}, conv2_{nullptr};
};

// MapReduce: the 1x1 conv to one edge logit map.
class MapReduce : public torch::nn::Module {
 public:
  explicit MapReduce(int64_t channels) { conv_ = register_module("conv", Conv2d(Conv2dOptions(channels, 1, 1))); }
  torch::Tensor forward(const torch::Tensor& x) { return conv_(x); }

 private:
  Conv2d conv_{nullptr};
};

// One stage's side output: CDCM, CSAM, MapReduce (registered by the caller in
// the reference's three lists).
class FuseBranch {
 public:
  std::shared_ptr<Cdcm> dilation;
  std::shared_ptr<Csam> attention;
  std::shared_ptr<MapReduce> reduce;
  torch::Tensor forward(const torch::Tensor& x) { return reduce->forward(attention->forward(dilation->forward(x))); }
};

}  // namespace pidinet_detail

using namespace pidinet_detail;

PiDiNetImpl::PiDiNetImpl() {
  constexpr int64_t kChannels = 60, kDilationChannels = 24;
  // 'carv4': layer i uses central, angular, radial, vanilla for i % 4 = 0..3.
  const Difference layout[] = {Difference::central, Difference::angular, Difference::radial, Difference::vanilla};
  init_block_ = register_module("init_block", std::make_shared<PixelDifferenceConv>(layout[0], 3, kChannels, 1));
  // Stage s has `blocks[s]` blocks; stages 2..4 start by halving the resolution.
  const int blocks[] = {3, 4, 4, 4};
  const int64_t widths[] = {kChannels, 2 * kChannels, 4 * kChannels, 4 * kChannels};
  int layer = 1;
  int64_t in = kChannels;
  for (int s = 0; s < 4; ++s) {
    stages_.emplace_back();
    for (int b = 0; b < blocks[s]; ++b, ++layer) {
      const auto name = "block" + std::to_string(s + 1) + "_" + std::to_string(b + 1);
      stages_.back().push_back(
          register_module(name, std::make_shared<PdcBlock>(layout[layer % 4], in, widths[s], s > 0 && b == 0)));
      in = widths[s];
    }
  }
  auto reduces = register_module("conv_reduces", torch::nn::ModuleList());
  auto attentions = register_module("attentions", torch::nn::ModuleList());
  auto dilations = register_module("dilations", torch::nn::ModuleList());
  for (int s = 0; s < 4; ++s) {
    FuseBranch branch;
    branch.dilation = std::make_shared<Cdcm>(widths[s], kDilationChannels);
    branch.attention = std::make_shared<Csam>(kDilationChannels);
    branch.reduce = std::make_shared<MapReduce>(kDilationChannels);
    dilations->push_back(branch.dilation);
    attentions->push_back(branch.attention);
    reduces->push_back(branch.reduce);
    branches_.push_back(std::make_shared<FuseBranch>(branch));
  }
  classifier_ = register_module("classifier", Conv2d(Conv2dOptions(4, 1, 1)));
}

std::vector<torch::Tensor> PiDiNetImpl::forward(const torch::Tensor& x) {
  const std::vector<int64_t> size = {x.size(2), x.size(3)};
  auto h = init_block_->forward(x);
  std::vector<torch::Tensor> outputs;
  for (size_t s = 0; s < stages_.size(); ++s) {
    for (auto& block : stages_[s]) h = block->forward(h);
    outputs.push_back(F::interpolate(branches_[s]->forward(h),
                                     F::InterpolateFuncOptions().size(size).mode(torch::kBilinear).align_corners(false)));
  }
  outputs.push_back(classifier_(torch::cat(outputs, 1)));
  for (auto& o : outputs) o = torch::sigmoid(o);
  return outputs;
}

PiDiNet load_pidinet(const io::TensorMap& state_dict, const std::string& what) {
  PiDiNet model;
  nn::load_weights(*model, state_dict, what);
  model->eval();
  return model;
}

io::TensorMap pidinet_state_dict(const std::filesystem::path& path) {
  return load_annotator_weights(path, {"state_dict.", "module."});
}

PiDiNet pidinet_from_file(const std::filesystem::path& path, torch::ScalarType dtype) {
  return load_once<PiDiNet>(path, dtype, [](const std::filesystem::path& p) {
    return load_pidinet(pidinet_state_dict(p), p.string());
  });
}

torch::Tensor pidinet_input(const cv::Mat& rgb) {
  CV_Assert(rgb.type() == CV_8UC3);
  const cv::Mat pixels = rgb.isContinuous() ? rgb : rgb.clone();  // cropped views have row gaps
  const auto image = torch::from_blob(pixels.data, {1, pixels.rows, pixels.cols, 3}, torch::kUInt8).to(torch::kFloat32);
  return (image.flip({3}) / 255.0).permute({0, 3, 1, 2}).contiguous();
}

cv::Mat pidinet_edge_map(const torch::Tensor& fused, bool safe) {
  const auto edge = fused.to(torch::kFloat32).contiguous();
  if (edge.dim() != 4 || edge.size(0) != 1 || edge.size(1) != 1) throw Error("PiDiNet output is not (1, 1, H, W)");
  const cv::Mat map(int(edge.size(2)), int(edge.size(3)), CV_32F, edge.data_ptr());
  return unit_to_u8(safe ? safe_step(map) : map);
}

cv::Mat pidinet_detect(PiDiNet& model, const cv::Mat& rgb, bool safe) {
  torch::NoGradGuard no_grad;
  return pidinet_edge_map(model->forward(pidinet_input(rgb).to(network_dtype(*model))).back(), safe);
}

}  // namespace cn::preprocess
