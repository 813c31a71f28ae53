#pragma once
// The diffusion training objective (the ControlNet paper's, eq. 4): MSE between
// the noise (or v) and the UNet's prediction for noised latents, with text
// and, for a ControlNet, the condition image.
#include <torch/torch.h>

#include "models/controlnet.h"
#include "models/unet.h"
#include "sampling/schedule.h"

namespace cn::train {

struct DiffusionInputs {
  torch::Tensor latents;    // [B, 4, h, w], already scaled by the VAE factor
  torch::Tensor context;    // [B, T, C] text conditioning
  torch::Tensor noise;      // [B, 4, h, w]
  torch::Tensor timesteps;  // [B] int64
  torch::Tensor hint;       // [B, 3, H, W] in [0, 1] (ControlNet only)
};

struct DiffusionOutputs {
  torch::Tensor loss;  // scalar float32
  torch::Tensor noisy_latents;
  torch::Tensor prediction;
  models::ControlResiduals residuals;  // empty without a ControlNet
};

struct DiffusionOptions {
  bool only_mid_control = false;  // keep only the mid-block residual (the original code's option)
};

// Loss of the UNet alone (base training) or steered by `controlnet` (may be
// empty). The models run in their parameters' dtype (latents and context are
// cast to it); the loss is computed in fp32. Gradients flow to whatever
// requires them.
DiffusionOutputs diffusion_loss(models::UNet2DConditionModel& unet, models::ControlNetModel* controlnet,
                                const sampling::NoiseSchedule& schedule, const DiffusionInputs& in,
                                const DiffusionOptions& options = {});

// Replaces prompt i by "" when draws[i] < p (draws uniform in [0, 1), one per
// prompt). The paper drops 50 %, so the ControlNet learns to read semantics
// from the condition alone.
std::vector<std::string> drop_prompts(std::vector<std::string> prompts, double p, const torch::Tensor& draws);

}  // namespace cn::train
