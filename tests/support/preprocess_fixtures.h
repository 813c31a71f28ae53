#pragma once
// Helpers shared by the preprocessor tests: the golden/preprocess case folders,
// their manifests and PNGs as the annotators produced them.
#include <filesystem>
#include <algorithm>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "support/golden.h"

namespace cn::testing {

inline std::filesystem::path preprocess_case_dir(const std::string& name) {
  return golden_root() / "preprocess" / name;
}

inline nlohmann::json preprocess_manifest(const std::string& name) {
  std::ifstream in(preprocess_case_dir(name) / "manifest.json");
  if (!in) throw std::runtime_error("cannot read the manifest of " + name);
  return nlohmann::json::parse(in);
}

// The detector inputs of a neural case, by name ("shapes" for shapes_input.png).
inline std::vector<std::string> preprocess_case_inputs(const nlohmann::json& manifest) {
  std::vector<std::string> names;
  const std::string suffix = "_input.png";
  for (const auto& item : manifest.at("files").items()) {
    const auto& file = item.key();
    if (file.size() > suffix.size() && file.compare(file.size() - suffix.size(), suffix.size(), suffix) == 0)
      names.push_back(file.substr(0, file.size() - suffix.size()));
  }
  return names;
}

// A PNG as stored: gray, RGB or RGBA (OpenCV reads BGR; the fixtures are RGB).
inline cv::Mat read_png(const std::filesystem::path& path) {
  cv::Mat m = cv::imread(path.string(), cv::IMREAD_UNCHANGED);
  if (m.empty()) throw std::runtime_error("cannot read " + path.string());
  if (m.channels() == 3) cv::cvtColor(m, m, cv::COLOR_BGR2RGB);
  if (m.channels() == 4) cv::cvtColor(m, m, cv::COLOR_BGRA2RGBA);
  return m;
}

// Number of differing values (all channels); -1 when sizes or types differ.
inline int64_t differing_pixels(const cv::Mat& a, const cv::Mat& b) {
  if (a.size() != b.size() || a.type() != b.type()) return -1;
  cv::Mat diff;
  cv::absdiff(a, b, diff);
  return cv::countNonZero(diff.reshape(1));
}

// README of golden/preprocess: a float32 network's raw outputs within
// 1e-4 * max(1, max|ref|) (`relative` overrides 1e-4); prints the measured error.
inline void expect_raw_close(const torch::Tensor& actual, const torch::Tensor& expected, const std::string& what,
                             double relative = 1e-4) {
  ASSERT_EQ(actual.sizes(), expected.sizes()) << what;
  const double tolerance = relative * std::max(1.0, expected.abs().max().item<double>());
  const double error = max_abs_diff(actual, expected);
  std::cout << "[parity] " << what << " max_abs=" << error << " tolerance " << tolerance << "\n";
  EXPECT_LE(error, tolerance) << what;
}

// README of golden/preprocess: end-to-end uint8 maps may differ by at most 1
// on at most 0.5 % of the values; prints what differs.
inline void expect_u8_map_close(const cv::Mat& actual, const cv::Mat& expected, const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  ASSERT_EQ(actual.type(), expected.type()) << what;
  cv::Mat diff;
  cv::absdiff(actual, expected, diff);
  double max = 0;
  cv::minMaxLoc(diff.reshape(1), nullptr, &max);
  const auto changed = differing_pixels(actual, expected);
  const double share = double(changed) / double(expected.total() * expected.channels());
  std::cout << "[parity] " << what << " u8 values changed " << changed << " (" << share * 100 << " %), max " << max
            << "\n";
  EXPECT_LE(max, 1) << what;
  EXPECT_LE(share, 0.005) << what;
}

}  // namespace cn::testing
