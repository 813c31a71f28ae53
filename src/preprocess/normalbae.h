#pragma once
// Normal-BAE (Bae et al. 2021, "Estimating and exploiting the aleatoric
// uncertainty in surface normal estimation"), the ControlNet 1.1 normalbae
// annotator: NNET = geffnet tf_efficientnet_b5_ap encoder + the BN decoder
// whose 1/8-resolution prediction is refined at 1/4, 1/2 and full resolution
// by per-pixel MLPs. Module names follow the official scannet.pt.
#include <torch/torch.h>

#include <array>
#include <filesystem>
#include <memory>
#include <opencv2/core.hpp>
#include <string>

#include "io/safetensors.h"

namespace cn::preprocess {

namespace normalbae_detail {
class EfficientNetB5;
class NormalDecoder;
}  // namespace normalbae_detail

// The decoder's predictions, each unit-normalised xyz + kappa (B, 4, h, w).
struct NormalBaeOutputs {
  torch::Tensor res8, res4, res2, res1;
};

class NormalBaeImpl : public torch::nn::Module {
 public:
  NormalBaeImpl();
  // x: ImageNet-normalised RGB (B, 3, H, W), H and W multiples of 32.
  NormalBaeOutputs forward(const torch::Tensor& x);

 private:
  std::shared_ptr<normalbae_detail::EfficientNetB5> encoder_;
  std::shared_ptr<normalbae_detail::NormalDecoder> decoder_;
};
TORCH_MODULE(NormalBae);

// The model from a checkpoint's tensors: {'model': sd} flattened ("model."
// names) or the bare state dict, with or without DataParallel's "module.",
// as the annotator's load_checkpoint accepts. Strict; in eval mode.
NormalBae load_normal_bae(const io::TensorMap& checkpoint, const std::string& what);

// load_normal_bae of an annotator file, read once per path and kept.
NormalBae normal_bae_from_file(const std::filesystem::path& path, torch::ScalarType dtype = torch::kFloat32);

// The detector's input: RGB / 255 normalised with the ImageNet mean and std, (1, 3, H, W).
torch::Tensor normal_bae_input(const cv::Mat& rgb);

// The annotator's map of the full-resolution normals (B=1, 3 or 4 channels,
// H, W): ((n + 1) * 0.5).clip(0, 1) * 255 truncated, RGB = xyz.
cv::Mat normal_bae_map(const torch::Tensor& normals);

// NormalBaeDetector: the map of the network's full-resolution prediction.
cv::Mat normal_bae_detect(NormalBae& model, const cv::Mat& rgb);

}  // namespace cn::preprocess
