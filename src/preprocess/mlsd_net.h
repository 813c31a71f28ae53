#pragma once
// The M-LSD line detector network of the ControlNet 1.1 annotator
// (MobileV2_MLSD_Large, mlsd_large_512_fp32.pth) and the MLSDdetector built on
// it: a MobileNetV2 backbone cut after its 96-channel stage (ReLU6, stride-2
// convs padded TF-style on the right and bottom only), an FPN-like decoder of
// "A" (1x1 lateral merges with bilinear x2), "B" (3x3 refinement with a
// residual) and "C" (dilated 3x3, 3x3, 1x1 head) blocks. Module names follow
// the file (backbone.features.3.conv.1.0.weight, block23.conv3.bias, ...).
#include <torch/torch.h>

#include <filesystem>
#include <memory>
#include <opencv2/core.hpp>
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace cn::preprocess {

namespace mlsd_detail {
class MobileNetV2Features;
class LateralMerge;
class Refine;
class Head;
}  // namespace mlsd_detail

class MlsdLargeImpl : public torch::nn::Module {
 public:
  MlsdLargeImpl();
  // x: (B, 4, H, W) = [R, G, B, 1] / 127.5 - 1 with H, W multiples of 32.
  // Returns the tp map (B, 9, H/2, W/2): ch0 centre logit, ch1..4 the
  // displacements (x_start, y_start, x_end, y_end) in map pixels, ch5..8 the
  // line map outputs the detector does not use.
  torch::Tensor forward(const torch::Tensor& x);

 private:
  std::shared_ptr<mlsd_detail::MobileNetV2Features> backbone_;
  std::vector<std::shared_ptr<mlsd_detail::LateralMerge>> merges_;  // block15, 17, 19, 21
  std::vector<std::shared_ptr<mlsd_detail::Refine>> refines_;       // block16, 18, 20, 22
  std::shared_ptr<mlsd_detail::Head> head_;                         // block23
};
TORCH_MODULE(MlsdLarge);

// The network from mlsd_large_512_fp32.pth's state dict (module keys, BN
// num_batches_tracked included; any float dtype). Strict; in eval mode.
MlsdLarge load_mlsd(const io::TensorMap& state_dict, const std::string& what);

// load_mlsd of an annotator file, read once per path and kept.
MlsdLarge mlsd_from_file(const std::filesystem::path& path, torch::ScalarType dtype = torch::kFloat32);

// pred_lines' network input for an RGB uint8 image fed at its own size:
// float32 [R, G, B, 1] / 127.5 - 1 as (1, 4, H, W), rounded as numpy does.
torch::Tensor mlsd_input(const cv::Mat& rgb);

// MLSDdetector()(rgb, score_threshold, distance_threshold): the lines decoded
// from the network's tp map, drawn 1 px white on black (gray, size of rgb).
cv::Mat mlsd_detect(MlsdLarge& model, const cv::Mat& rgb, double score_threshold, double distance_threshold);

}  // namespace cn::preprocess
