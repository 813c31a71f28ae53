#pragma once
// Line art as the ControlNet 1.1 annotator computes it: the informative-
// drawings Generator(3, 1, 3) (reflection-padded convs with instance norm,
// two stride-2 downsamples, three residual blocks, two transposed-conv
// upsamples, a sigmoid) with the fine (sk_model.pth) or coarse (sk_model2.pth)
// weights. Module names follow those files (model0.1.weight, ...).
#include <torch/torch.h>

#include <filesystem>
#include <opencv2/core.hpp>
#include <string>

#include "io/safetensors.h"

namespace cn::preprocess {

class LineartGeneratorImpl : public torch::nn::Module {
 public:
  LineartGeneratorImpl();
  // x: RGB / 255 as (B, 3, H, W); returns the line map (B, 1, H, W) in (0, 1),
  // near 1 on the background.
  torch::Tensor forward(const torch::Tensor& x);

 private:
  torch::nn::Sequential model0{nullptr}, model1{nullptr}, model2{nullptr}, model3{nullptr}, model4{nullptr};
};
TORCH_MODULE(LineartGenerator);

// The network from sk_model.pth / sk_model2.pth's state dict. Strict; eval mode.
LineartGenerator load_lineart(const io::TensorMap& state_dict, const std::string& what);
// load_lineart of an annotator file, read once per path and kept.
LineartGenerator lineart_from_file(const std::filesystem::path& path, torch::ScalarType dtype = torch::kFloat32);

// LineartDetector's map: (network output * 255) clipped and truncated to
// uint8, white background with dark lines, as the annotator returns it.
cv::Mat lineart_map(LineartGenerator& model, const cv::Mat& rgb);

}  // namespace cn::preprocess
