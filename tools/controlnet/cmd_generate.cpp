// `controlnet generate`: text-to-image and image-to-image with ControlNets.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <iostream>

#include "commands.h"
#include "controlnet/pipeline.h"
#include "pipeline/default_model.h"

namespace cn::cli {
namespace {

struct GenerateArgs {
  ModelOptions model;
  GenerateOptions gen;
  std::vector<std::string> controlnets, control_images, control_modes, resize_modes, preprocessors,
      control_masks;
  std::vector<double> scales, starts, ends;
  std::string output = "output.png";
};

// "out.png" -> "out-3.png" when several images are written.
std::string numbered(const std::string& path, size_t index, size_t total) {
  if (total == 1) return path;
  std::filesystem::path p(path);
  auto stem = p.stem().string() + "-" + std::to_string(index + 1);
  return (p.parent_path() / (stem + p.extension().string())).string();
}

// Values given once apply to every unit; otherwise one per unit, in order.
template <typename T>
T per_unit(const std::vector<T>& values, size_t unit, const T& fallback, const char* option) {
  if (values.empty()) return fallback;
  if (values.size() == 1) return values[0];
  if (unit >= values.size())
    throw Error(std::string(option) + " was given " + std::to_string(values.size()) + " times for more ControlNets");
  return values[unit];
}

void build_units(GenerateArgs& a) {
  if (a.controlnets.size() != a.control_images.size())
    throw Error("every --controlnet needs a --control image and the reverse (got " +
                std::to_string(a.controlnets.size()) + " ControlNets and " + std::to_string(a.control_images.size()) +
                " control images)");
  for (size_t i = 0; i < a.controlnets.size(); ++i) {
    ControlNetUnit u;
    u.model = a.controlnets[i];
    u.image = a.control_images[i];
    u.scale = per_unit(a.scales, i, 1.0, "--control-scale");
    u.start = per_unit(a.starts, i, 0.0, "--control-start");
    u.end = per_unit(a.ends, i, 1.0, "--control-end");
    u.mode = parse_control_mode(per_unit(a.control_modes, i, std::string("balanced"), "--control-mode"));
    u.resize_mode = per_unit(a.resize_modes, i, std::string("crop-and-resize"), "--resize-mode");
    u.preprocess = per_unit(a.preprocessors, i, std::string(), "--preprocess");
    u.mask = per_unit(a.control_masks, i, std::string(), "--control-mask");
    a.gen.controls.push_back(u);
  }
}

// A progress bar on a terminal, plain lines otherwise (logs, CI).
ProgressCallback progress_printer() {
  const bool tty = isatty(fileno(stderr));
  return [tty](const Progress& p) {
    const int done = p.batch * p.steps + p.step, total = p.batch_count * p.steps;
    const double per_step = done > 0 ? p.elapsed / done : 0.0;
    const double eta = per_step * (total - done);
    char line[160];
    if (tty) {
      const int width = 30, filled = total ? width * done / total : width;
      std::snprintf(line, sizeof line, "\r[%.*s%*s] %d/%d  %.2f s/step  ETA %.0f s ", filled,
                    "##############################", width - filled, "", done, total, p.last_step, eta);
      std::cerr << line << (done == total ? "\n" : "") << std::flush;
    } else {
      std::snprintf(line, sizeof line, "step %d/%d (batch %d/%d): %.2f s/step, ETA %.0f s\n", p.step, p.steps,
                    p.batch + 1, p.batch_count, p.last_step, eta);
      std::cerr << line;
    }
    return true;
  };
}

}  // namespace

void add_generate_command(CLI::App& app) {
  static GenerateArgs a;
  static CLI::App* cmd = nullptr;
  cmd = add_command(app, "generate", "Generate images from a prompt, steered by ControlNets", [] {
    if (a.model.model.empty()) {
      a.model.model = default_model_dir();
      // The embedded model ships with its ControlNet: a control image alone uses it.
      if (a.controlnets.empty() && !a.control_images.empty())
        a.controlnets.assign(a.control_images.size(), (std::filesystem::path(a.model.model) / "controlnet").string());
    }
    build_units(a);
    auto pipe = Pipeline::load(a.model);
    // Sampling settings the user left out take the model's recommendation.
    const auto recommended = pipe->recommended_options();
    auto unset = [](const char* option) { return cmd->get_option(option)->count() == 0; };
    if (unset("--steps")) a.gen.steps = recommended.steps;
    if (unset("--cfg")) a.gen.cfg = recommended.cfg;
    if (unset("--sampler")) a.gen.sampler = recommended.sampler;
    if (unset("--schedule")) a.gen.schedule = recommended.schedule;
    auto images = pipe->generate(a.gen, progress_printer());
    for (size_t i = 0; i < images.size(); ++i) {
      auto path = numbered(a.output, i, images.size());
      save_png(path, images[i]);
      std::cout << path << " (seed " << images[i].seed << ")\n";
    }
    return 0;
  });
  auto& g = a.gen;
  const char* model = "Model";
  cmd->add_option("-m,--model", a.model.model, "SD checkpoint (.safetensors/.ckpt) or diffusers folder; default: the embedded model")->group(model);
  cmd->add_option("--vae", a.model.vae, "VAE replacing the model's")->group(model);
  cmd->add_option("--dtype", a.model.dtype, "Compute dtype")->check(CLI::IsMember({"fp32", "bf16", "fp16"}))->group(model);
  cmd->add_option("--device", a.model.device, "cpu, cuda or cuda:N")->group(model);
  cmd->add_option("--prediction", a.model.prediction, "Override the model's prediction type")->check(CLI::IsMember({"epsilon", "v_prediction"}))->group(model);
  cmd->add_flag("--ema", a.model.ema, "Use the checkpoint's EMA weights")->group(model);
  cmd->add_option("--threads", a.model.threads, "CPU threads (default: all cores)")->check(CLI::NonNegativeNumber)->group(model);

  const char* prompt = "Prompt";
  cmd->add_option("-p,--prompt", g.prompt, "What to draw")->group(prompt);
  cmd->add_option("-n,--negative-prompt", g.negative_prompt, "What to avoid")->group(prompt);
  cmd->add_option("--clip-skip", g.clip_skip, "1 = last CLIP layer, 2 = penultimate (A1111 convention)")->group(prompt);

  const char* sampling = "Sampling (defaults: the model's generation.json, else these)";
  cmd->add_option("--steps", g.steps, "Denoising steps")->capture_default_str()->group(sampling);
  cmd->add_option("--cfg", g.cfg, "Classifier-free guidance scale (<= 1 disables it)")->capture_default_str()->group(sampling);
  cmd->add_option("--sampler", g.sampler, "ddim, euler, euler_a, dpmpp_2m, unipc, lms, plms")->capture_default_str()->group(sampling);
  cmd->add_option("--schedule", g.schedule, "default or karras")->capture_default_str()->group(sampling);
  cmd->add_option("--seed", g.seed, "-1 = random (printed)")->capture_default_str()->group(sampling);
  cmd->add_option("-W,--width", g.width, "Multiple of 8 (default: the model's native size)")->group(sampling);
  cmd->add_option("-H,--height", g.height, "Multiple of 8 (default: the model's native size)")->group(sampling);
  cmd->add_option("--batch-size", g.batch_size, "Images per batch")->capture_default_str()->group(sampling);
  cmd->add_option("--batch-count", g.batch_count, "Batches")->capture_default_str()->group(sampling);
  cmd->add_option("--init-image", g.init_image, "img2img: start from this image")->group(sampling);
  cmd->add_option("--strength", g.strength, "img2img: how much of it is re-noised")->capture_default_str()->group(sampling);

  const char* control = "ControlNet (repeatable options pair up in order)";
  cmd->add_option("--controlnet", a.controlnets, "ControlNet file or folder")->group(control);
  cmd->add_option("--control", a.control_images, "Control image for the ControlNet at the same position")->group(control);
  cmd->add_option("--control-scale", a.scales, "Conditioning scale (default 1)")->group(control);
  cmd->add_option("--control-start", a.starts, "Fraction of steps where it starts (default 0)")->group(control);
  cmd->add_option("--control-end", a.ends, "Fraction of steps where it ends (default 1)")->group(control);
  cmd->add_option("--control-mode", a.control_modes, "balanced, prompt or controlnet (default balanced)")->group(control);
  cmd->add_option("--resize-mode", a.resize_modes, "just-resize, crop-and-resize, resize-and-fill")->group(control);
  cmd->add_option("--preprocess", a.preprocessors, "Run this preprocessor on the control image first (see detect --list)")->group(control);
  cmd->add_option("--control-mask", a.control_masks,
                  "Inpaint ControlNet: mask image, white = repaint (those control pixels become -1)")
      ->group(control);
  cmd->add_option("--annotator-dir", g.annotator_dir, "Folder of the annotator checkpoints for --preprocess (default: $CONTROLNET_ANNOTATOR_DIR)")->group(control);
  cmd->add_flag("--guess-mode", g.guess_mode, "ControlNet on the conditional half only, with logspace scales")->group(control);

  cmd->add_option("-o,--output", a.output, "Output PNG (numbered when several)")->capture_default_str()->group("Output");
}

}  // namespace cn::cli
