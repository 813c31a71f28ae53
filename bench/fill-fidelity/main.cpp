// Fidelity of the embedded default model on held-out fill conditions:
//   (a) IoU between the painted disk (pixels nearer the prompted fill colour
//       than the prompted background colour) and the disk the outline encloses;
//   (b) colour accuracy: dominant fill and background nearest to the prompted names.
// With and without the ControlNet, in the same run, and for the held-out
// targets themselves (what a perfect model would score) and the targets
// after a round trip through the VAE (what a perfect UNet could score).
//
//   bench_fill-fidelity [--count 100] [--steps N] [--sampler S] [--cfg C] [--model DIR] [--seed 4242]
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>

#include "controlnet/pipeline.h"
#include "controlnet/runtime.h"
#include "pipeline/default_model.h"
#include "train/fill_metrics.h"

int main(int argc, char** argv) {
  CLI::App app("Fill-task fidelity of the default model, with and without its ControlNet");
  int count = 100, steps = 0, threads = 0;
  uint64_t seed = 4242;  // the training data used seed 1
  std::string model, sampler;
  double cfg = 0;
  app.add_option("--count", count, "held-out conditions")->capture_default_str();
  // Unset sampling options take the model's recommendation (its generation.json).
  auto* steps_option = app.add_option("--steps", steps, "default: the model's recommendation");
  auto* sampler_option = app.add_option("--sampler", sampler, "default: the model's recommendation");
  auto* cfg_option = app.add_option("--cfg", cfg, "default: the model's recommendation");
  app.add_option("--model", model, "model folder (default: the embedded model)");
  app.add_option("--seed", seed, "seed of the held-out conditions")->capture_default_str();
  app.add_option("--threads", threads);
  bool per_condition = false;
  app.add_flag("--per-condition", per_condition, "also print every condition's scores (to see which ones fail)");
  CLI11_PARSE(app, argc, argv);
  cn::init_runtime(threads);
  try {
    if (model.empty()) model = cn::default_model_dir();
    auto pipe = cn::Pipeline::load({model});
    auto settings = pipe->recommended_options();
    if (steps_option->count()) settings.steps = steps;
    if (sampler_option->count()) settings.sampler = sampler;
    if (cfg_option->count()) settings.cfg = cfg;
    const auto start = std::chrono::steady_clock::now();
    const auto r = cn::train::measure_fill_fidelity(*pipe, model, count, seed, settings);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    using F = cn::train::FillFidelity;
    std::printf("held-out conditions: %d (seed %llu), %s %d steps, cfg %.1f, %.1f s\n", count,
                (unsigned long long)seed, settings.sampler.c_str(), settings.steps, settings.cfg, seconds);
    if (per_condition) {
      // IoU with the ControlNet, its ceilings, and the colours it painted.
      std::printf("%-44s %6s %6s %6s %6s  %s\n", "prompt", "radius", "IoU", "VAE", "target", "colours seen (with)");
      for (size_t i = 0; i < r.targets.size(); ++i) {
        const auto& s = r.with_controlnet[i];
        std::printf("%-44s %6.1f %6.3f %6.3f %6.3f  %s / %s%s\n", s.prompt.c_str(), s.radius, s.iou,
                    r.vae_round_trip[i].iou, r.targets[i].iou, s.fill_seen.c_str(), s.background_seen.c_str(),
                    s.colours_right ? "" : "  (wrong)");
      }
    }
    std::printf("%-20s %8s %16s\n", "", "IoU", "colour accuracy");
    std::printf("%-20s %8.3f %15.1f%%\n", "with ControlNet", F::mean_iou(r.with_controlnet),
                100.0 * F::colour_accuracy(r.with_controlnet));
    std::printf("%-20s %8.3f %15.1f%%\n", "without ControlNet", F::mean_iou(r.without_controlnet),
                100.0 * F::colour_accuracy(r.without_controlnet));
    std::printf("%-20s %8.3f %15.1f%%   (the metric's ceiling)\n", "the targets", F::mean_iou(r.targets),
                100.0 * F::colour_accuracy(r.targets));
    std::printf("%-20s %8.3f %15.1f%%   (the VAE's ceiling; mean abs error %.2f / 255)\n", "targets through VAE",
                F::mean_iou(r.vae_round_trip), 100.0 * F::colour_accuracy(r.vae_round_trip), r.vae_round_trip_error);
  } catch (const cn::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  return 0;
}
