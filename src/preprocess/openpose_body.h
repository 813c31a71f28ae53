#pragma once
// The body decoder of ControlNet 1.1's annotator/openpose (Body.__call__ after
// the network): the network's stage-6 maps back to image size, heatmap peaks,
// part-affinity scoring of limb candidates and assembly into persons, with
// the reference's float64 numerics (scipy Gaussian, np.linspace samples,
// Python's half-to-even round).
#include <torch/torch.h>

#include <array>
#include <vector>

#include <opencv2/core.hpp>

namespace cn::preprocess {

// Body.__call__'s result in pixels of the image: candidate rows are
// (x, y, score, id), subset rows are 18 candidate indices (-1 absent), the
// total score and the part count.
struct BodyDecoding {
  std::vector<std::array<double, 4>> candidate;
  std::vector<std::vector<double>> subset;
};

// The side of the body network's input (one scale, 0.5 * 368 / H) before its
// padding to a multiple of 8: what the decoder crops the maps back to.
cv::Size body_net_unpadded_size(int height, int width);

// The body network's input for a uint8 BGR image: resized by 0.5 * 368 / H
// (util.smart_resize_k), padded right/bottom with 128 to multiples of 8,
// as (1, 3, Hp, Wp) float32 x / 256 - 0.5.
torch::Tensor body_net_input(const cv::Mat& bgr);

// Decodes the network outputs for an image of height x width: `pafs`
// (1, 38, h, w) and `heatmaps` (1, 19, h, w) at 1/8 of the padded input.
BodyDecoding decode_body(const torch::Tensor& pafs, const torch::Tensor& heatmaps, int height, int width);

}  // namespace cn::preprocess
