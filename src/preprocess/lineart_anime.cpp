#include "preprocess/lineart_anime.h"

#include <algorithm>
#include <opencv2/imgproc.hpp>

#include "controlnet/error.h"
#include "nn/bf16_fallbacks.h"
#include "nn/weights.h"
#include "preprocess/preprocess.h"

namespace cn::preprocess {

namespace F = torch::nn;

namespace lineart_anime_detail {

enum class Level { outermost, intermediate, innermost };

// One level of the U-Net: a 4x4 stride-2 conv down, the inner levels, a 4x4
// stride-2 transposed conv up, and the level's input concatenated in front of
// the result (except at the outermost level, which ends in tanh). Every conv
// has a bias (the reference adds one when the norm is instance norm).
// Sequential indices as in the file:
//   outermost:    0 conv, 1 inner, 2 ReLU, 3 convT, 4 Tanh
//   intermediate: 0 LeakyReLU, 1 conv, 2 IN, 3 inner, 4 ReLU, 5 convT, 6 IN
//   innermost:    0 LeakyReLU, 1 conv, 2 ReLU, 3 convT, 4 IN (no norm at the 1x1 bottleneck)
class UnetSkipBlock : public torch::nn::Module {
 public:
  // outer: channels of the level's output; inner: of its down conv; input: of
  // its input. `inner_level` is null for the innermost level.
  UnetSkipBlock(Level level, int64_t outer, int64_t inner, int64_t input, std::shared_ptr<UnetSkipBlock> inner_level)
      : level_(level) {
    auto norm = [](int64_t channels) {
      return F::InstanceNorm2d(F::InstanceNorm2dOptions(channels).eps(1e-5).affine(false).track_running_stats(false));
    };
    const auto down = F::Conv2d(F::Conv2dOptions(input, inner, 4).stride(2).padding(1));
    // Above the bottleneck the up conv reads the inner level's output behind its skip.
    const auto up = nn::ConvTranspose2d(
        F::ConvTranspose2dOptions(level == Level::innermost ? inner : 2 * inner, outer, 4).stride(2).padding(1));
    const auto leaky = F::LeakyReLU(F::LeakyReLUOptions().negative_slope(0.2));
    F::Sequential layers;
    switch (level) {
      case Level::outermost:
        layers = F::Sequential(down, inner_level, F::ReLU(), up, F::Tanh());
        break;
      case Level::intermediate:
        layers = F::Sequential(leaky, down, norm(inner), inner_level, F::ReLU(), up, norm(outer));
        break;
      case Level::innermost:
        layers = F::Sequential(leaky, down, F::ReLU(), up, norm(outer));
        break;
    }
    model_ = register_module("model", layers);
  }

  torch::Tensor forward(const torch::Tensor& x) {
    if (level_ == Level::outermost) return model_->forward(x);
    // The reference's LeakyReLU works in place, so its skip carries
    // LeakyReLU(x); the outer level's ReLU, the only reader, makes that the
    // same as x.
    return torch::cat({x, model_->forward(x)}, 1);
  }

