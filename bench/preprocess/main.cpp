// Milliseconds per condition preprocessor at a detect resolution of 512 on a
// photo, per compute dtype of the annotator networks.
//
//   bench_preprocess [--resolution 512] [--repeat 3] [--dtypes fp32,bf16]
//                    [--types canny,hed,...] [--annotator-dir DIR] [--threads N]
//
// Without --annotator-dir the networks get random weights in their official
// layouts, built from the fixtures' recipes (golden/preprocess/weights) into a
// scratch folder: the time of a network does not depend on its values. What
// follows a network can (OpenPose crops hands and faces where it finds them,
// M-LSD draws the lines it finds), so those rows are indicative.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <opencv2/imgproc.hpp>

#include "controlnet/runtime.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "preprocess/preprocess.h"
#include "support/golden_dir.h"
#include "support/recipe.h"
#include "support/uniformer_checkpoint.h"
#include "util/dtype.h"

using namespace cn;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

// The annotator files the fixtures have recipes for, by their Annotators names.
const std::map<std::string, std::string> kRecipeOfFile = {
    {"ControlNetHED.pth", "hed"},
    {"table5_pidinet.pth", "pidinet"},
    {"sk_model.pth", "lineart"},
    {"sk_model2.pth", "lineart_coarse"},
    {"netG.pth", "lineart_anime"},
    {"dpt_hybrid-midas-501f0c75.pt", "midas_dpt_hybrid"},
    {"scannet.pt", "normalbae"},
    {"mlsd_large_512_fp32.pth", "mlsd"},
    {"body_pose_model.pth", "openpose_body"},
    {"hand_pose_model.pth", "openpose_hand"},
    {"facenet.pth", "openpose_face"},
};

// A folder of random-weight annotator checkpoints (safetensors copies under
// the official stems, which annotator_file accepts), written once.
fs::path random_annotators(const fs::path& dir) {
  fs::create_directories(dir);
  for (const auto& [file, tag] : kRecipeOfFile) {
    const auto out = (dir / file).replace_extension(".safetensors");
    if (fs::exists(out)) continue;
    std::printf("writing random-weight %s from recipe %s\n", out.filename().c_str(), tag.c_str());
    std::fflush(stdout);
    io::save_safetensors(out.string(), testing::recipe_weights(testing::recipe_path(tag)), {});
  }
  // No recipe: the tests' stand-in, in mmcv's container.
  const auto segmenter = dir / "upernet_global_small.pth";
  if (!fs::exists(segmenter)) {
    std::printf("writing random-weight %s from its layout\n", segmenter.filename().c_str());
    std::fflush(stdout);
    testing::write_mmcv_checkpoint(segmenter, testing::uniformer_random_state_dict(20240501));
  }
  return dir;
}

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("Condition preprocessor benchmark: ms per image");
  int resolution = 512, repeat = 3, threads = 0;
  std::vector<std::string> dtypes{"fp32", "bf16"}, types;
  std::string annotator_dir, image_path, work = (fs::temp_directory_path() / "cn_bench_preprocess").string();
  app.add_option("--resolution", resolution, "detect resolution")->capture_default_str();
  app.add_option("--repeat", repeat, "timed runs after the first")->check(CLI::Range(1, 100))->capture_default_str();
  app.add_option("--dtypes", dtypes, "network dtypes: fp32, bf16")->delimiter(',');
  app.add_option("--types", types, "preprocessors (default: all)")->delimiter(',');
  app.add_option("--annotator-dir", annotator_dir, "real annotator checkpoints (default: random weights)");
  app.add_option("--image", image_path, "input image (default: the fixtures' photo_room.png)");
  app.add_option("--work", work, "scratch folder for the random-weight checkpoints");
  app.add_option("--threads", threads, "intra-op threads (default: physical cores)");
  CLI11_PARSE(app, argc, argv);
  init_runtime(threads);

  const auto golden = testing::golden_root();
  if (image_path.empty()) {
    if (golden.empty()) {
      std::fprintf(stderr, "%s; give --image\n", testing::golden_missing_message().c_str());
      return 2;
    }
    image_path = (golden / "preprocess/inputs/photo_room.png").string();
  }
  if (annotator_dir.empty()) {
    if (golden.empty()) {
      std::fprintf(stderr, "%s; give --annotator-dir\n", testing::golden_missing_message().c_str());
      return 2;
    }
    annotator_dir = random_annotators(work).string();
  }
  const auto image = io::read_rgb_image(image_path);
  if (types.empty())
    for (const auto& d : preprocess::detectors()) types.push_back(d.name);

  std::printf("threads %d, input %s (%dx%d), detect resolution %d, %d timed runs\n", torch::get_num_threads(),
              fs::path(image_path).filename().c_str(), image.cols, image.rows, resolution, repeat);
  std::printf("%-20s %-5s %10s %10s %10s  %s\n", "preprocessor", "dtype", "first ms", "min ms", "median ms", "map");
  for (const auto& type : types) preprocess::find_detector(type);  // unknown names: an error before any work
  for (const auto& type : types) {
    const auto& detector = preprocess::find_detector(type);
    for (const auto& dtype : dtypes) {
      // Model-free preprocessors have no dtype: one row.
      if (detector.checkpoint.empty() && dtype != dtypes.front()) continue;
      preprocess::DetectOptions options;
      options.resolution = resolution;
      options.annotator_dir = annotator_dir;
      options.dtype = parse_dtype(dtype);
      cv::Mat map;
      auto start = Clock::now();
      try {
        map = preprocess::detect(type, image, options);
      } catch (const std::exception& e) {
        const std::string message = e.what();  // LibTorch's errors append a backtrace
        std::printf("%-20s %-5s failed: %s\n", type.c_str(), dtype.c_str(),
                    message.substr(0, message.find('\n')).c_str());
        continue;
      }
      const double first = ms_since(start);  // includes loading the network
      std::vector<double> runs;
      for (int i = 0; i < repeat; ++i) {
        start = Clock::now();
        map = preprocess::detect(type, image, options);
        runs.push_back(ms_since(start));
      }
      std::sort(runs.begin(), runs.end());
      std::printf("%-20s %-5s %10.1f %10.1f %10.1f  %dx%d\n", type.c_str(),
                  detector.checkpoint.empty() ? "-" : dtype.c_str(), first, runs.front(), runs[runs.size() / 2],
                  map.cols, map.rows);
      std::fflush(stdout);
    }
  }
  return 0;
}
