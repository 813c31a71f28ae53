#pragma once
// The guided denoiser: what a sampler calls once per step. It runs the
// ControlNets active at that step, the UNet with their residuals, and
// classifier-free guidance, with diffusers' StableDiffusionControlNetPipeline
// semantics (batch order [uncond, cond], guess mode, start/end windows) and
// sd-webui-controlnet's control modes.
#include <torch/torch.h>

#include <functional>
#include <vector>

#include "controlnet/pipeline.h"
#include "models/controlnet.h"
#include "models/unet.h"

namespace cn::pipeline {

struct ActiveControlNet {
  models::ControlNetModel net;
  torch::Tensor hint_embedding;  // embed_hint(image) for one image [1, C, h, w], computed once
  double scale = 1.0;
  double start = 0.0;
  double end = 1.0;
  ControlMode mode = ControlMode::balanced;
};

// Text conditioning of one batch. `uncond` is undefined when guidance is off.
struct PromptEmbeddings {
  torch::Tensor cond;    // [B, T, C]
  torch::Tensor uncond;  // [B, T, C]
};

// What one step produced, for observers (tests compare these with the goldens).
struct StepOutputs {
  torch::Tensor noise_pred_uncond;  // undefined without guidance
  torch::Tensor noise_pred_text;
  torch::Tensor noise_pred;  // guided, float32
};

class GuidedDenoiser {
 public:
  GuidedDenoiser(models::UNet2DConditionModel unet, PromptEmbeddings prompts, double guidance_scale,
                 std::vector<ActiveControlNet> controls, bool guess_mode, int64_t loop_iterations);

  // Model output (epsilon or v) for the scaled input `x` [B, 4, h, w] at
  // `timestep` (0-dim, as the sampler passes it) in loop iteration `step`.
  torch::Tensor operator()(const torch::Tensor& x, const torch::Tensor& timestep, int64_t step);

  bool guidance() const { return prompts_.uncond.defined(); }
  std::function<void(int64_t step, const StepOutputs&)> observer;

 private:
  // Summed residuals of the ControlNets active at `step`; empty when none is.
  models::ControlResiduals control_residuals(const torch::Tensor& x_in, const torch::Tensor& timestep,
                                                            const torch::Tensor& ehs, int64_t step);

  models::UNet2DConditionModel unet_;
  PromptEmbeddings prompts_;
  torch::Tensor ehs_;  // [uncond; cond] or cond
  double guidance_scale_;
  std::vector<ActiveControlNet> controls_;
  bool guess_mode_;
  int64_t loop_iterations_;
};

// Scale of residual i (0..11 down, 12 mid) for a ControlNet: guess mode uses
// diffusers' logspace(-1, 0, 13); the soft control modes use 0.825^(12 - i).
double residual_scale(int residual, double scale, ControlMode mode, bool guess_mode);

// Whether the ControlNet window [start, end] includes loop iteration `step` of
// `n` (diffusers' control_guidance_start/end rule).
bool control_active(int64_t step, int64_t n, double start, double end);

}  // namespace cn::pipeline
