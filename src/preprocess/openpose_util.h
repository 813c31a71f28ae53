#pragma once
// Numerics shared by the OpenPose body, hand and face decoders of ControlNet
// 1.1's annotator/openpose (its util.py and the numpy/scipy calls they make),
// reproduced operation for operation so that peaks land on the same pixels.
#include <torch/torch.h>

#include <cstddef>

#include <opencv2/core.hpp>

namespace cn::preprocess::openpose_detail {

// util.smart_resize for a 1- or 3-channel Mat: INTER_AREA when the summed
// side shrinks, else Lanczos (the reference resizes other channel counts one
// channel at a time, which callers do themselves).
cv::Mat smart_resize(const cv::Mat& x, cv::Size target);

// util.smart_resize_k: target sides int(side * f) (truncated), the
// interpolation chosen from the untruncated ratio f.
cv::Mat smart_resize_k(const cv::Mat& x, double f);

// util.padRightDownCorner: `value` rows and columns added at the bottom and
// right up to multiples of `stride`.
cv::Mat pad_right_down(const cv::Mat& x, int stride, int value);

// A padded uint8 BGR image as the networks take it: (1, 3, H, W) float32,
// x / 256 - 0.5.
torch::Tensor bgr_to_net_input(const cv::Mat& bgr);

// One channel of a (1, C, h, w) network output as a float32 Mat (a copy).
cv::Mat output_channel(const torch::Tensor& output, int64_t channel);

// numpy's float64 sum of a contiguous array (pairwise: 8 partial sums in
// blocks of 128, halves above), so that sums compare as the reference's do.
double numpy_sum(const double* values, size_t count);

// scipy.ndimage.gaussian_filter(x, sigma=3) on a float64 Mat: truncate 4 ->
// radius 12, mode 'reflect', columns then rows, float64.
cv::Mat gaussian_filter_sigma3(const cv::Mat& x);

}  // namespace cn::preprocess::openpose_detail
