#pragma once
// ADE20K semantic segmentation as the ControlNet annotator computes it
// (annotator/uniformer, upernet_global_small.pth of lllyasviel/Annotators):
// a UniFormer-S backbone (Li et al. 2022) under an UperNet head, run by
// mmseg's EncoderDecoder in 'whole' mode, 150 ADE20K classes, coloured with
// the ADE20K palette (ade20k.h).
//
// Why this network and not OneFormer: it is what ControlNet 1.0's seg model
// was trained on, and 1.1 keeps it as "seg_ufade20k"; it is one checkpoint
// and the smaller network (convolutions in stages 1-2, global self-attention
// in stages 3-4, an FPN head). 1.1's default, OneFormer, needs a Swin or
// DiNAT backbone, a pixel decoder with deformable attention and a
// transformer decoder with text queries: far more to port for the same map.
//
// Module names follow the mmcv checkpoint's state_dict (backbone.*,
// decode_head.*). The checkpoint also holds the auxiliary FCN head
// (auxiliary_head.*), a training loss only: its tensors are skipped by name.
#include <torch/torch.h>

#include <filesystem>
#include <memory>
#include <opencv2/core.hpp>
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace cn::preprocess {

namespace uniformer_detail {
class UniFormerSmall;
class UperHead;

// The SABlocks' global multi-head self-attention on tokens (B, N, C): qkv
// split as (3, heads, C / heads) per token, softmax(q k^T * d^-0.5) v per
// head (nn::attention), heads concatenated back in order, then proj. Exposed
// for tests.
torch::Tensor self_attention(const torch::Tensor& tokens, torch::nn::Linear& qkv, torch::nn::Linear& proj,
                             int64_t heads);
}  // namespace uniformer_detail

// UniFormer-S (embed 64/128/320/512, 3/4/8/3 blocks, heads of 64 channels,
// MLP ratio 4, qkv bias, global attention: windows=False, hybrid=False) and
// the UperHead (512 channels, pool scales 1/2/3/6, 150 classes).
class UniformerSegmenterImpl : public torch::nn::Module {
 public:
  UniformerSegmenterImpl();
  // x: the normalised image (B, 3, H, W) (uniformer_input); returns the
  // class logits at a quarter of the size (B, 150, H/4, W/4, floored).
  torch::Tensor forward(const torch::Tensor& x);

 private:
  std::shared_ptr<uniformer_detail::UniFormerSmall> backbone_;
  std::shared_ptr<uniformer_detail::UperHead> decode_head_;
};
TORCH_MODULE(UniformerSegmenter);

// The auxiliary FCN head's tensors in the official checkpoint (full names),
// which the loader accepts and drops.
const std::vector<std::string>& uniformer_auxiliary_head_keys();

// The network from the checkpoint's state dict (mmcv's load_checkpoint also
// drops a leading "module."). Strict: a missing, unexpected or misshapen
// tensor is an error naming it. Eval mode.
UniformerSegmenter load_uniformer(const io::TensorMap& state_dict, const std::string& what);
// load_uniformer of an annotator file ({'meta': ..., 'state_dict': ...}),
// read once per path and dtype and kept.
UniformerSegmenter uniformer_from_file(const std::filesystem::path& path, torch::ScalarType dtype = torch::kFloat32);

// mmseg's test-time Resize(img_scale=(2048, 512), keep_ratio=True): the
// largest scale at which the long side fits 2048 and the short side 512
// (upscaling included), each side int(side * scale + 0.5). Returns (w, h).
// So the network sees a short side of 512 whatever the detect resolution,
// unless the image is longer than 4:1.
cv::Size uniformer_network_size(cv::Size image);

// The network's input for an image as the annotator passes it: resized to
// uniformer_network_size (OpenCV bilinear), then mmseg's Normalize(to_rgb).
// The annotator hands mmseg an RGB array where it expects BGR, so to_rgb
// swaps it: the network sees (B, G, R), each normalised with the ImageNet
// mean and std meant for (R, G, B): (x - mean) * (1 / std) in float32.
// (1, 3, h, w).
torch::Tensor uniformer_input(const cv::Mat& rgb);

// The label map of the logits (1, 150, h', w'), as EncoderDecoder's
// whole_inference and simple_test: bilinear (align_corners=False) to
// `network_size`, then to `size`, softmax over the classes, argmax (the first
// of equal maxima). CV_8UC1 of `size`.
cv::Mat uniformer_labels(const torch::Tensor& logits, cv::Size network_size, cv::Size size);

// UniformerDetector: the ADE20K palette colours of rgb's labels (RGB, rgb's size).
cv::Mat uniformer_detect(UniformerSegmenter& model, const cv::Mat& rgb);

}  // namespace cn::preprocess
