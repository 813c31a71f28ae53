#include "preprocess/lineart.h"


#include "nn/bf16_fallbacks.h"
#include "nn/weights.h"
#include "preprocess/edges.h"
#include "preprocess/preprocess.h"

namespace cn::preprocess {
namespace {

namespace F = torch::nn;

F::InstanceNorm2d instance_norm(int64_t channels) {
  return F::InstanceNorm2d(F::InstanceNorm2dOptions(channels).eps(1e-5).affine(false).track_running_stats(false));
}

F::Conv2d conv(int64_t in, int64_t out, int64_t kernel, int64_t stride = 1, int64_t padding = 0) {
  return F::Conv2d(F::Conv2dOptions(in, out, kernel).stride(stride).padding(padding));
}

// ReflectionPad(1), conv, IN, ReLU, ReflectionPad(1), conv, IN; plus the input.
// Indices 1 and 5 of conv_block hold the weights, as in the files.
class ResidualBlockImpl : public torch::nn::Module {
 public:
  explicit ResidualBlockImpl(int64_t channels) {
    conv_block = register_module("conv_block", F::Sequential(nn::ReflectionPad2d(1), conv(channels, channels, 3),
                                                              instance_norm(channels), F::ReLU(), nn::ReflectionPad2d(1),
                                                              conv(channels, channels, 3), instance_norm(channels)));
  }
  torch::Tensor forward(const torch::Tensor& x) { return x + conv_block->forward(x); }

 private:
  F::Sequential conv_block{nullptr};
};
TORCH_MODULE(ResidualBlock);

}  // namespace

LineartGeneratorImpl::LineartGeneratorImpl() {
  model0 = register_module("model0", F::Sequential(nn::ReflectionPad2d(3), conv(3, 64, 7), instance_norm(64), F::ReLU()));
  model1 = register_module("model1", F::Sequential(conv(64, 128, 3, 2, 1), instance_norm(128), F::ReLU(),
                                                   conv(128, 256, 3, 2, 1), instance_norm(256), F::ReLU()));
  model2 = register_module("model2", F::Sequential(ResidualBlock(256), ResidualBlock(256), ResidualBlock(256)));
  auto up = [](int64_t in, int64_t out) {
    return nn::ConvTranspose2d(F::ConvTranspose2dOptions(in, out, 3).stride(2).padding(1).output_padding(1));
  };
  model3 = register_module("model3", F::Sequential(up(256, 128), instance_norm(128), F::ReLU(), up(128, 64),
                                                   instance_norm(64), F::ReLU()));
  model4 = register_module("model4", F::Sequential(nn::ReflectionPad2d(3), conv(64, 1, 7), F::Sigmoid()));
}

torch::Tensor LineartGeneratorImpl::forward(const torch::Tensor& x) {
  return model4->forward(model3->forward(model2->forward(model1->forward(model0->forward(x)))));
}

LineartGenerator load_lineart(const io::TensorMap& state_dict, const std::string& what) {
  LineartGenerator model;
  nn::load_weights(*model, state_dict, what);
  model->eval();
  return model;
}

LineartGenerator lineart_from_file(const std::filesystem::path& path, torch::ScalarType dtype) {
  return load_once<LineartGenerator>(path, dtype, [](const std::filesystem::path& p) {
    return load_lineart(load_annotator_weights(p, {}), p.string());
  });
}

cv::Mat lineart_map(LineartGenerator& model, const cv::Mat& rgb) {
  CV_Assert(rgb.type() == CV_8UC3);
  torch::NoGradGuard no_grad;
  const cv::Mat pixels = rgb.isContinuous() ? rgb : rgb.clone();  // cropped views have row gaps
  const auto x = torch::from_blob(pixels.data, {1, pixels.rows, pixels.cols, 3}, torch::kUInt8)
                     .to(torch::kFloat32)
                     .div(255.0)
                     .permute({0, 3, 1, 2})
                     .contiguous();
  const auto line = model->forward(x.to(network_dtype(*model)))[0][0].to(torch::kFloat32).contiguous();
  const cv::Mat unit(int(line.size(0)), int(line.size(1)), CV_32F, line.data_ptr<float>());
  return unit_to_u8(unit);
}

}  // namespace cn::preprocess
