#include "preprocess/mlsd_net.h"

#include <array>

#include "controlnet/error.h"
#include "nn/weights.h"
#include "preprocess/mlsd.h"
#include "preprocess/preprocess.h"

namespace cn::preprocess {

namespace tnn = torch::nn;
namespace F = torch::nn::functional;

namespace mlsd_detail {
namespace {

tnn::Conv2d conv(int64_t in, int64_t out, int64_t kernel, int64_t padding = 0, int64_t dilation = 1) {
  return tnn::Conv2d(tnn::Conv2dOptions(in, out, kernel).padding(padding).dilation(dilation));
}

// conv -> BatchNorm -> ReLU, the decoder's unit (Sequential indices 0 and 1
// hold the weights, as in the file).
tnn::Sequential conv_bn_relu(int64_t in, int64_t out, int64_t kernel, int64_t padding = 0, int64_t dilation = 1) {
  return tnn::Sequential(conv(in, out, kernel, padding, dilation), tnn::BatchNorm2d(out), tnn::ReLU());
}

// The backbone's conv (no bias) -> BatchNorm -> ReLU6. A stride-2 conv sees
// its input zero-padded by one row and column at the bottom and right only
// (TFLite's padding) and pads nothing itself.
class ConvBnRelu6Impl : public tnn::Module {
 public:
  ConvBnRelu6Impl(int64_t in, int64_t out, int64_t kernel, int64_t stride = 1, int64_t groups = 1) : stride_(stride) {
    conv_ = register_module("0", tnn::Conv2d(tnn::Conv2dOptions(in, out, kernel)
                                                .stride(stride)
                                                .padding(stride == 2 ? 0 : (kernel - 1) / 2)
                                                .groups(groups)
                                                .bias(false)));
    bn_ = register_module("1", tnn::BatchNorm2d(out));
  }
  torch::Tensor forward(torch::Tensor x) {
    if (stride_ == 2) x = F::pad(x, F::PadFuncOptions({0, 1, 0, 1}));
    return torch::clamp(bn_(conv_(x)), 0, 6);
  }

 private:
  int64_t stride_;
  tnn::Conv2d conv_{nullptr};
  tnn::BatchNorm2d bn_{nullptr};
};
TORCH_MODULE(ConvBnRelu6);

// MobileNetV2's inverted residual: 1x1 expansion (skipped for ratio 1),
// depthwise 3x3, linear 1x1 projection; the input is added back when the
// shape is kept.
class InvertedResidualImpl : public tnn::Module {
 public:
  InvertedResidualImpl(int64_t in, int64_t out, int64_t stride, int64_t expansion)
      : residual_(stride == 1 && in == out) {
    const int64_t hidden = in * expansion;
    conv_ = register_module("conv", tnn::Sequential());
    if (expansion != 1) conv_->push_back(ConvBnRelu6(in, hidden, 1));
    conv_->push_back(ConvBnRelu6(hidden, hidden, 3, stride, hidden));
    conv_->push_back(tnn::Conv2d(tnn::Conv2dOptions(hidden, out, 1).bias(false)));
    conv_->push_back(tnn::BatchNorm2d(out));
  }
  torch::Tensor forward(const torch::Tensor& x) { return residual_ ? x + conv_->forward(x) : conv_->forward(x); }

 private:
  bool residual_;
  tnn::Sequential conv_{nullptr};
};
TORCH_MODULE(InvertedResidual);

}  // namespace

// MobileNetV2 (width 1) up to its 96-channel stage, on the 4-channel input.
// Returns the features after blocks 1, 3, 6, 10 and 13: 16, 24, 32, 64 and
// 96 channels at 1/2, 1/4, 1/8, 1/16 and 1/16 of the input size.
class MobileNetV2Features : public tnn::Module {
 public:
  MobileNetV2Features() {
    features_ = register_module("features", tnn::Sequential(ConvBnRelu6(4, 32, 3, 2)));
    struct Stage {
      int64_t expansion, channels, blocks, stride;
    };
    int64_t in = 32;
    for (const Stage& s : {Stage{1, 16, 1, 1}, Stage{6, 24, 2, 2}, Stage{6, 32, 3, 2}, Stage{6, 64, 4, 2},
                           Stage{6, 96, 3, 1}}) {
      for (int64_t i = 0; i < s.blocks; ++i) {
        features_->push_back(InvertedResidual(in, s.channels, i == 0 ? s.stride : 1, s.expansion));
        in = s.channels;
      }
    }
  }
  std::array<torch::Tensor, 5> forward(torch::Tensor x) {
    static constexpr size_t kTaps[] = {1, 3, 6, 10, 13};
    std::array<torch::Tensor, 5> taps;
    size_t index = 0, next = 0;
    for (auto& feature : *features_) {
      x = feature.forward(x);
      if (index++ != kTaps[next]) continue;
      taps[next++] = x;
      if (next == taps.size()) break;
    }
    return taps;
  }

 private:
  tnn::Sequential features_{nullptr};
};

// BlockTypeA: the fine feature map `a` and the coarse decoder state `b`, each
// through 1x1 conv-BN-ReLU, b bilinearly doubled (align_corners) unless both
// have the same size, concatenated [a, b].
class LateralMerge : public tnn::Module {
 public:
  LateralMerge(int64_t fine_in, int64_t coarse_in, bool upscale) : upscale_(upscale) {
    coarse_ = register_module("conv1", conv_bn_relu(coarse_in, 64, 1));
    fine_ = register_module("conv2", conv_bn_relu(fine_in, 64, 1));
  }
  torch::Tensor forward(const torch::Tensor& fine, const torch::Tensor& coarse) {
    auto b = coarse_->forward(coarse);
    if (upscale_)
      b = F::interpolate(b, F::InterpolateFuncOptions()
                                .size(std::vector<int64_t>{2 * b.size(2), 2 * b.size(3)})
                                .mode(torch::kBilinear)
                                .align_corners(true));
    return torch::cat({fine_->forward(fine), b}, 1);
  }

