#pragma once
// Helpers of the soft-edge annotators (ControlNet 1.1 annotator/util.py and the
// scribble demo), with the reference's exact numerics: non-maximum suppression
// of soft edge maps, the "safe" quantisation of edge strengths, the uint8
// conversion of a [0, 1] map and the demo's "fake scribble" chain.
#include <opencv2/core.hpp>

namespace cn::preprocess {

// annotator.util.nms: float32 Gaussian blur (sigma, OpenCV's default
// reflect-101 border), then a pixel is kept when it equals the maximum of its
// 3x3 neighbourhood along at least one of the four line directions
// (horizontal, vertical, both diagonals; outside pixels never win); kept
// values above `threshold` become 255, everything else 0. uint8 maps with any
// number of channels, processed per channel.
cv::Mat nms(const cv::Mat& soft_edge, double threshold, double sigma);

// annotator.util.safe_step: float32(x) * (step + 1), truncated toward zero,
// divided by step - a few coarse levels, so that a ControlNet cannot read
// hidden information from faint edge strengths. x is CV_32F or CV_64F (any
// channels); the result is CV_32F, as numpy computes it.
cv::Mat safe_step(const cv::Mat& x, int step = 2);

// (x * 255).clip(0, 255).astype(uint8) in x's own precision (CV_32F or
// CV_64F): truncation, as numpy casts.
cv::Mat unit_to_u8(const cv::Mat& x);

// The 1.1 scribble demo's fake scribble from a detector's soft edge map:
// HWC3, INTER_LINEAR resize to `size`, nms(127, 3.0), uint8 Gaussian blur
// (sigma 3, OpenCV's fixed-point path), then > 4 -> 255, else 0. Every stage
// is kept (each is compared with the reference).
struct FakeScribble {
  cv::Mat resized, suppressed, blurred, map;  // uint8, 3 channels
};
FakeScribble fake_scribble(const cv::Mat& soft_edge, cv::Size size);

}  // namespace cn::preprocess
