#pragma once
// HED soft edges as the ControlNet 1.1 annotator computes them: the
// ControlNetHED_Apache2 network (a VGG-like stack of five blocks, each with a
// 1x1 projection to an edge logit map at its own resolution) and the
// HEDdetector's post-processing. Module names follow ControlNetHED.pth.
#include <torch/torch.h>

#include <filesystem>
#include <opencv2/core.hpp>
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace cn::preprocess {

namespace hed_detail {
class HedBlock;
}  // namespace hed_detail

class HedImpl : public torch::nn::Module {
 public:
  HedImpl();
  // x: RGB pixel values 0..255 as float (B, 3, H, W), not normalised (the
  // network subtracts its learned `norm`). Returns the five projections,
  // (B, 1, H / 2^k, W / 2^k) for k = 0..4.
  std::vector<torch::Tensor> forward(const torch::Tensor& x);

 private:
  torch::Tensor norm_;
  std::vector<std::shared_ptr<hed_detail::HedBlock>> blocks_;
};
TORCH_MODULE(Hed);

// The network from the state dict of ControlNetHED.pth (module keys, any
// float dtype). Strict; in eval mode.
Hed load_hed(const io::TensorMap& state_dict, const std::string& what);

// load_hed of an annotator file, read once per path and kept.
Hed hed_from_file(const std::filesystem::path& path, torch::ScalarType dtype = torch::kFloat32);

// The detector's network input: float32(RGB) as (1, 3, H, W).
torch::Tensor hed_input(const cv::Mat& rgb);

// HEDdetector's map from the five projections: each resized to `size` with
// INTER_LINEAR (float32), averaged in float32, sigmoid in float64; `safe`
// applies safe_step; then * 255 truncated to uint8 (gray).
cv::Mat hed_edge_map(const std::vector<torch::Tensor>& projections, cv::Size size, bool safe);

// HEDdetector()(rgb, safe).
cv::Mat hed_detect(Hed& model, const cv::Mat& rgb, bool safe);

}  // namespace cn::preprocess
