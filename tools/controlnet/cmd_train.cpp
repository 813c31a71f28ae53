// `controlnet train` and `controlnet dataset fill`.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <sstream>

#include "commands.h"
#include "controlnet/error.h"
#include "controlnet/runtime.h"
#include "train/dataset.h"
#include "train/distributed.h"
#include "train/trainer.h"

namespace cn::cli {

namespace {

int env_int(const char* name, int fallback) {
  const char* value = std::getenv(name);
  return value && *value ? std::atoi(value) : fallback;
}

}  // namespace

void add_train_command(CLI::App& app) {
  static train::TrainOptions o;
  static std::string parts = "controlnet";
  static int nproc = 1;
  auto* cmd = add_command(app, "train", "Train a ControlNet (the paper's recipe) or parts of a base model", [] {
    o.train.clear();
    std::stringstream list(parts);
    for (std::string part; std::getline(list, part, ',');)
      if (!part.empty()) o.train.insert(part);
    // Ranks: torchrun-style variables (set by a launcher, or by rank 0 of
    // --nproc for its workers), else --nproc processes on this machine.
    std::unique_ptr<train::LocalWorkers> workers;
    if (std::getenv("WORLD_SIZE")) {
      o.group = train::ProcessGroup::from_environment();
    } else if (nproc > 1) {
      o.group = train::ProcessGroup::host_local(
          nproc, [&workers](uint16_t port) { workers = std::make_unique<train::LocalWorkers>(nproc, port); });
    }
    // Processes on one machine share its cores.
    const int local_ranks = env_int("LOCAL_WORLD_SIZE", o.group && !std::getenv("WORLD_SIZE") ? nproc : 1);
    if (local_ranks > 1) torch::set_num_threads(std::max(1, physical_cores() / local_ranks));
    const bool rank0 = !o.group || o.group->rank() == 0;
    o.warn = [](const std::string& message) { std::cerr << "warning: skipped " << message << "\n"; };
    const bool tty = isatty(fileno(stderr));
    train::TrainSummary summary;
    try {
      summary = train::run_training(o, [tty](const train::TrainProgress& p) {
        char line[200];
        std::snprintf(line, sizeof line, "%sstep %lld/%lld  loss %.5f (avg %.5f)  %.2f steps/s  ETA %.0f s%s",
                      tty ? "\r" : "", (long long)p.step, (long long)p.total, p.loss, p.loss_average,
                      p.steps_per_second, p.eta_seconds, tty ? "   " : "\n");
        std::cerr << line << (tty && p.step == p.total ? "\n" : "") << std::flush;
      });
    } catch (const std::exception&) {
      // Rank 0's error is often only the echo of a worker's (a closed
      // connection): report the worker's own message when there is one.
      if (workers) {
        const auto failure = workers->failure(std::chrono::seconds(5));
        if (!failure.empty()) throw Error(failure);
      }
      throw;
    }
    if (workers) workers->join();
    if (!rank0) return 0;
    if (summary.skipped_samples > 0) std::cerr << "skipped " << summary.skipped_samples << " bad samples\n";
    std::cout << "wrote " << o.output << "\n";
    return 0;
  });
  cmd->add_option("--nproc", nproc, "Data-parallel processes on this machine (several machines: set RANK, WORLD_SIZE, "
                                    "MASTER_ADDR, MASTER_PORT as torchrun does)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--precision", o.precision, "fp32, or bf16 (frozen parts and compute in bf16, fp32 master weights)")
      ->capture_default_str();
  cmd->add_flag("--gradient-checkpointing", o.gradient_checkpointing,
                "Recompute UNet and ControlNet layers in backward instead of keeping their activations "
                "(less memory, about one more forward pass)");
  cmd->add_flag("--skip-bad", o.skip_bad, "Leave out bad samples (reported, counted) instead of stopping");
  cmd->add_option("--model", o.model, "Base SD model (diffusers folder or LDM file)")->required();
  cmd->add_option("--data", o.data, "Dataset folder with prompt.json (Fill50K layout)")->required();
  cmd->add_option("--output", o.output, "Output folder")->required();
  cmd->add_option("--controlnet", o.controlnet_init, "ControlNet to start from (default: add-control of the UNet)");
  cmd->add_option("--train", parts, "What learns: controlnet, or any of unet,text,vae, or vae_decoder (its encoder fixed)")->capture_default_str();
  cmd->add_flag("--from-scratch", o.from_scratch, "Randomly initialise the trained base parts (configs from --model)");
  cmd->add_option("--resolution", o.resolution, "Training image size")->capture_default_str();
  cmd->add_option("--batch-size", o.batch_size, "Samples per step")->capture_default_str();
  cmd->add_option("--steps", o.steps, "Optimizer steps (0: --epochs)")->capture_default_str();
  cmd->add_option("--epochs", o.epochs, "Epochs when --steps is 0")->capture_default_str();
  cmd->add_option("--lr", o.lr, "AdamW learning rate")->capture_default_str();
  cmd->add_option("--lr-schedule", o.lr_schedule, "constant, or cosine (decays towards 0 by the last step)")
      ->capture_default_str();
  cmd->add_option("--warmup-steps", o.warmup_steps, "Steps of linear learning-rate warm-up from 0")->capture_default_str();
  cmd->add_option("--beta1", o.beta1)->capture_default_str();
  cmd->add_option("--beta2", o.beta2)->capture_default_str();
  cmd->add_option("--adam-eps", o.adam_eps)->capture_default_str();
  cmd->add_option("--weight-decay", o.weight_decay)->capture_default_str();
  cmd->add_option("--grad-accum", o.grad_accum, "Micro-batches per step")->capture_default_str();
  cmd->add_option("--max-grad-norm", o.max_grad_norm, "Clip the gradient norm (0: off)")->capture_default_str();
  cmd->add_option("--prompt-dropout", o.prompt_dropout, "Fraction of prompts replaced by \"\"")->capture_default_str();
  cmd->add_option("--kl-weight", o.kl_weight, "VAE training: KL weight")->capture_default_str();
  cmd->add_flag("--unlock-sd", o.unlock_sd, "Also train the UNet decoder (sd_locked = False)");
  cmd->add_flag("--only-mid-control", o.only_mid_control, "Use only the mid-block residual");
  cmd->add_flag("--latent-sample", o.latent_sample, "Sample latents from the VAE posterior instead of its mean");
  cmd->add_option("--seed", o.seed)->capture_default_str();
  cmd->add_option("--save-every", o.save_every, "Checkpoint every N steps (0: at the end)")->capture_default_str();
  cmd->add_option("--sample-every", o.sample_every, "Validation image every N steps")->capture_default_str();
  cmd->add_option("--validation-prompt", o.validation_prompt);
  cmd->add_option("--validation-image", o.validation_image);
  cmd->add_option("--resume", o.resume, "Continue the run whose output folder this is");
  cmd->add_option("--log-every", o.log_every)->capture_default_str();
}

void add_dataset_command(CLI::App& app) {
  auto* dataset = app.add_subcommand("dataset", "Create training datasets");
  dataset->require_subcommand(1);
  static std::string out;
  static int64_t count = 1000;
  static int size = 64;
  static uint64_t seed = 0;
  auto* fill = add_command(*dataset, "fill", "Fill50K-style circles: outline -> filled disk with named colours", [] {
    train::write_fill_dataset(out, count, size, seed);
    std::cout << "wrote " << count << " samples to " << out << "\n";
    return 0;
  });
  fill->add_option("--out", out, "Output folder")->required();
  fill->add_option("--count", count)->capture_default_str();
  fill->add_option("--size", size, "Image size in pixels")->capture_default_str();
  fill->add_option("--seed", seed)->capture_default_str();
}

}  // namespace cn::cli
