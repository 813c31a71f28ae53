#pragma once
// `controlnet train`: the ControlNet paper's recipe on a Fill50K-layout
// dataset, and training of a base model's UNet, text encoder or VAE (used to
// build the embedded default model). Resumable; writes checkpoints atomically.
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "train/distributed.h"

namespace cn::train {

struct TrainOptions {
  std::string model;            // SD model (diffusers folder or LDM file)
  std::string data;             // dataset folder (prompt.json)
  std::string output;           // output folder
  std::string controlnet_init;  // ControlNet to start from; default: add-control of the UNet
  std::set<std::string> train{"controlnet"};  // or any of unet, text, vae; or vae_decoder
  bool from_scratch = false;    // initialise the trained base parts randomly (configs from `model`)
  int resolution = 512;
  int batch_size = 1;
  int64_t steps = 0;            // 0: `epochs` epochs
  int64_t epochs = 1;
  double lr = 1e-5;
  // Learning rate over the run: "constant" (the paper's), or "cosine": decays
  // from lr to 0 over the steps. Either way linear from 0 over `warmup_steps`.
  std::string lr_schedule = "constant";
  int64_t warmup_steps = 0;
  double beta1 = 0.9, beta2 = 0.999, adam_eps = 1e-8, weight_decay = 1e-2;
  int grad_accum = 1;
  double max_grad_norm = 0.0;   // 0: no clipping
  double prompt_dropout = 0.5;
  double kl_weight = 1e-6;      // VAE training: KL term weight (LDM's default)
  bool unlock_sd = false;       // also train the UNet's decoder half (sd_locked = False)
  bool only_mid_control = false;
  bool latent_sample = false;   // latents from a posterior sample instead of its mean
  uint64_t seed = 0;
  int64_t save_every = 0;       // 0: only at the end
  int64_t sample_every = 0;
  std::string validation_prompt, validation_image;
  std::string resume;           // output folder of an earlier run
  int64_t log_every = 10;
  // "fp32", or "bf16": frozen parts stored and every forward/backward run in
  // bfloat16, while the optimizer updates fp32 master copies of the trained
  // weights and the loss is computed in fp32.
  std::string precision = "fp32";
  bool gradient_checkpointing = false;  // UNet and ControlNet layers recomputed in backward
  bool skip_bad = false;                // leave out bad samples instead of stopping
  std::function<void(const std::string&)> warn;  // gets each skipped sample's message
  // Data parallelism: `batch_size` samples per rank and step, gradients
  // averaged over ranks; only rank 0 writes. Null: this process alone.
  std::shared_ptr<ProcessGroup> group;
};

// The learning rate of optimizer step `step` (0-based) out of `total`.
double scheduled_lr(const TrainOptions& o, int64_t step, int64_t total);

struct TrainProgress {
  int64_t step, total;
  double loss, loss_average, steps_per_second, eta_seconds;
};

struct TrainSummary {
  int64_t skipped_samples = 0;  // bad samples left out (--skip-bad), over all ranks
};

// Progress and warnings are reported on rank 0 only.
TrainSummary run_training(const TrainOptions& options, const std::function<void(const TrainProgress&)>& progress);

}  // namespace cn::train
