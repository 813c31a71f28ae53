#pragma once
// M-LSD line decoding and drawing (ControlNet 1.1 annotator/mlsd): from the
// network's tp map to line segments and the white-on-black line map.
#include <torch/torch.h>

#include <array>
#include <vector>

#include <opencv2/core.hpp>

namespace cn::preprocess {

// One segment [x_start, y_start, x_end, y_end] in input-image pixels.
using MlsdLine = std::array<double, 4>;

// The annotator's pred_lines decoding of a (1, >=5, h, w) tp map: centre score
// sigmoid(ch0) kept where it equals its 3x3 max (ties all survive), the 200
// best centres, a centre kept when score > score_threshold and
// |start - end| > distance_threshold (float32 map pixels), coordinates
// 2 * (centre + displacement) scaled by the image/input ratios (1 here: the
// detector feeds the image at its own size). Lines are in top-k order.
std::vector<MlsdLine> mlsd_decode_lines(const torch::Tensor& tpmap, double score_threshold,
                                        double distance_threshold);

// The detector's map: every line drawn 1 px wide (8-connected) in 255 on a black
// height x width gray image, endpoints truncated toward zero.
cv::Mat mlsd_draw_lines(const std::vector<MlsdLine>& lines, int height, int width);

}  // namespace cn::preprocess
