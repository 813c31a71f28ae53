#include "preprocess/edges.h"

#include <algorithm>
#include <opencv2/imgproc.hpp>

#include "controlnet/error.h"
#include "preprocess/preprocess.h"

namespace cn::preprocess {

cv::Mat nms(const cv::Mat& soft_edge, double threshold, double sigma) {
  if (soft_edge.depth() != CV_8U) throw Error("nms expects a uint8 soft edge map");
  cv::Mat blurred;
  soft_edge.convertTo(blurred, CV_32F);
  cv::GaussianBlur(blurred, blurred, cv::Size(0, 0), sigma);

  const cv::Mat lines[] = {
      (cv::Mat_<uint8_t>(3, 3) << 0, 0, 0, 1, 1, 1, 0, 0, 0),
      (cv::Mat_<uint8_t>(3, 3) << 0, 1, 0, 0, 1, 0, 0, 1, 0),
      (cv::Mat_<uint8_t>(3, 3) << 1, 0, 0, 0, 1, 0, 0, 0, 1),
      (cv::Mat_<uint8_t>(3, 3) << 0, 0, 1, 0, 1, 0, 1, 0, 0),
  };
  cv::Mat kept = cv::Mat::zeros(blurred.size(), blurred.type());
  for (const auto& line : lines) {
    cv::Mat line_max, is_max;
    cv::dilate(blurred, line_max, line);  // default border: outside never wins
    cv::compare(line_max, blurred, is_max, cv::CMP_EQ);
    blurred.copyTo(kept, is_max);
  }
  // numpy compares a float32 array with a Python number in float32.
  cv::Mat out;
  cv::compare(kept.reshape(1), double(float(threshold)), out, cv::CMP_GT);
  return out.reshape(soft_edge.channels());
}

cv::Mat safe_step(const cv::Mat& x, int step) {
  if (x.depth() != CV_32F && x.depth() != CV_64F) throw Error("safe_step expects a float map");
  cv::Mat y;
  x.convertTo(y, CV_32F);
  const float levels = float(step + 1), divisor = float(step);
  y.forEach<float>([&](float& v, const int*) {
    const float scaled = v * levels;
    v = float(int32_t(scaled)) / divisor;
  });
  return y;
}

namespace {
template <typename T>
cv::Mat unit_to_u8_as(const cv::Mat& x) {
  cv::Mat out(x.size(), CV_MAKETYPE(CV_8U, x.channels()));
  const cv::Mat values = x.reshape(1);
  cv::Mat bytes = out.reshape(1);
  for (int r = 0; r < values.rows; ++r) {
    const T* in = values.ptr<T>(r);
    uint8_t* o = bytes.ptr<uint8_t>(r);
    for (int c = 0; c < values.cols; ++c) {
      const T scaled = in[c] * T(255);
      o[c] = uint8_t(std::clamp(scaled, T(0), T(255)));
    }
  }
  return out;
}
}  // namespace

cv::Mat unit_to_u8(const cv::Mat& x) {
  if (x.depth() == CV_32F) return unit_to_u8_as<float>(x);
  if (x.depth() == CV_64F) return unit_to_u8_as<double>(x);
  throw Error("unit_to_u8 expects a float map");
}

FakeScribble fake_scribble(const cv::Mat& soft_edge, cv::Size size) {
  FakeScribble s;
  cv::resize(hwc3(soft_edge), s.resized, size, 0, 0, cv::INTER_LINEAR);
  s.suppressed = nms(s.resized, 127, 3.0);
  cv::GaussianBlur(s.suppressed, s.blurred, cv::Size(0, 0), 3.0);
  cv::compare(s.blurred.reshape(1), 4, s.map, cv::CMP_GT);
  s.map = s.map.reshape(s.blurred.channels());
  return s;
}

}  // namespace cn::preprocess