 private:
  bool upscale_;
  tnn::Sequential coarse_{nullptr}, fine_{nullptr};
};

// BlockTypeB: a 3x3 conv-BN-ReLU added to its input, then a 3x3 conv-BN-ReLU
// from 128 to 64 channels.
class Refine : public tnn::Module {
 public:
  Refine() {
    conv1_ = register_module("conv1", conv_bn_relu(128, 128, 3, 1));
    conv2_ = register_module("conv2", conv_bn_relu(128, 64, 3, 1));
  }
  torch::Tensor forward(const torch::Tensor& x) { return conv2_->forward(conv1_->forward(x) + x); }

 private:
  tnn::Sequential conv1_{nullptr}, conv2_{nullptr};
};

// BlockTypeC: 3x3 conv-BN-ReLU with dilation 5, 3x3 conv-BN-ReLU, 1x1 conv to
// the 16 output channels.
class Head : public tnn::Module {
 public:
  Head() {
    conv1_ = register_module("conv1", conv_bn_relu(64, 64, 3, 5, 5));
    conv2_ = register_module("conv2", conv_bn_relu(64, 64, 3, 1));
    conv3_ = register_module("conv3", conv(64, 16, 1));
  }
  torch::Tensor forward(const torch::Tensor& x) { return conv3_(conv2_->forward(conv1_->forward(x))); }

 private:
  tnn::Sequential conv1_{nullptr}, conv2_{nullptr};
  tnn::Conv2d conv3_{nullptr};
};

}  // namespace mlsd_detail

MlsdLargeImpl::MlsdLargeImpl() {
  using namespace mlsd_detail;
  backbone_ = register_module("backbone", std::make_shared<MobileNetV2Features>());
  // Lateral inputs from the deepest tap up: 64 (merged with the 96-channel
  // tap at the same 1/16 size), 32, 24, 16 channels.
  const int64_t fine_channels[] = {64, 32, 24, 16};
  for (int i = 0; i < 4; ++i) {
    merges_.push_back(register_module("block" + std::to_string(15 + 2 * i),
                                      std::make_shared<LateralMerge>(fine_channels[i], i == 0 ? 96 : 64, i > 0)));
    refines_.push_back(register_module("block" + std::to_string(16 + 2 * i), std::make_shared<Refine>()));
  }
  head_ = register_module("block23", std::make_shared<Head>());
}

torch::Tensor MlsdLargeImpl::forward(const torch::Tensor& x) {
  // Each stride-2 stage halves exactly only for even sizes, and the decoder
  // concatenates maps that must then match.
  if (x.dim() != 4 || x.size(1) != 4 || x.size(2) % 16 != 0 || x.size(3) % 16 != 0)
    throw Error("M-LSD: the input must be (B, 4, H, W) with H and W multiples of 16");
  // Channels-last runs the convolutions (depthwise ones above all) through
  // oneDNN's fast kernels: about twice as fast at 512 x 512 on this CPU build.
  const auto taps = backbone_->forward(x.contiguous(torch::MemoryFormat::ChannelsLast));
  torch::Tensor h = taps[4];
  for (size_t i = 0; i < merges_.size(); ++i) h = refines_[i]->forward(merges_[i]->forward(taps[3 - i], h));
  return head_->forward(h).slice(1, 7).contiguous();
}

MlsdLarge load_mlsd(const io::TensorMap& state_dict, const std::string& what) {
  MlsdLarge model;
  nn::load_weights(*model, state_dict, what);
  model->eval();
  return model;
}

MlsdLarge mlsd_from_file(const std::filesystem::path& path, torch::ScalarType dtype) {
  return load_once<MlsdLarge>(path, dtype, [](const std::filesystem::path& p) {
    return load_mlsd(load_annotator_weights(p, {}), p.string());
  });
}

torch::Tensor mlsd_input(const cv::Mat& rgb) {
  CV_Assert(rgb.type() == CV_8UC3);
  // numpy divides in float32 and subtracts 1 in float32; a table of the 256
  // values keeps those two roundings (torch's scalar division multiplies by
  // the reciprocal instead).
  std::array<float, 256> value;
  for (int v = 0; v < 256; ++v) value[size_t(v)] = float(v) / 127.5f - 1.0f;
  auto x = torch::empty({1, 4, rgb.rows, rgb.cols}, torch::kFloat32);
  auto out = x.accessor<float, 4>();
  for (int y = 0; y < rgb.rows; ++y) {
    const auto* row = rgb.ptr<cv::Vec3b>(y);
    for (int c = 0; c < rgb.cols; ++c) {
      for (int k = 0; k < 3; ++k) out[0][k][y][c] = value[row[c][k]];
      out[0][3][y][c] = value[1];  // the constant 4th channel: ones / 127.5 - 1
    }
  }
  return x;
}

cv::Mat mlsd_detect(MlsdLarge& model, const cv::Mat& rgb, double score_threshold, double distance_threshold) {
  torch::NoGradGuard no_grad;
  const auto tpmap = model->forward(mlsd_input(rgb).to(network_dtype(*model))).to(torch::kFloat32);
  return mlsd_draw_lines(mlsd_decode_lines(tpmap, score_threshold, distance_threshold), rgb.rows, rgb.cols);
}

}  // namespace cn::preprocess
