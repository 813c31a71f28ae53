#pragma once
// Condition preprocessors (the ControlNet 1.1 annotators), with the reference
// helpers' exact semantics. Images are uint8 RGB cv::Mats.
#include <torch/torch.h>

#include <opencv2/core.hpp>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
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

// sd-webui-controlnet's resize_image_with_pad: short side to `resolution`
// (sizes rounded half to even; cubic when enlarging, area otherwise), then the
// right and bottom edges replicated up to multiples of 64. `content` is the
// size before padding: the detector's map is cropped back to it.
struct PaddedImage {
  cv::Mat image;
  cv::Size content;
};
PaddedImage resize_image_with_pad(const cv::Mat& image, int resolution);

// How the image is brought to the detect resolution before a detector runs.
enum class Framing {
  resize_image,  // ControlNet 1.1 demos, controlnet_aux: resize_image (both sides x64)
  padded,        // sd-webui-controlnet: resize_image_with_pad, the pad cut off the map
  original,      // no resize (sd-webui-controlnet's tile_resample)
};
Framing parse_framing(const std::string& name);  // "resize_image" | "padded" | "original"
std::string to_string(Framing framing);

// sd-webui-controlnet's "pixel perfect" detect resolution for an image that
// will be fitted to target_width x target_height: the short side the image
// has once fitted (scaled by the larger ratio when cropped or stretched, by
// the smaller when it must fit inside), rounded half to even.
int pixel_perfect_resolution(cv::Size image, int target_width, int target_height, bool fit_inside);

struct DetectOptions {
  int resolution = 512;       // detect resolution
  int output_resolution = 0;  // short side of the returned map; 0: as detected
  double threshold_a = -1;    // detector-specific; < 0: its default
  double threshold_b = -1;
  std::string annotator_dir;  // where the annotator checkpoints are; empty: $CONTROLNET_ANNOTATOR_DIR
  std::optional<Framing> framing;  // empty: the detector's own (that of the code it reproduces)
  // What the networks compute in. bf16 is faster on CPUs with bf16 units; the
  // reference (and the parity tests) are fp32.
  torch::ScalarType dtype = torch::kFloat32;
  // Given to the pose detectors (openpose*), which call it with the keypoints
  // as OpenPose JSON text (sd-webui-controlnet's json_pose_callback); the
  // other detectors ignore it.
  std::function<void(const std::string& json)> pose_json;
};

// What a detector is run with: its thresholds (defaults applied) and where
// to find its checkpoint.
struct DetectParams {
  double a = 0, b = 0;
  std::string annotator_dir;
  std::function<void(const std::string& json)> pose_json;  // DetectOptions::pose_json
  torch::ScalarType dtype = torch::kFloat32;              // DetectOptions::dtype
};

struct Detector {
  std::string name;
  std::string description;
  std::string threshold_a, threshold_b;  // what the thresholds mean (empty: unused)
  double default_a = 0, default_b = 0;
  std::string checkpoint;                // annotator file it needs (empty: none)
  // rgb is already HWC3'd and framed at the detect resolution; returns the map.
  std::function<cv::Mat(const cv::Mat& rgb, const DetectParams& params)> run;
  Framing framing = Framing::resize_image;  // how its reference frames the input
};

const std::vector<Detector>& detectors();
const Detector& find_detector(const std::string& name);

// The whole chain: HWC3, framing at the detect resolution (the detector's
// own unless options.framing says otherwise), the detector, HWC3 of the map;
// the map is returned at the detect resolution (padded: without the pad), or
// resized to options.output_resolution (Lanczos up, area down, as
// resize_image).
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

// The network of an annotator file in `dtype`, built by `load(path)` on first
// use and kept for the process: detectors run many times (the server, several
// units).
template <typename Model, typename Load>
Model load_once(const std::filesystem::path& path, torch::ScalarType dtype, const Load& load) {
  static std::mutex mutex;
  static std::map<std::pair<std::string, torch::ScalarType>, Model> loaded;
  const std::lock_guard<std::mutex> lock(mutex);
  const auto key = std::make_pair(std::filesystem::weakly_canonical(path).string(), dtype);
  auto found = loaded.find(key);
  if (found == loaded.end()) {
    Model model = load(path);
    model->to(dtype);
    found = loaded.emplace(key, model).first;
  }
  return found->second;
}

// What a network's weights are in, and so what its input is cast to.
torch::ScalarType network_dtype(const torch::nn::Module& network);

}  // namespace cn::preprocess
