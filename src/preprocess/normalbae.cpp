#include "preprocess/normalbae.h"


#include "controlnet/error.h"
#include "nn/weights.h"
#include "preprocess/preprocess.h"
#include "preprocess/same_padding.h"

namespace cn::preprocess {

namespace F = torch::nn::functional;
using torch::nn::Module;

namespace normalbae_detail {

// geffnet's 'same' convs of the tf_ models: stride 1 pads statically and
// symmetrically, stride 2 pads dynamically (TF "SAME"); no bias.
torch::nn::Conv2d same_conv(Module& parent, const std::string& name, int64_t in, int64_t out, int64_t kernel,
                            int64_t stride = 1, int64_t groups = 1) {
  return parent.register_module(name, torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, kernel)
                                                            .stride(stride)
                                                            .padding(stride == 1 ? (kernel - 1) / 2 : 0)
                                                            .groups(groups)
                                                            .bias(false)));
}

torch::Tensor apply_same(torch::nn::Conv2d& conv, const torch::Tensor& x) {
  const int64_t stride = (*conv->options.stride())[0];
  return conv(stride == 1 ? x : pad_same(x, (*conv->options.kernel_size())[0], stride));
}

torch::nn::BatchNorm2d tf_batch_norm(Module& parent, const std::string& name, int64_t channels) {
  return parent.register_module(name, torch::nn::BatchNorm2d(torch::nn::BatchNormOptions(channels).eps(1e-3)));
}

// geffnet's Swish: x * sigmoid(x).
torch::Tensor swish(const torch::Tensor& x) { return x * torch::sigmoid(x); }

// Squeeze-and-excitation with Swish, reduced from the block's input channels.
class SqueezeExcite : public Module {
 public:
  SqueezeExcite(int64_t channels, int64_t reduced) {
    reduce_ = register_module("conv_reduce", torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, reduced, 1)));
    expand_ = register_module("conv_expand", torch::nn::Conv2d(torch::nn::Conv2dOptions(reduced, channels, 1)));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    return x * torch::sigmoid(expand_(swish(reduce_(x.mean({2, 3}, /*keepdim=*/true)))));
  }

 private:
  torch::nn::Conv2d reduce_{nullptr}, expand_{nullptr};
};

// EfficientNet's MBConv block. expansion 1 is geffnet's DepthwiseSeparableConv
// (dw, SE, pw; names conv_dw/bn1, conv_pw/bn2), otherwise InvertedResidual
// (pw expand, dw, SE, pw linear; conv_pw/bn1, conv_dw/bn2, conv_pwl/bn3). The
// input is added when the shape is kept.
class MbConv : public Module {
 public:
  MbConv(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t expansion)
      : expanded_(expansion != 1), residual_(in == out && stride == 1) {
    const int64_t mid = in * expansion;
    if (expanded_) {
      expand_ = same_conv(*this, "conv_pw", in, mid, 1);
      expand_bn_ = tf_batch_norm(*this, "bn1", mid);
    }
    dw_ = same_conv(*this, "conv_dw", mid, mid, kernel, stride, mid);
    dw_bn_ = tf_batch_norm(*this, expanded_ ? "bn2" : "bn1", mid);
    se_ = register_module("se", std::make_shared<SqueezeExcite>(mid, in / 4));
    project_ = same_conv(*this, expanded_ ? "conv_pwl" : "conv_pw", mid, out, 1);
    project_bn_ = tf_batch_norm(*this, expanded_ ? "bn3" : "bn2", out);
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto h = expanded_ ? swish(expand_bn_(expand_(x))) : x;
    h = swish(dw_bn_(apply_same(dw_, h)));
    h = project_bn_(project_(se_->forward(h)));
    return residual_ ? h + x : h;
  }

 private:
  bool expanded_, residual_;
  torch::nn::Conv2d expand_{nullptr}, dw_{nullptr}, project_{nullptr};
  torch::nn::BatchNorm2d expand_bn_{nullptr}, dw_bn_{nullptr}, project_bn_{nullptr};
  std::shared_ptr<SqueezeExcite> se_;
};

