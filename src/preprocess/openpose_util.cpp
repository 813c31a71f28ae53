#include "preprocess/openpose_util.h"

#include <array>
#include <cmath>
#include <vector>

#include <opencv2/imgproc.hpp>

namespace cn::preprocess::openpose_detail {

cv::Mat smart_resize(const cv::Mat& x, cv::Size target) {
  CV_Assert(x.channels() == 1 || x.channels() == 3);
  const double k = double(target.height + target.width) / double(x.rows + x.cols);
  cv::Mat out;
  cv::resize(x, out, target, 0, 0, k < 1 ? cv::INTER_AREA : cv::INTER_LANCZOS4);
  return out;
}

cv::Mat smart_resize_k(const cv::Mat& x, double f) {
  CV_Assert(x.channels() == 1 || x.channels() == 3);
  const double height = double(x.rows) * f, width = double(x.cols) * f;
  const double k = (height + width) / double(x.rows + x.cols);
  cv::Mat out;
  cv::resize(x, out, cv::Size(int(width), int(height)), 0, 0, k < 1 ? cv::INTER_AREA : cv::INTER_LANCZOS4);
  return out;
}

cv::Mat pad_right_down(const cv::Mat& x, int stride, int value) {
  const auto pad = [stride](int side) { return side % stride == 0 ? 0 : stride - side % stride; };
  cv::Mat out;
  cv::copyMakeBorder(x, out, 0, pad(x.rows), 0, pad(x.cols), cv::BORDER_CONSTANT, cv::Scalar::all(value));
  return out;
}

torch::Tensor bgr_to_net_input(const cv::Mat& bgr) {
  CV_Assert(bgr.type() == CV_8UC3);
  const cv::Mat continuous = bgr.isContinuous() ? bgr : bgr.clone();
  auto t = torch::from_blob(continuous.data, {continuous.rows, continuous.cols, 3}, torch::kUInt8);
  // float32 throughout, as numpy's float32 array / 256 - 0.5 (both exact steps).
  return (t.to(torch::kFloat32).permute({2, 0, 1}).unsqueeze(0) / 256.0 - 0.5).contiguous();
}

cv::Mat output_channel(const torch::Tensor& output, int64_t channel) {
  auto c = output[0][channel].to(torch::kFloat32).contiguous();
  return cv::Mat(int(c.size(0)), int(c.size(1)), CV_32F, c.data_ptr<float>()).clone();
}

double numpy_sum(const double* values, size_t count) {
  constexpr size_t kBlock = 128;
  if (count < 8) {
    double s = 0.0;
    for (size_t i = 0; i < count; ++i) s += values[i];
    return s;
  }
  if (count <= kBlock) {
    std::array<double, 8> r{};
    for (size_t j = 0; j < 8; ++j) r[j] = values[j];
    size_t i = 8;
    for (; i + 8 <= count; i += 8)
      for (size_t j = 0; j < 8; ++j) r[j] += values[i + j];
    double s = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < count; ++i) s += values[i];
    return s;
  }
  size_t half = count / 2;
  half -= half % 8;
  return numpy_sum(values, half) + numpy_sum(values + half, count - half);
}

cv::Mat gaussian_filter_sigma3(const cv::Mat& x) {
  CV_Assert(x.type() == CV_64F);
  constexpr int kRadius = 12;
  constexpr double kSigma = 3.0;
  std::vector<double> phi;
  for (int i = -kRadius; i <= kRadius; ++i) phi.push_back(std::exp(-0.5 / (kSigma * kSigma) * double(i * i)));
  const double total = numpy_sum(phi.data(), phi.size());
  for (double& p : phi) p /= total;
  const auto reflect = [](int i, int n) {
    // (d c b a | a b c d | d c b a), periodic with 2n.
    const int period = 2 * n;
    i %= period;
    if (i < 0) i += period;
    return i < n ? i : period - 1 - i;
  };
  // scipy's correlate1d with a symmetric kernel: the centre tap, then the
  // mirrored pairs summed before weighting.
  const auto filter_line = [&](const std::vector<double>& line) {
    const int n = int(line.size());
    std::vector<double> out(size_t(n), 0.0);
    for (int i = 0; i < n; ++i) {
      double acc = line[size_t(i)] * phi[kRadius];
      for (int j = 1; j <= kRadius; ++j)
        acc += (line[size_t(reflect(i + j, n))] + line[size_t(reflect(i - j, n))]) * phi[size_t(kRadius + j)];
      out[size_t(i)] = acc;
    }
    return out;
  };
  cv::Mat out = x.clone();
  for (int c = 0; c < out.cols; ++c) {
    std::vector<double> line(size_t(out.rows));
    for (int r = 0; r < out.rows; ++r) line[size_t(r)] = out.at<double>(r, c);
    const auto filtered = filter_line(line);
    for (int r = 0; r < out.rows; ++r) out.at<double>(r, c) = filtered[size_t(r)];
  }
  for (int r = 0; r < out.rows; ++r) {
    std::vector<double> line(out.ptr<double>(r), out.ptr<double>(r) + out.cols);
    const auto filtered = filter_line(line);
    std::copy(filtered.begin(), filtered.end(), out.ptr<double>(r));
  }
  return out;
}

}  // namespace cn::preprocess::openpose_detail
