#pragma once
// Helpers shared by the preprocessor tests: the golden/preprocess case folders,
// their manifests and PNGs as the annotators produced them.
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <stdexcept>
#include <string>

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

}  // namespace cn::testing