// tf_efficientnet_b5_ap (width 1.6, depth 2.2: stem 48, stages of 3, 5, 5, 7,
// 7, 9, 3 blocks, head 2048), BatchNorm eps 1e-3, Swish. Returns the features
// NNET's decoder reads: stages 0, 1, 2 and 4 and the head conv's raw output.
class EfficientNetB5 : public Module {
 public:
  EfficientNetB5() {
    auto model = register_module("original_model", std::make_shared<Module>());
    stem_ = same_conv(*model, "conv_stem", 3, 48, 3, 2);
    stem_bn_ = tf_batch_norm(*model, "bn1", 48);
    auto blocks = model->register_module("blocks", std::make_shared<Module>());
    const int64_t repeats[] = {3, 5, 5, 7, 7, 9, 3}, kernels[] = {3, 3, 5, 3, 5, 5, 3},
                  strides[] = {1, 2, 2, 2, 1, 2, 1}, channels[] = {24, 40, 64, 128, 176, 304, 512};
    int64_t in = 48;
    for (int s = 0; s < 7; ++s) {
      auto stage = blocks->register_module(std::to_string(s), torch::nn::Sequential());
      for (int64_t b = 0; b < repeats[s]; ++b)
        stage->push_back(std::make_shared<MbConv>(b == 0 ? in : channels[s], channels[s], kernels[s],
                                                  b == 0 ? strides[s] : 1, s == 0 ? 1 : 6));
      stages_.push_back(stage);
      in = channels[s];
    }
    head_ = same_conv(*model, "conv_head", in, 2048, 1);
    // In the checkpoint and run by the reference after conv_head, but its output is not used.
    tf_batch_norm(*model, "bn2", 2048);
  }
  std::array<torch::Tensor, 5> forward(const torch::Tensor& x) {
    auto h = swish(stem_bn_(apply_same(stem_, x)));
    std::vector<torch::Tensor> stage_outputs;
    for (auto& stage : stages_) {
      h = stage->forward(h);
      stage_outputs.push_back(h);
    }
    return {stage_outputs[0], stage_outputs[1], stage_outputs[2], stage_outputs[4], head_(h)};
  }

 private:
  torch::nn::Conv2d stem_{nullptr}, head_{nullptr};
  torch::nn::BatchNorm2d stem_bn_{nullptr};
  std::vector<torch::nn::Sequential> stages_;
};

torch::Tensor upsample_to(const torch::Tensor& x, int64_t height, int64_t width) {
  return F::interpolate(x, F::InterpolateFuncOptions()
                               .size(std::vector<int64_t>{height, width})
                               .mode(torch::kBilinear)
                               .align_corners(true));
}

// NNET's norm_normalize: xyz / (|xyz| + 1e-10), kappa = elu(kappa) + 1 + 0.01.
torch::Tensor normalise_prediction(const torch::Tensor& out) {
  auto parts = out.split(1, 1);
  auto norm = torch::sqrt(parts[0].pow(2.0) + parts[1].pow(2.0) + parts[2].pow(2.0)) + 1e-10;
  auto kappa = torch::elu(parts[3]) + 1.0 + 0.01;
  return torch::cat({parts[0] / norm, parts[1] / norm, parts[2] / norm, kappa}, 1);
}

// UpSampleBN: bilinear (align_corners) to the skip's size, concatenated, then
// twice conv3x3 + BatchNorm + LeakyReLU(0.01).
class UpSampleBN : public Module {
 public:
  UpSampleBN(int64_t in, int64_t out) {
    net_ = register_module("_net", torch::nn::Sequential(
                                       torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).padding(1)),
                                       torch::nn::BatchNorm2d(out), torch::nn::LeakyReLU(),
                                       torch::nn::Conv2d(torch::nn::Conv2dOptions(out, out, 3).padding(1)),
                                       torch::nn::BatchNorm2d(out), torch::nn::LeakyReLU()));
  }
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& skip) {
    return net_->forward(torch::cat({upsample_to(x, skip.size(2), skip.size(3)), skip}, 1));
  }

 private:
  torch::nn::Sequential net_{nullptr};
};

// The per-pixel refinement MLP (1x1 Conv1d, ReLU, ... 4 outputs).
torch::nn::Sequential refinement_mlp(Module& parent, const std::string& name, int64_t in) {
  auto conv = [](int64_t i, int64_t o) { return torch::nn::Conv1d(torch::nn::Conv1dOptions(i, o, 1)); };
  return parent.register_module(name, torch::nn::Sequential(conv(in, 128), torch::nn::ReLU(), conv(128, 128),
                                                            torch::nn::ReLU(), conv(128, 128), torch::nn::ReLU(),
                                                            conv(128, 4)));
}

