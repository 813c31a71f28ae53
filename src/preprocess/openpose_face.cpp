#include "preprocess/openpose_face.h"

#include <algorithm>
#include <cmath>

#include "controlnet/error.h"
#include "preprocess/openpose_util.h"

namespace cn::preprocess {
namespace {

constexpr int kInputSide = 384;
constexpr float kThreshold = 0.05f;
constexpr double kMinBox = 20.0;
constexpr int kNose = 0;
// Eyes (factor 3) and ears (factor 1.5): parts 14, 15, 16, 17.
constexpr std::array<std::pair<int, double>, 4> kHeadParts = {{{14, 3.0}, {15, 3.0}, {16, 1.5}, {17, 1.5}}};

}  // namespace

std::vector<FaceBox> face_boxes(const BodyDecoding& body, int height, int width) {
  std::vector<FaceBox> boxes;
  for (size_t person = 0; person < body.subset.size(); ++person) {
    const auto& row = body.subset[person];
    const int nose = int(row[kNose]);
    if (nose <= -1) continue;
    if (std::none_of(kHeadParts.begin(), kHeadParts.end(), [&](const auto& p) { return int(row[size_t(p.first)]) > -1; }))
      continue;
    const double x0 = body.candidate[size_t(nose)][0], y0 = body.candidate[size_t(nose)][1];
    double half = 0.0;
    for (const auto& [part, factor] : kHeadParts) {
      const int index = int(row[size_t(part)]);
      if (index <= -1) continue;
      const double x1 = body.candidate[size_t(index)][0], y1 = body.candidate[size_t(index)][1];
      half = std::max(half, std::max(std::abs(x0 - x1), std::abs(y0 - y1)) * factor);
    }
    double x = x0 - half, y = y0 - half;
    if (x < 0) x = 0;
    if (y < 0) y = 0;
    double side_x = half * 2, side_y = half * 2;
    if (x + half > width) side_x = width - x;
    if (y + half > height) side_y = height - y;
    const double side = std::min(side_x, side_y);
    if (side >= kMinBox) boxes.push_back({int(x), int(y), int(side), person});
  }
  return boxes;
}

torch::Tensor face_net_input(const cv::Mat& crop_bgr) {
  return openpose_detail::bgr_to_net_input(openpose_detail::smart_resize(crop_bgr, {kInputSide, kInputSide}));
}

std::vector<cv::Point> decode_face(const torch::Tensor& last_stage, cv::Size crop) {
  if (last_stage.dim() != 4 || last_stage.size(0) != 1) throw Error("face network output must be (1, C, h, w)");
  namespace F = torch::nn::functional;
  const auto maps = F::interpolate(last_stage.to(torch::kFloat32),
                                   F::InterpolateFuncOptions()
                                       .size(std::vector<int64_t>{crop.height, crop.width})
                                       .mode(torch::kBilinear)
                                       .align_corners(true))[0]
                        .contiguous();
  std::vector<cv::Point> peaks;
  const float* data = maps.data_ptr<float>();
  const int64_t plane = int64_t(crop.height) * crop.width;
  for (int64_t channel = 0; channel < maps.size(0); ++channel) {
    const float* map = data + channel * plane;
    int64_t best = -1;
    for (int64_t i = 0; i < plane; ++i)
      if (map[i] > kThreshold && (best < 0 || map[i] > map[best])) best = i;
    if (best >= 0) peaks.push_back({int(best % crop.width), int(best / crop.width)});
  }
  return peaks;
}

std::vector<cv::Point> detect_face(const cv::Mat& crop_bgr,
                                   const std::function<torch::Tensor(const torch::Tensor&)>& net) {
  return decode_face(net(face_net_input(crop_bgr)), crop_bgr.size());
}

}  // namespace cn::preprocess
