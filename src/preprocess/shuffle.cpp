#include "preprocess/shuffle.h"

#include <opencv2/imgproc.hpp>

#include "preprocess/numpy_random.h"

namespace cn::preprocess {

cv::Mat make_noise_disk(int h, int w, int f, NumpyRandomState& rng) {
  const int rows = h / f + 2, cols = w / f + 2;
  cv::Mat noise(rows, cols, CV_64FC1);
  const auto draws = rng.uniform(0.0, 1.0, size_t(rows) * size_t(cols));
  std::copy(draws.begin(), draws.end(), noise.ptr<double>(0));
  cv::Mat big;
  cv::resize(noise, big, cv::Size(w + 2 * f, h + 2 * f), 0, 0, cv::INTER_CUBIC);
  cv::Mat disk = big(cv::Rect(f, f, w, h)).clone();
  double lo = 0, hi = 0;
  cv::minMaxLoc(disk, &lo);
  disk -= lo;
  cv::minMaxLoc(disk, nullptr, &hi);
  disk /= hi;
  return disk;
}

cv::Mat shuffle_flow(int h, int w, int in_h, int in_w, int f, NumpyRandomState& rng) {
  const cv::Mat x = make_noise_disk(h, w, f, rng) * double(in_w - 1);
  const cv::Mat y = make_noise_disk(h, w, f, rng) * double(in_h - 1);
  cv::Mat flow64, flow;
  cv::merge(std::vector<cv::Mat>{x, y}, flow64);
  flow64.convertTo(flow, CV_32FC2);
  return flow;
}

cv::Mat content_shuffle(const cv::Mat& image, int h, int w, uint32_t seed, int f) {
  NumpyRandomState rng(seed);
  const cv::Mat flow = shuffle_flow(h, w, image.rows, image.cols, f, rng);
  cv::Mat out;
  cv::remap(image, out, flow, cv::noArray(), cv::INTER_LINEAR, cv::BORDER_CONSTANT, cv::Scalar::all(0));
  return out;
}

}  // namespace cn::preprocess
