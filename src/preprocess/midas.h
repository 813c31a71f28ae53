#pragma once
// MiDaS v3 DPT-Hybrid depth (the ControlNet annotators' MidasDetector) and the
// maps made from its raw depth: the 1.1 depth map and the 1.0 normal map.
//
// The network is DPTDepthModel with the timm vit_base_resnet50_384 backbone:
// a BiT ResNet-v2 (weight-standardised convs with TF "SAME" padding,
// GroupNorm) whose stride-16 features are the ViT-B/16 tokens, four feature
// maps taken at ResNet stages 0 and 1 and ViT blocks 8 and 11, reassembled and
// fused by RefineNet-style blocks, and a conv head ending in a ReLU. Module
// names follow the official checkpoint (dpt_hybrid-midas-501f0c75.pt).
#include <torch/torch.h>

#include <opencv2/core.hpp>
#include <filesystem>
#include <memory>
#include <string>

#include "io/safetensors.h"

namespace cn::preprocess {

namespace midas_detail {
class HybridVit;
class ReadoutReassemble;
class DptScratch;
}  // namespace midas_detail

class DptHybridImpl : public torch::nn::Module {
 public:
  DptHybridImpl();
  // x: (B, 3, H, W), H and W multiples of 32; returns the depth (B, H, W).
  torch::Tensor forward(const torch::Tensor& x);

 private:
  std::shared_ptr<midas_detail::HybridVit> vit_;
  std::shared_ptr<midas_detail::ReadoutReassemble> postprocess3_, postprocess4_;
  std::shared_ptr<midas_detail::DptScratch> scratch_;
};
TORCH_MODULE(DptHybrid);

// The model from the tensors of a checkpoint: the plain state dict of the
// official file (its unused ImageNet classifier pretrained.model.head.* is
// accepted) or, as MiDaS' BaseModel.load takes it, {'model': sd, 'optimizer':
// ...}. Strict otherwise; `what` names the source in errors. In eval mode.
DptHybrid load_dpt_hybrid(const io::TensorMap& checkpoint, const std::string& what);

// load_dpt_hybrid of an annotator checkpoint file (.pt/.pth or .safetensors),
// read once per path and kept for the life of the process (detectors run it
// for every image).
DptHybrid dpt_hybrid_from_file(const std::filesystem::path& path, torch::ScalarType dtype = torch::kFloat32);

// The detector's input: RGB uint8 (H, W, 3) -> RGB / 127.5 - 1 as (1, 3, H, W)
// float32, at the detect resolution (no 384 resize, no ImageNet normalisation).
torch::Tensor midas_input(const cv::Mat& rgb);

// model(midas_input(rgb))[0]: the raw depth (H, W), float32.
torch::Tensor midas_raw_depth(DptHybrid& model, const cv::Mat& rgb);

// ControlNet 1.1 depth map: (d - min) / max(d - min) * 255, truncated to uint8 gray.
cv::Mat midas_depth_map(const torch::Tensor& raw_depth);

// ControlNet 1.0 normal map (RGB = x, y, z): x, y = Sobel of the raw depth,
// zeroed where the normalised depth is below bg_th, z = a, the vector
// normalised, * 127.5 + 127.5 truncated - all in float32 as numpy computes it.
cv::Mat midas_normal_map_v10(const torch::Tensor& raw_depth, double a, double bg_th);

}  // namespace cn::preprocess
