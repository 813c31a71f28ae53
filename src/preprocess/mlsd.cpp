#include "preprocess/mlsd.h"

#include <cmath>
#include <stdexcept>

#include <opencv2/imgproc.hpp>

namespace cn::preprocess {

namespace F = torch::nn::functional;

std::vector<MlsdLine> mlsd_decode_lines(const torch::Tensor& tpmap, double score_threshold,
                                        double distance_threshold) {
  if (tpmap.dim() != 4 || tpmap.size(0) != 1 || tpmap.size(1) < 5)
    throw std::invalid_argument("M-LSD: the tp map must be (1, >=5, h, w)");
  const auto map = tpmap.to(torch::kFloat32).contiguous();
  const int64_t w = map.size(3);
  const auto heat = torch::sigmoid(map.slice(1, 0, 1));
  const auto pooled = F::max_pool2d(heat, F::MaxPool2dFuncOptions(3).stride(1).padding(1));
  const auto kept = (heat * (pooled == heat).to(torch::kFloat32)).reshape({-1});
  const auto top = torch::topk(kept, std::min<int64_t>(200, kept.numel()));
  const auto scores = std::get<0>(top).contiguous();
  const auto indices = std::get<1>(top).contiguous();
  // (h, w, 4) displacements, float32 as the annotator's numpy copy.
  const auto displacement = map[0].slice(0, 1, 5).permute({1, 2, 0}).contiguous();
  const auto disp = displacement.accessor<float, 3>();

  std::vector<MlsdLine> lines;
  for (int64_t k = 0; k < scores.numel(); ++k) {
    const int64_t index = indices[k].item<int64_t>();
    const int64_t y = index / w, x = index % w;
    const float dx0 = disp[y][x][0], dy0 = disp[y][x][1], dx1 = disp[y][x][2], dy1 = disp[y][x][3];
    // numpy computes the distance in float32; the comparisons promote to double.
    const float sx = dx0 - dx1, sy = dy0 - dy1;
    const float distance = std::sqrt(sx * sx + sy * sy);
    const double score = scores[k].item<float>();
    if (!(score > score_threshold && double(distance) > distance_threshold)) continue;
    lines.push_back({2.0 * (double(x) + double(dx0)), 2.0 * (double(y) + double(dy0)),
                     2.0 * (double(x) + double(dx1)), 2.0 * (double(y) + double(dy1))});
  }
  return lines;
}

cv::Mat mlsd_draw_lines(const std::vector<MlsdLine>& lines, int height, int width) {
  cv::Mat map = cv::Mat::zeros(height, width, CV_8UC1);
  for (const auto& line : lines) {
    // Python int(): truncation toward zero (endpoints may lie outside the image).
    const cv::Point start(int(std::trunc(line[0])), int(std::trunc(line[1])));
    const cv::Point end(int(std::trunc(line[2])), int(std::trunc(line[3])));
    cv::line(map, start, end, cv::Scalar(255), 1, cv::LINE_8);
  }
  return map;
}

}  // namespace cn::preprocess