 private:
  Level level_;
  F::Sequential model_{nullptr};
};

}  // namespace lineart_anime_detail

namespace {
constexpr int64_t kLevels = 8;    // num_downs
constexpr int64_t kFilters = 64;  // ngf
constexpr int64_t kSideMultiple = int64_t(1) << kLevels;  // 256: the bottleneck is 1x1 per 256x256
}  // namespace

AnimeUnetGeneratorImpl::AnimeUnetGeneratorImpl() {
  using lineart_anime_detail::Level;
  using lineart_anime_detail::UnetSkipBlock;
  // Built from the bottleneck outwards: three levels at 8 * 64 channels below
  // the innermost one, then 8 -> 4 -> 2 -> 1 times 64, then the image level.
  auto block = std::make_shared<UnetSkipBlock>(Level::innermost, 8 * kFilters, 8 * kFilters, 8 * kFilters, nullptr);
  for (int64_t i = 0; i < kLevels - 5; ++i)
    block = std::make_shared<UnetSkipBlock>(Level::intermediate, 8 * kFilters, 8 * kFilters, 8 * kFilters, block);
  for (int64_t outer : {4 * kFilters, 2 * kFilters, kFilters})
    block = std::make_shared<UnetSkipBlock>(Level::intermediate, outer, 2 * outer, outer, block);
  model_ = register_module("model", std::make_shared<UnetSkipBlock>(Level::outermost, 1, kFilters, 3, block));
}

torch::Tensor AnimeUnetGeneratorImpl::forward(const torch::Tensor& x) {
  if (x.dim() != 4 || x.size(2) % kSideMultiple != 0 || x.size(3) % kSideMultiple != 0)
    throw Error("the anime line art network needs a (B, C, H, W) input with H and W multiples of 256");
  return model_->forward(x);
}

AnimeUnetGenerator load_lineart_anime(const io::TensorMap& state_dict, const std::string& what) {
  AnimeUnetGenerator model;
  nn::load_weights(*model, state_dict, what);
  model->eval();
  return model;
}

AnimeUnetGenerator lineart_anime_from_file(const std::filesystem::path& path, torch::ScalarType dtype) {
  return load_once<AnimeUnetGenerator>(path, dtype, [](const std::filesystem::path& p) {
    return load_lineart_anime(load_annotator_weights(p, {"module."}), p.string());
  });
}

cv::Mat lineart_anime_resize(const cv::Mat& rgb) {
  CV_Assert(rgb.type() == CV_8UC3);
  auto round_up = [](int side) { return int((side + kSideMultiple - 1) / kSideMultiple * kSideMultiple); };
  cv::Mat resized;
  cv::resize(rgb, resized, {round_up(rgb.cols), round_up(rgb.rows)}, 0, 0, cv::INTER_CUBIC);
  return resized;
}

torch::Tensor lineart_anime_input(const cv::Mat& resized_rgb) {
  CV_Assert(resized_rgb.type() == CV_8UC3);
  const cv::Mat pixels = resized_rgb.isContinuous() ? resized_rgb : resized_rgb.clone();  // cropped views have row gaps
  return torch::from_blob(pixels.data, {1, pixels.rows, pixels.cols, 3}, torch::kUInt8)
      .to(torch::kFloat32)
      .div(127.5)
      .sub(1.0)
      .permute({0, 3, 1, 2})
      .contiguous();
}

cv::Mat lineart_anime_map(const torch::Tensor& tanh_out, cv::Size size) {
  if (tanh_out.dim() != 4 || tanh_out.size(0) != 1 || tanh_out.size(1) != 1)
    throw Error("the anime line art output must be (1, 1, H, W)");
  // Two float32 roundings (multiply, then add), as torch computes it.
  const auto line = tanh_out[0][0].to(torch::kFloat32).mul(127.5).add(127.5).contiguous();
  cv::Mat resized;
  cv::resize(cv::Mat(int(line.size(0)), int(line.size(1)), CV_32F, line.data_ptr<float>()), resized, size, 0, 0,
             cv::INTER_CUBIC);
  cv::Mat map(size, CV_8U);
  for (int y = 0; y < size.height; ++y)
    for (int x = 0; x < size.width; ++x)  // numpy's clip, then astype(uint8) truncates
      map.at<uint8_t>(y, x) = uint8_t(std::clamp(resized.at<float>(y, x), 0.0f, 255.0f));
  return map;
}

cv::Mat lineart_anime_detect(AnimeUnetGenerator& model, const cv::Mat& rgb) {
  torch::NoGradGuard no_grad;
  const auto input = lineart_anime_input(lineart_anime_resize(rgb)).to(network_dtype(*model));
  return lineart_anime_map(model->forward(input), rgb.size());
}

}  // namespace cn::preprocess
