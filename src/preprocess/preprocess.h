#pragma once
// Condition preprocessors (the ControlNet 1.1 annotators), with the reference
// helpers' exact semantics. Images are uint8 RGB cv::Mats.
#include <opencv2/core.hpp>
#include <functional>
#include <string>
#include <vector>

namespace cn::preprocess {

// Gray -> 3 equal channels; RGB unchanged; RGBA composited over white in
// float32 (c * a + 255 * (1 - a), truncated), as the annotators' HWC3.
cv::Mat hwc3(const cv::Mat& image);

// Short side to `resolution`, both sides then rounded (half to even) to
// multiples of 64; Lanczos when enlarging (k > 1), area otherwise.
cv::Mat resize_image(const cv::Mat& image, int resolution);

struct DetectOptions {
  int resolution = 512;     // detect resolution
  double threshold_a = -1;  // detector-specific; < 0: its default
  double threshold_b = -1;
};

struct Detector {
  std::string name;
  std::string description;
  std::string threshold_a, threshold_b;  // what the thresholds mean (empty: unused)
  double default_a = 0, default_b = 0;
  std::string checkpoint;                // annotator file it needs (empty: none)
  // rgb is already HWC3'd and resized to the detect resolution; returns the map.
  std::function<cv::Mat(const cv::Mat& rgb, double a, double b)> run;
};

const std::vector<Detector>& detectors();
const Detector& find_detector(const std::string& name);

// The whole chain: HWC3, resize_image to the detect resolution, the
// detector, HWC3 of the map; the map is returned at the detect resolution.
cv::Mat detect(const std::string& type, const cv::Mat& image, const DetectOptions& options);

}  // namespace cn::preprocess