// NNET's Decoder in 'test' mode: every pixel goes through the MLPs.
class NormalDecoder : public Module {
 public:
  NormalDecoder() {
    conv2_ = register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(2048, 2048, 1)));
    up_[0] = register_module("up1", std::make_shared<UpSampleBN>(2048 + 176, 1024));
    up_[1] = register_module("up2", std::make_shared<UpSampleBN>(1024 + 64, 512));
    up_[2] = register_module("up3", std::make_shared<UpSampleBN>(512 + 40, 256));
    up_[3] = register_module("up4", std::make_shared<UpSampleBN>(256 + 24, 128));
    res8_ = register_module("out_conv_res8", torch::nn::Conv2d(torch::nn::Conv2dOptions(512, 4, 3).padding(1)));
    res4_ = refinement_mlp(*this, "out_conv_res4", 512 + 4);
    res2_ = refinement_mlp(*this, "out_conv_res2", 256 + 4);
    res1_ = refinement_mlp(*this, "out_conv_res1", 128 + 4);
  }
  NormalBaeOutputs forward(const std::array<torch::Tensor, 5>& features) {
    auto d0 = conv2_(features[4]);
    auto d1 = up_[0]->forward(d0, features[3]);
    auto d2 = up_[1]->forward(d1, features[2]);
    auto d3 = up_[2]->forward(d2, features[1]);
    auto d4 = up_[3]->forward(d3, features[0]);
    NormalBaeOutputs out;
    out.res8 = normalise_prediction(res8_(d2));
    out.res4 = refine(res4_, d2, out.res8);
    out.res2 = refine(res2_, d3, out.res4);
    out.res1 = refine(res1_, d4, out.res2);
    return out;
  }

 private:
  // Features and the coarser prediction, both bilinearly doubled, through the MLP.
  static torch::Tensor refine(torch::nn::Sequential& mlp, const torch::Tensor& features, const torch::Tensor& coarse) {
    const int64_t h = 2 * features.size(2), w = 2 * features.size(3);
    auto input = torch::cat({upsample_to(features, h, w), upsample_to(coarse, h, w)}, 1);
    auto out = mlp->forward(input.view({input.size(0), input.size(1), -1}));
    return normalise_prediction(out).view({input.size(0), 4, h, w});
  }

  torch::nn::Conv2d conv2_{nullptr}, res8_{nullptr};
  std::array<std::shared_ptr<UpSampleBN>, 4> up_;
  torch::nn::Sequential res4_{nullptr}, res2_{nullptr}, res1_{nullptr};
};

}  // namespace normalbae_detail

NormalBaeImpl::NormalBaeImpl() {
  encoder_ = register_module("encoder", std::make_shared<normalbae_detail::EfficientNetB5>());
  decoder_ = register_module("decoder", std::make_shared<normalbae_detail::NormalDecoder>());
}

NormalBaeOutputs NormalBaeImpl::forward(const torch::Tensor& x) {
  if (x.dim() != 4 || x.size(1) != 3 || x.size(2) % 32 != 0 || x.size(3) % 32 != 0)
    throw Error("Normal-BAE input must be (B, 3, H, W) with H and W multiples of 32, got " +
                std::to_string(x.size(2)) + "x" + std::to_string(x.size(3)));
  return decoder_->forward(encoder_->forward(x));
}

NormalBae load_normal_bae(const io::TensorMap& checkpoint, const std::string& what) {
  io::TensorMap state;
  for (const auto& [name, tensor] : checkpoint) {
    std::string key = name;
    for (const std::string prefix : {"model.", "module."})
      if (key.rfind(prefix, 0) == 0) key.erase(0, prefix.size());
    state[key] = tensor;
  }
  NormalBae model;
  nn::load_weights(*model, state, what);
  model->eval();
  return model;
}

NormalBae normal_bae_from_file(const std::filesystem::path& path, torch::ScalarType dtype) {
  return load_once<NormalBae>(path, dtype, [](const std::filesystem::path& p) {
    return load_normal_bae(load_annotator_weights(p, {}), p.string());
  });
}

torch::Tensor normal_bae_input(const cv::Mat& rgb) {
  if (rgb.type() != CV_8UC3) throw Error("expected an RGB uint8 image");
  const cv::Mat pixels = rgb.isContinuous() ? rgb : rgb.clone();
  auto image = torch::from_blob(pixels.data, {rgb.rows, rgb.cols, 3}, torch::kUInt8).to(torch::kFloat32) / 255.0;
  image = image.permute({2, 0, 1}).unsqueeze(0);
  // torchvision's Normalize: subtract then divide, float32 mean and std.
  const auto mean = torch::tensor({0.485f, 0.456f, 0.406f}).view({1, 3, 1, 1});
  const auto std = torch::tensor({0.229f, 0.224f, 0.225f}).view({1, 3, 1, 1});
  return ((image - mean) / std).contiguous();
}

cv::Mat normal_bae_map(const torch::Tensor& normals) {
  if (normals.dim() != 4 || normals.size(0) != 1 || normals.size(1) < 3) throw Error("Normal-BAE normals must be (1, >=3, H, W)");
  const auto n = ((normals[0].slice(0, 0, 3).to(torch::kFloat32) + 1) * 0.5).clamp(0, 1).permute({1, 2, 0}).contiguous();
  const float* v = n.data_ptr<float>();
  cv::Mat out(int(n.size(0)), int(n.size(1)), CV_8UC3);
  for (int64_t i = 0; i < n.numel(); ++i) {
    // numpy: (normal * 255.0).clip(0, 255).astype(uint8) in float32.
    out.data[i] = uint8_t(std::clamp(v[i] * 255.0f, 0.0f, 255.0f));
  }
  return out;
}

cv::Mat normal_bae_detect(NormalBae& model, const cv::Mat& rgb) {
  torch::NoGradGuard no_grad;
  return normal_bae_map(model->forward(normal_bae_input(rgb).to(network_dtype(*model))).res1);
}

}  // namespace cn::preprocess
