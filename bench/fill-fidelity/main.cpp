// Fidelity of the embedded default model on held-out fill conditions:
//   (a) IoU between the painted disk (pixels nearer the prompted fill colour
//       than the prompted background colour) and the disk the outline encloses;
//   (b) colour accuracy: dominant fill and background nearest to the prompted names.
// With and without the ControlNet, in the same run.
//
//   bench_fill-fidelity [--count 100] [--steps 20] [--model DIR] [--seed 4242]
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "controlnet/pipeline.h"
#include "controlnet/runtime.h"
#include "io/image.h"
#include "pipeline/default_model.h"
#include "train/dataset.h"
#include "train/fill_metrics.h"

namespace fs = std::filesystem;

int main(int argc, char** argv) {
  CLI::App app("Fill-task fidelity of the default model, with and without its ControlNet");
  int count = 100, steps = 20, threads = 0;
  uint64_t seed = 4242;  // the training data used seed 1
  std::string model, sampler = "ddim";
  double cfg = 7.5;
  app.add_option("--count", count, "held-out conditions")->capture_default_str();
  app.add_option("--steps", steps)->capture_default_str();
  app.add_option("--sampler", sampler)->capture_default_str();
  app.add_option("--cfg", cfg)->capture_default_str();
  app.add_option("--model", model, "model folder (default: the embedded model)");
  app.add_option("--seed", seed, "seed of the held-out conditions")->capture_default_str();
  app.add_option("--threads", threads);
  CLI11_PARSE(app, argc, argv);
  cn::init_runtime(threads);
  try {
    if (model.empty()) model = cn::default_model_dir();
    const auto data = fs::temp_directory_path() / ("cn_fill_heldout_" + std::to_string(seed));
    cn::train::write_fill_dataset(data.string(), count, 64, seed);
    auto pipe = cn::Pipeline::load({model});
    std::ifstream index(data / "prompt.json");
    double iou[2] = {0, 0};
    int colours[2] = {0, 0};
    const auto start = std::chrono::steady_clock::now();
    std::string line;
    for (int i = 0; std::getline(index, line); ++i) {
      const auto j = nlohmann::json::parse(line);
      const auto source = (data / j["source"].get<std::string>()).string();
      const auto outline = cn::io::read_rgb_image(source);
      for (int with = 0; with < 2; ++with) {
        cn::GenerateOptions o;
        o.prompt = j["prompt"];
        o.steps = steps;
        o.sampler = sampler;
        o.cfg = cfg;
        o.seed = int64_t(i);
        if (with) o.controls.push_back({(fs::path(model) / "controlnet").string(), source});
        auto out = pipe->generate(o).at(0);
        cv::Mat rgb(out.image.height, out.image.width, CV_8UC3, out.image.rgb.data());
        const auto s = cn::train::score_fill(rgb, outline, o.prompt);
        iou[with] += s.iou;
        colours[with] += s.colours_right;
      }
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("held-out conditions: %d (seed %llu), %s %d steps, cfg %.1f, %.1f s\n", count,
                (unsigned long long)seed, sampler.c_str(), steps, cfg, seconds);
    std::printf("%-20s %8s %16s\n", "", "IoU", "colour accuracy");
    std::printf("%-20s %8.3f %15.1f%%\n", "with ControlNet", iou[1] / count, 100.0 * colours[1] / count);
    std::printf("%-20s %8.3f %15.1f%%\n", "without ControlNet", iou[0] / count, 100.0 * colours[0] / count);
    fs::remove_all(data);
  } catch (const cn::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  return 0;
}
