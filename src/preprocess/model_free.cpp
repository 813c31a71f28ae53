#include "preprocess/model_free.h"

#include <algorithm>
#include <cmath>
#include <opencv2/imgproc.hpp>
#include <vector>

#include "controlnet/error.h"

namespace cn::preprocess {

namespace {

void require_rgb(const cv::Mat& rgb, const char* what) {
  if (rgb.type() != CV_8UC3) throw Error(std::string(what) + " expects an 8-bit RGB image");
}

// The per-pixel minimum over the channels of a multi-channel matrix.
cv::Mat channel_min(const cv::Mat& m) {
  std::vector<cv::Mat> channels;
  cv::split(m, channels);
  cv::Mat out = channels[0];
  for (size_t c = 1; c < channels.size(); ++c) out = cv::min(out, channels[c]);
  return out;
}

// A gray 0/255 mask as 3 equal channels (the references index a 3-channel
// result with a 2-D mask).
cv::Mat mask_to_rgb(const cv::Mat& mask) {
  cv::Mat out;
  cv::cvtColor(mask, out, cv::COLOR_GRAY2RGB);
  return out;
}

// np.median of float32 values: the middle one, or the float32 sum of the two
// middle ones halved.
float median_f32(std::vector<float> values) {
  const size_t n = values.size();
  const auto upper = values.begin() + n / 2;
  std::nth_element(values.begin(), upper, values.end());
  if (n % 2) return *upper;
  const float lower = *std::max_element(values.begin(), upper);
  const volatile float sum = lower + *upper;  // rounded to float32 before halving
  return sum / 2.0f;
}

}  // namespace

cv::Mat threshold_map(const cv::Mat& rgb, double threshold) {
  require_rgb(rgb, "threshold");
  cv::Mat above;
  cv::compare(channel_min(rgb), threshold, above, cv::CMP_GT);
  return mask_to_rgb(above);
}

cv::Mat binary_map(const cv::Mat& rgb, double threshold) {
  require_rgb(rgb, "binary");
  cv::Mat gray, out;
  cv::cvtColor(rgb, gray, cv::COLOR_RGB2GRAY);
  if (threshold == 0 || threshold == 255) cv::threshold(gray, out, 0, 255, cv::THRESH_BINARY_INV | cv::THRESH_OTSU);
  else cv::threshold(gray, out, threshold, 255, cv::THRESH_BINARY_INV);
  return out;
}

cv::Mat lineart_standard(const cv::Mat& rgb, double sigma, double intensity_threshold) {
  require_rgb(rgb, "lineart_standard");
  cv::Mat x, blurred;
  rgb.convertTo(x, CV_32F);
  cv::GaussianBlur(x, blurred, cv::Size(0, 0), sigma);
  cv::Mat intensity = channel_min(blurred - x);
  intensity = cv::min(cv::max(intensity, 0.0), 255.0);

  // numpy compares the float32 values with the threshold in float32.
  const float strong_above = float(intensity_threshold);
  std::vector<float> strong;
  for (int y = 0; y < intensity.rows; ++y) {
    const float* row = intensity.ptr<float>(y);
    for (int i = 0; i < intensity.cols; ++i)
      if (row[i] > strong_above) strong.push_back(row[i]);
  }
  // Python's max(16, nan) is 16: no strong pixel leaves the scale at 16.
  const float scale = strong.empty() ? 16.0f : std::max(16.0f, median_f32(std::move(strong)));

  cv::Mat out(intensity.size(), CV_8U);
  for (int y = 0; y < intensity.rows; ++y) {
    const float* in = intensity.ptr<float>(y);
    uint8_t* o = out.ptr<uint8_t>(y);
    for (int i = 0; i < intensity.cols; ++i) {
      const volatile float scaled = in[i] / scale;  // two float32 roundings, as numpy's /= then *=
      const float v = std::clamp(scaled * 127.0f, 0.0f, 255.0f);
      o[i] = uint8_t(v);
    }
  }
  return out;
}

cv::Mat scribble_xdog(const cv::Mat& rgb, double threshold) {
  require_rgb(rgb, "scribble_xdog");
  cv::Mat x, fine, coarse;
  rgb.convertTo(x, CV_32F);
  cv::GaussianBlur(x, fine, cv::Size(0, 0), 0.5);
  cv::GaussianBlur(x, coarse, cv::Size(0, 0), 5.0);
  const cv::Mat dog_min = channel_min(coarse - fine);
  cv::Mat mask = cv::Mat::zeros(rgb.size(), CV_8U);
  for (int y = 0; y < rgb.rows; ++y) {
    const float* d = dog_min.ptr<float>(y);
    uint8_t* m = mask.ptr<uint8_t>(y);
    for (int i = 0; i < rgb.cols; ++i) {
      const auto dog = uint8_t(std::clamp(255.0f - d[i], 0.0f, 255.0f));
      const auto doubled = uint8_t(2 * uint8_t(255 - dog));  // numpy's uint8 arithmetic wraps
      if (doubled > threshold) m[i] = 255;
    }
  }
  return mask_to_rgb(mask);
}

cv::Mat tile_resample(const cv::Mat& rgb, double rate) {
  require_rgb(rgb, "tile_resample");
  if (rate < 1.1) return rgb.clone();
  const int h = int(double(rgb.rows) / rate), w = int(double(rgb.cols) / rate);
  if (h < 1 || w < 1) throw Error("tile_resample: down-sampling rate too large for a " + std::to_string(rgb.cols) +
                                  "x" + std::to_string(rgb.rows) + " image");
  cv::Mat out;
  cv::resize(rgb, out, {w, h}, 0, 0, cv::INTER_AREA);
  return out;
}

}  // namespace cn::preprocess
