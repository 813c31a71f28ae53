// Training speed and memory of `controlnet train` (the paper's recipe) on the
// golden mini model and on full SD1.5 shapes (random weights, written once to
// a temporary diffusers folder), fp32 vs bf16, with and without gradient
// checkpointing.
//
//   bench_train [--steps 3] [--sizes 256] [--models mini,sd15]
//               [--precisions fp32,bf16] [--checkpointing 0,1] [--threads N]
//
// Each scenario runs in a fresh process (this program again, with --one) so
// that its peak RSS is its own. Batch size 1; the first step (which also
// encodes the latents) is reported apart, the rate is over the others.
#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "controlnet/runtime.h"
#include "io/safetensors.h"
#include "models/unet.h"
#include "models/vae.h"
#include "nn/weights.h"
#include "support/golden_dir.h"
#include "text/clip.h"
#include "train/dataset.h"
#include "train/trainer.h"

using namespace cn;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

double peak_rss_mb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024.0;
}

template <typename Module>
void write_component(const fs::path& dir, const std::string& stem, const nlohmann::json& config, const Module& m) {
  fs::create_directories(dir);
  std::ofstream(dir / "config.json") << config.dump(2);
  io::save_safetensors((dir / (stem + ".safetensors")).string(), nn::state_dict(*m), {{"format", "pt"}});
}

// SD1.5's UNet, VAE and CLIP text encoder shapes (the configs' defaults) with
// seeded random weights; tokenizer and scheduler are the bundled defaults.
void write_random_sd15(const fs::path& dir) {
  if (fs::exists(dir / "model_index.json")) return;
  torch::manual_seed(0);
  write_component(dir / "unet", "diffusion_pytorch_model", models::UNetConfig{}.to_json(),
                  models::UNet2DConditionModel(models::UNetConfig{}));
  write_component(dir / "vae", "diffusion_pytorch_model", models::VaeConfig{}.to_json(),
                  models::AutoencoderKL(models::VaeConfig{}));
  write_component(dir / "text_encoder", "model", text::ClipTextConfig{}.to_json(),
                  text::ClipTextModel(text::ClipTextConfig{}));
  std::ofstream(dir / "model_index.json") << R"({"_class_name": "StableDiffusionPipeline"})";
}

struct Result {
  double first = 0, rate = 0, peak_mb = 0;
};

// One scenario in this process: `steps` training steps at batch size 1.
Result run_one(const std::string& model, int size, const std::string& precision, bool checkpointing, int steps,
               const fs::path& work) {
  const auto data = work / ("fill-" + std::to_string(size));
  if (!fs::exists(data / "prompt.json")) train::write_fill_dataset(data.string(), 8, size, 1);
  train::TrainOptions o;
  o.model = model;
  o.data = data.string();
  o.output = (work / "out").string();
  o.resolution = size;
  o.steps = steps;
  o.log_every = 1;
  o.precision = precision;
  o.gradient_checkpointing = checkpointing;
  std::vector<double> stamps;
  const auto start = Clock::now();
  train::run_training(o, [&](const train::TrainProgress&) {
    stamps.push_back(std::chrono::duration<double>(Clock::now() - start).count());
  });
  Result r;
  r.peak_mb = peak_rss_mb();
  // From the start of training to the end of step 1 includes model loading.
  r.first = stamps.size() > 1 ? stamps[0] : 0;
  if (stamps.size() > 1) r.rate = double(stamps.size() - 1) / (stamps.back() - stamps.front());
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("Training benchmark: steps/s and peak RSS per scenario");
  int steps = 3, threads = 0;
  std::vector<int> sizes{256};
  std::vector<std::string> model_names{"mini", "sd15"}, precisions{"fp32", "bf16"};
  std::vector<int> checkpointing{0, 1};
  std::string one;
  std::string work = (fs::temp_directory_path() / "cn_bench_train").string();
  std::string mini = (testing::golden_root() / "mini-sd15").string();  // CONTROLNET_GOLDEN_DIR or ../shared/golden
  app.add_option("--steps", steps, "training steps per scenario (>= 2)")->check(CLI::Range(2, 1000));
  app.add_option("--sizes", sizes, "image sizes (square)")->delimiter(',');
  app.add_option("--models", model_names, "mini (golden mini-sd15), sd15 (random SD1.5 shapes)")->delimiter(',');
  app.add_option("--precisions", precisions, "fp32, bf16")->delimiter(',');
  app.add_option("--checkpointing", checkpointing, "0, 1")->delimiter(',');
  app.add_option("--threads", threads, "intra-op threads (default: physical cores)");
  app.add_option("--work", work, "scratch folder (the SD1.5 weights are kept there)");
  app.add_option("--mini", mini, "the golden mini model folder");
  app.add_option("--one", one, "internal: run one scenario model,size,precision,checkpointing");
  CLI11_PARSE(app, argc, argv);
  init_runtime(threads);

  if (!one.empty()) {
    std::stringstream list(one);
    std::string model, size, precision, ckpt;
    std::getline(list, model, ',');
    std::getline(list, size, ',');
    std::getline(list, precision, ',');
    std::getline(list, ckpt, ',');
    const auto r = run_one(model, std::stoi(size), precision, ckpt == "1", steps, work);
    std::printf("RESULT %.3f %.4f %.0f\n", r.first, r.rate, r.peak_mb);
    return 0;
  }

  fs::create_directories(work);
  std::printf("threads %d, %d steps per scenario, batch size 1\n", torch::get_num_threads(), steps);
  std::printf("%-6s %5s %-5s %5s %10s %9s %9s %12s\n", "model", "size", "prec", "ckpt", "step 1 s", "steps/s",
              "s/step", "peak RSS MB");
  for (const auto& name : model_names) {
    std::string model;
    if (name == "mini") {
      model = mini;
      if (!fs::exists(model)) {
        std::printf("%-6s (skipped: %s not found)\n", "mini", model.c_str());
        continue;
      }
    } else if (name == "sd15") {
      const auto start = Clock::now();
      write_random_sd15(fs::path(work) / "sd15-random");
      model = (fs::path(work) / "sd15-random").string();
      std::printf("(sd15 random weights ready in %.0f s)\n", std::chrono::duration<double>(Clock::now() - start).count());
    } else {
      std::fprintf(stderr, "unknown model %s\n", name.c_str());
      return 2;
    }
    for (int size : sizes)
      for (const auto& precision : precisions)
        for (int ckpt : checkpointing) {
          const std::string command = "'" + std::string(argv[0]) + "' --steps " + std::to_string(steps) +
                                      " --threads " + std::to_string(torch::get_num_threads()) + " --work '" + work +
                                      "' --one " + model + "," + std::to_string(size) + "," + precision + "," +
                                      std::to_string(ckpt) + " 2>&1";
          std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(command.c_str(), "r"), pclose);
          char line[4096];
          double first = 0, rate = 0, peak = 0;
          bool ok = false;
          std::string last;
          while (pipe && std::fgets(line, sizeof line, pipe.get())) {
            if (std::sscanf(line, "RESULT %lf %lf %lf", &first, &rate, &peak) == 3) ok = true;
            else last = line;
          }
          if (!ok) {
            std::printf("%-6s %5d %-5s %5d   failed: %s", name.c_str(), size, precision.c_str(), ckpt, last.c_str());
            continue;
          }
          std::printf("%-6s %5d %-5s %5d %10.2f %9.3f %9.2f %12.0f\n", name.c_str(), size, precision.c_str(), ckpt, first,
                      rate, rate > 0 ? 1.0 / rate : 0.0, peak);
          std::fflush(stdout);
        }
  }
  return 0;
}
