#include "preprocess/openpose_hand.h"

#include <algorithm>
#include <array>
#include <cmath>

#include <opencv2/imgproc.hpp>

#include "controlnet/error.h"
#include "preprocess/openpose_util.h"

namespace cn::preprocess {
namespace {

using namespace openpose_detail;

constexpr std::array<double, 4> kScales = {0.5, 1.0, 1.5, 2.0};
constexpr double kBoxSize = 368.0;
constexpr int kStride = 8, kPadValue = 128;
constexpr int kKeypoints = 21;
constexpr int kAverageSize = 128;  // the heatmaps are averaged at 128 x 128
constexpr double kThreshold = 0.05;
constexpr double kRatioWristElbow = 0.33;
constexpr double kMinBox = 20.0;

int scaled_side(size_t scale) { return int(kScales[scale] * kBoxSize); }

// skimage.measure.label(connectivity=2): 8-connected components numbered 1..n
// in the raster order of their first pixel; 0 is the background.
int label_components(const cv::Mat& mask, cv::Mat& labels) {
  labels = cv::Mat::zeros(mask.size(), CV_32S);
  int count = 0;
  std::vector<cv::Point> stack;
  for (int r = 0; r < mask.rows; ++r)
    for (int c = 0; c < mask.cols; ++c) {
      if (!mask.at<uchar>(r, c) || labels.at<int>(r, c)) continue;
      ++count;
      labels.at<int>(r, c) = count;
      stack.assign(1, {c, r});
      while (!stack.empty()) {
        const cv::Point p = stack.back();
        stack.pop_back();
        for (int dy = -1; dy <= 1; ++dy)
          for (int dx = -1; dx <= 1; ++dx) {
            const int y = p.y + dy, x = p.x + dx;
            if (y < 0 || x < 0 || y >= mask.rows || x >= mask.cols) continue;
            if (!mask.at<uchar>(y, x) || labels.at<int>(y, x)) continue;
            labels.at<int>(y, x) = count;
            stack.push_back({x, y});
          }
      }
    }
  return count;
}

// One keypoint from its averaged (unsmoothed) map: the smoothed map above the
// threshold, its component with the largest sum of the unsmoothed values, and
// there the first maximum in row-major order (util.npmax over the map zeroed
// elsewhere). (-1, -1) when nothing is above the threshold.
cv::Point keypoint_of(cv::Mat map) {
  const cv::Mat smooth = gaussian_filter_sigma3(map);
  const cv::Mat mask = smooth > kThreshold;
  if (cv::countNonZero(mask) == 0) return {-1, -1};
  cv::Mat labels;
  const int count = label_components(mask, labels);
  // np.sum(map[labels == i]): the component's values in raster order.
  std::vector<std::vector<double>> members(size_t(count) + 1);
  for (int r = 0; r < map.rows; ++r)
    for (int c = 0; c < map.cols; ++c)
      if (const int l = labels.at<int>(r, c)) members[size_t(l)].push_back(map.at<double>(r, c));
  int best = 1;
  double best_sum = 0.0;
  for (int l = 1; l <= count; ++l) {
    const double sum = numpy_sum(members[size_t(l)].data(), members[size_t(l)].size());
    if (l == 1 || sum > best_sum) best = l, best_sum = sum;
  }
  map.setTo(0.0, labels != best);
  cv::Point at{0, 0};
  double max = map.at<double>(0, 0);
  for (int r = 0; r < map.rows; ++r)
    for (int c = 0; c < map.cols; ++c)
      if (map.at<double>(r, c) > max) max = map.at<double>(r, c), at = {c, r};
  return at;
}

}  // namespace

std::vector<HandBox> hand_boxes(const BodyDecoding& body, int height, int width) {
  std::vector<HandBox> boxes;
  for (size_t person = 0; person < body.subset.size(); ++person) {
    const auto& row = body.subset[person];
    // Shoulder, elbow, wrist: parts 5, 6, 7 on the left, 2, 3, 4 on the right.
    for (const bool is_left : {true, false}) {
      const int first = is_left ? 5 : 2;
      std::array<int, 3> index{};
      bool complete = true;
      for (int i = 0; i < 3; ++i) {
        index[size_t(i)] = int(row[size_t(first + i)]);
        complete &= index[size_t(i)] != -1;
      }
      if (!complete) continue;
      const auto& shoulder = body.candidate[size_t(index[0])];
      const auto& elbow = body.candidate[size_t(index[1])];
      const auto& wrist = body.candidate[size_t(index[2])];
      double x = wrist[0] + kRatioWristElbow * (wrist[0] - elbow[0]);
      double y = wrist[1] + kRatioWristElbow * (wrist[1] - elbow[1]);
      const double wrist_elbow = std::sqrt(std::pow(wrist[0] - elbow[0], 2) + std::pow(wrist[1] - elbow[1], 2));
      const double elbow_shoulder =
          std::sqrt(std::pow(elbow[0] - shoulder[0], 2) + std::pow(elbow[1] - shoulder[1], 2));
      double side = 1.5 * std::max(wrist_elbow, 0.9 * elbow_shoulder);
      x -= side / 2;
      y -= side / 2;
      if (x < 0) x = 0;
      if (y < 0) y = 0;
      double side_x = side, side_y = side;
      if (x + side > width) side_x = width - x;
      if (y + side > height) side_y = height - y;
      side = std::min(side_x, side_y);
      if (side >= kMinBox) boxes.push_back({int(x), int(y), int(side), is_left, person});
    }
  }
  return boxes;
}

std::vector<torch::Tensor> hand_net_inputs(const cv::Mat& crop_bgr) {
  cv::Mat blurred;
  // The crop is an image of its own: its border is reflected, not read from
  // around it.
  cv::GaussianBlur(crop_bgr.clone(), blurred, cv::Size(0, 0), 0.8);
  std::vector<torch::Tensor> inputs;
  for (size_t s = 0; s < kScales.size(); ++s) {
    const int side = scaled_side(s);
    inputs.push_back(bgr_to_net_input(pad_right_down(smart_resize(blurred, {side, side}), kStride, kPadValue)));
  }
  return inputs;
}

std::vector<cv::Point> decode_hand(const std::vector<torch::Tensor>& outputs, cv::Size crop) {
  if (outputs.size() != kScales.size()) throw Error("the hand decoder needs the outputs of the 4 scales");
  std::vector<cv::Mat> average(kKeypoints);
  for (auto& m : average) m = cv::Mat::zeros(kAverageSize, kAverageSize, CV_64F);
  for (size_t s = 0; s < kScales.size(); ++s) {
    const int side = scaled_side(s);
    if (outputs[s].dim() != 4 || outputs[s].size(1) <= kKeypoints || outputs[s].size(2) * kStride < side ||
        outputs[s].size(3) * kStride < side)
      throw Error("hand network output of scale " + std::to_string(s) + " has an unexpected shape");
    for (int part = 0; part < kKeypoints; ++part) {
      const cv::Mat full = smart_resize_k(output_channel(outputs[s], part), kStride)(cv::Rect(0, 0, side, side));
      const cv::Mat small = smart_resize(full.clone(), {kAverageSize, kAverageSize});
      // heatmap / 4 in float32, accumulated in float64.
      cv::Mat quarter = small / float(kScales.size());
      cv::Mat as_double;
      quarter.convertTo(as_double, CV_64F);
      average[size_t(part)] += as_double;
    }
  }
  std::vector<cv::Point> peaks;
  for (int part = 0; part < kKeypoints; ++part) {
    const cv::Point at = keypoint_of(average[size_t(part)]);
    if (at.x < 0) {
      peaks.push_back({0, 0});
      continue;
    }
    peaks.push_back({int(double(at.x) * double(crop.width) / double(kAverageSize)),
                     int(double(at.y) * double(crop.height) / double(kAverageSize))});
  }
  return peaks;
}

std::vector<cv::Point> detect_hand(const cv::Mat& crop_bgr,
                                   const std::function<torch::Tensor(const torch::Tensor&)>& net) {
  std::vector<torch::Tensor> outputs;
  for (const auto& input : hand_net_inputs(crop_bgr)) outputs.push_back(net(input));
  return decode_hand(outputs, crop_bgr.size());
}

}  // namespace cn::preprocess
