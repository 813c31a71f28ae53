#pragma once
// Condition preprocessors (the ControlNet 1.1 annotators), with the reference
// helpers' exact semantics. Images are uint8 RGB cv::Mats.
#include <opencv2/core.hpp>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace cn::preprocess {

// Gray -> 3 equal channels; RGB unchanged; RGBA composited over white in
// float32 (c * a + 255 * (1 - a), truncated), as the annotators' HWC3.
cv::Mat hwc3(const cv::Mat& image);

// Short side to `resolution`, both sides then rounded (half to even) to
// multiples of 64; Lanczos when enlarging (k > 1), area otherwise.
cv::Mat resize_image(const cv::Mat& image, int resolution);

struct DetectOptions {
  int resolution = 512;       // detect resolution
  double threshold_a = -1;    // detector-specific; < 0: its default
  double threshold_b = -1;
  std::string annotator_dir;  // where the annotator checkpoints are; empty: $CONTROLNET_ANNOTATOR_DIR
};

// What a detector is run with: its thresholds (defaults applied) and where
// to find its checkpoint.
struct DetectParams {
  double a = 0, b = 0;
  std::string annotator_dir;
};

struct Detector {
  std::string name;
  std::string description;
  std::string threshold_a, threshold_b;  // what the thresholds mean (empty: unused)
  double default_a = 0, default_b = 0;
  std::string checkpoint;                // annotator file it needs (empty: none)
  // rgb is already HWC3'd and resized to the detect resolution; returns the map.
  std::function<cv::Mat(const cv::Mat& rgb, const DetectParams& params)> run;
};

const std::vector<Detector>& detectors();
const Detector& find_detector(const std::string& name);

// The whole chain: HWC3, resize_image to the detect resolution, the
// detector, HWC3 of the map; the map is returned at the detect resolution.
cv::Mat detect(const std::string& type, const cv::Mat& image, const DetectOptions& options);

// The annotator checkpoint `filename` (its name in lllyasviel/Annotators, e.g.
// "ControlNetHED.pth") in `annotator_dir`, else $CONTROLNET_ANNOTATOR_DIR. A
// copy converted to safetensors (same stem) is accepted too. When absent, the
// error names the file, where to download it and where to put it.
std::filesystem::path annotator_file(const std::string& filename, const std::string& annotator_dir);
// Whether annotator_file would find it (for `detect --list`).
bool annotator_file_present(const std::string& filename, const std::string& annotator_dir);

// The tensors of an annotator checkpoint (.pth in the zip or legacy format, or
// .safetensors; nested dicts flattened with '.'). Each of `strip_prefixes`, in
// order, is removed from the names that start with it: the file's container
// (e.g. "model." of {'model': sd}) and DataParallel's "module.", which only
// the detector knows its file to have.
io::TensorMap load_annotator_weights(const std::filesystem::path& path, const std::vector<std::string>& strip_prefixes);

// The network of an annotator file, built by `load(path)` on first use and
// kept for the process: detectors run many times (the server, several units).
template <typename Model, typename Load>
Model load_once(const std::filesystem::path& path, const Load& load) {
  static std::mutex mutex;
  static std::map<std::string, Model> loaded;
  const std::lock_guard<std::mutex> lock(mutex);
  const auto key = std::filesystem::weakly_canonical(path).string();
  auto found = loaded.find(key);
  if (found == loaded.end()) found = loaded.emplace(key, load(path)).first;
  return found->second;
}

}  // namespace cn::preprocess
