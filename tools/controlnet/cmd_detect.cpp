// `controlnet detect`: run a condition preprocessor on an image.
#include <algorithm>
#include <fstream>
#include <iostream>
#include <sstream>

#include "commands.h"
#include "controlnet/error.h"
#include "io/image.h"
#include "preprocess/preprocess.h"
#include "util/dtype.h"

namespace cn::cli {

void add_detect_command(CLI::App& app) {
  static std::string type, input, output, framing, pose_json, dtype = "fp32", pixel_perfect,
      resize_mode = "crop-and-resize";
  static preprocess::DetectOptions options;
  static bool list = false;
  auto* cmd = add_command(app, "detect", "Make a control image from a photo or drawing (Canny, scribble, ...)", [] {
    if (list) {
      for (const auto& d : preprocess::detectors()) {
        std::cout << d.name << ": " << d.description;
        if (!d.threshold_a.empty()) std::cout << "; a = " << d.threshold_a << " (default " << d.default_a << ")";
        if (!d.threshold_b.empty()) std::cout << "; b = " << d.threshold_b << " (default " << d.default_b << ")";
        std::cout << "; framing " << preprocess::to_string(d.framing);
        if (d.checkpoint.empty()) std::cout << "; no checkpoint needed\n";
        else
          std::cout << "; needs " << d.checkpoint
                    << (preprocess::annotator_file_present(d.checkpoint, options.annotator_dir) ? " (present)"
                                                                                                 : " (missing)")
                    << "\n";
      }
      return 0;
    }
    if (type.empty() || input.empty() || output.empty()) throw Error("detect needs --type TYPE IN OUT (or --list)");
    if (!framing.empty()) options.framing = preprocess::parse_framing(framing);
    options.dtype = parse_dtype(dtype);
    const auto image = io::read_rgb_image(input);
    if (!pixel_perfect.empty()) {
      int width = 0, height = 0;
      char x = 0;
      std::istringstream size(pixel_perfect);
      if (!(size >> width >> x >> height) || x != 'x' || width < 8 || height < 8)
        throw Error("--pixel-perfect takes the generation size as WxH, e.g. 768x512");
      options.resolution = std::clamp(preprocess::pixel_perfect_resolution(
                                          image.size(), width, height,
                                          io::parse_resize_mode(resize_mode) == io::ResizeMode::resize_and_fill),
                                      64, 4096);
    }
    std::string keypoints;  // what a pose detector reported
    if (!pose_json.empty()) options.pose_json = [&keypoints](const std::string& json) { keypoints = json; };
    auto map = preprocess::detect(type, image, options);
    if (!pose_json.empty()) {
      if (keypoints.empty()) throw Error("--pose-json: " + type + " gives no keypoints (use an openpose preprocessor)");
      std::ofstream out(pose_json);
      if (!(out << keypoints << "\n")) throw Error("cannot write " + pose_json);
    }
    io::write_png(output, map);
    std::cout << output << " (" << map.cols << "x" << map.rows << ")\n";
    return 0;
  });
  cmd->add_option("--type", type, "Preprocessor (see --list)");
  cmd->add_option("input", input, "Input image");
  cmd->add_option("output", output, "Output PNG");
  cmd->add_option("--resolution", options.resolution, "Detect resolution (short side)")->capture_default_str();
  cmd->add_option("--output-resolution", options.output_resolution,
                  "Short side of the written map (default: the detect resolution)");
  cmd->add_option("--pixel-perfect", pixel_perfect,
                  "Choose the detect resolution for a generation of this size (WxH), as sd-webui-controlnet's pixel "
                  "perfect does");
  cmd->add_option("--resize-mode", resize_mode,
                  "With --pixel-perfect: how the image will be fitted (just-resize, crop-and-resize, resize-and-fill)")
      ->capture_default_str();
  cmd->add_option("--threshold-a", options.threshold_a, "First threshold (see --list)");
  cmd->add_option("--threshold-b", options.threshold_b, "Second threshold (see --list)");
  cmd->add_option("--framing", framing,
                  "How the image meets the detect resolution: resize_image (ControlNet 1.1 demos), padded "
                  "(sd-webui-controlnet), original (no resize); default: the preprocessor's own (see --list)");
  cmd->add_option("--annotator-dir", options.annotator_dir,
                  "Folder of the annotator checkpoints (default: $CONTROLNET_ANNOTATOR_DIR)");
  cmd->add_option("--pose-json", pose_json,
                  "With an openpose preprocessor: also write the keypoints as OpenPose JSON (sd-webui-controlnet's "
                  "format, coordinates normalised to the map)");
  cmd->add_option("--dtype", dtype, "What the annotator networks compute in: fp32 (the reference's) or bf16 (faster)")
      ->capture_default_str();
  cmd->add_flag("--list", list, "List the preprocessors, their thresholds and checkpoints");
}

}  // namespace cn::cli
