#pragma once
// controlnet.cpp public API: load a Stable Diffusion model once, then generate
// images steered by zero or more ControlNets.
//
//   auto pipe = cn::Pipeline::load({.model = "v1-5-pruned-emaonly.safetensors"});
//   cn::GenerateOptions opt;
//   opt.prompt = "a house by a lake";
//   opt.controls.push_back({.model = "control_v11p_sd15_canny.pth", .image = "edges.png"});
//   for (auto& out : pipe->generate(opt, progress)) cn::save_png("out.png", out);
//
// Errors in user input (files, options) throw cn::Error with a complete message.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "controlnet/error.h"

namespace cn {

// How a ControlNet's residuals are weighted (sd-webui-controlnet's control modes).
enum class ControlMode {
  balanced,                   // residual i x scale on both CFG halves
  prompt_more_important,      // soft weights scale * 0.825^(12 - i), both halves
  controlnet_more_important,  // soft weights, conditional half only
};
ControlMode parse_control_mode(const std::string& name);
std::string to_string(ControlMode mode);

struct Image {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> rgb;  // row-major RGB, 8 bit
};

struct ControlNetUnit {
  std::string model;                          // ControlNet file or diffusers folder
  std::string image;                          // condition image file ...
  Image pixels;                               // ... or its pixels, used when `image` is empty
  double scale = 1.0;                         // conditioning scale
  double start = 0.0;                         // fraction of the steps where it starts ...
  double end = 1.0;                           // ... and ends
  ControlMode mode = ControlMode::balanced;
  std::string resize_mode = "crop-and-resize";  // just-resize | crop-and-resize | resize-and-fill
  std::string preprocess;                     // run this preprocessor on the image first (e.g. "canny")
  // Inpaint ControlNet (control_v11p_sd15_inpaint): mask file, white = repaint,
  // fitted like the image; the control is the image with those pixels at -1 ...
  std::string mask;
  Image mask_pixels;                          // ... or its pixels (empty: no mask)
};

struct ModelOptions {
  std::string model;            // LDM single file (.safetensors/.ckpt/.pth) or diffusers folder
  std::string vae;              // optional VAE replacing the model's
  std::string dtype = "fp32";   // fp32 | bf16 | fp16 (compute and weight dtype)
  std::string device = "cpu";   // cpu | cuda | cuda:N
  std::string prediction;       // epsilon | v_prediction; empty: from the model
  bool ema = false;             // use EMA weights when the checkpoint has them
  int threads = 0;              // intra-op threads; 0 = LibTorch's default
};

struct GenerateOptions {
  std::string prompt;
  std::string negative_prompt;
  int steps = 20;
  double cfg = 7.5;                     // classifier-free guidance scale; <= 1 disables it
  std::string sampler = "euler_a";
  std::string schedule = "default";     // default | karras
  int64_t seed = -1;                    // -1: random (the chosen seed is reported)
  int width = 0;                        // 0: the model's native size (SD1.5: 512, SD2.1-v: 768)
  int height = 0;
  int batch_size = 1;                   // images per denoising batch
  int batch_count = 1;                  // batches, one after another
  std::string init_image;               // img2img when set
  double strength = 0.75;               // img2img: fraction of the schedule re-noised
  int clip_skip = 1;                    // A1111 convention: 1 = last layer, 2 = penultimate
  bool guess_mode = false;              // ControlNet on the conditional half, logspace scales
  std::string annotator_dir;            // preprocessor checkpoints; empty: $CONTROLNET_ANNOTATOR_DIR
  std::vector<ControlNetUnit> controls;
};

struct Progress {
  int batch = 0;            // 0-based batch index
  int batch_count = 1;
  int step = 0;             // steps done in this batch
  int steps = 0;            // steps per batch
  double elapsed = 0.0;     // seconds since generate() began
  double last_step = 0.0;   // seconds of the last step
};
// Called after every denoising step; returning false cancels the generation.
using ProgressCallback = std::function<bool(const Progress&)>;

struct GeneratedImage {
  Image image;
  int64_t seed = 0;        // seed of this image's batch
  int batch_index = 0;     // position inside its batch
  std::string parameters;  // A1111-style "parameters" text
};

// Thrown when a progress callback asks to stop.
class Cancelled : public Error {
 public:
  Cancelled() : Error("generation cancelled") {}
};

class Pipeline {
 public:
  static std::unique_ptr<Pipeline> load(const ModelOptions& options);
  std::vector<GeneratedImage> generate(const GenerateOptions& options, const ProgressCallback& progress = {});
  // GenerateOptions with the sampling settings this model recommends: steps,
  // cfg, sampler and schedule from generation.json in its folder (written by
  // whoever trained it), the library's defaults where it has none. Callers
  // start from these and override what their user gave.
  GenerateOptions recommended_options() const;
  // Facts about the loaded model (family, inferred architecture) for display.
  std::vector<std::string> describe() const;
  ~Pipeline();

  struct Impl;

 private:
  explicit Pipeline(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Writes the image as PNG with its "parameters" text chunk.
void save_png(const std::string& path, const GeneratedImage& image);
// The same PNG, as bytes.
std::string encode_png(const GeneratedImage& image);

}  // namespace cn
