#include "pipeline/denoise.h"

#include <cmath>

namespace cn::pipeline {

double residual_scale(int residual, double scale, ControlMode mode, bool guess_mode) {
  if (mode != ControlMode::balanced) return scale * std::pow(0.825, 12 - residual);
  if (guess_mode) {
    // diffusers: torch.logspace(-1, 0, 13) in float32, times the scale in float32.
    const float logspace = float(std::pow(10.0, -1.0 + residual / 12.0));
    return double(logspace * float(scale));
  }
  return scale;
}

bool control_active(int64_t step, int64_t n, double start, double end) {
  const double begin_fraction = double(step) / double(n);
  const double end_fraction = double(step + 1) / double(n);
  return !(begin_fraction < start || end_fraction > end);
}

GuidedDenoiser::GuidedDenoiser(models::UNet2DConditionModel unet, PromptEmbeddings prompts, double guidance_scale,
                               std::vector<ActiveControlNet> controls, bool guess_mode, int64_t loop_iterations)
    : unet_(std::move(unet)),
      prompts_(std::move(prompts)),
      guidance_scale_(guidance_scale),
      controls_(std::move(controls)),
      guess_mode_(guess_mode),
      loop_iterations_(loop_iterations) {
  ehs_ = guidance() ? torch::cat({prompts_.uncond, prompts_.cond}) : prompts_.cond;
}

models::ControlResiduals GuidedDenoiser::control_residuals(const torch::Tensor& x_in,
                                                                          const torch::Tensor& timestep,
                                                                          const torch::Tensor& ehs, int64_t step) {
  models::ControlResiduals total;
  const int64_t batch = prompts_.cond.size(0);
  for (auto& unit : controls_) {
    if (unit.scale == 0.0 || !control_active(step, loop_iterations_, unit.start, unit.end)) continue;
    // Guess mode and "ControlNet is more important" run the ControlNet on the
    // conditional half only; the unconditional half gets no residual.
    const bool cond_only = guidance() && (guess_mode_ || unit.mode == ControlMode::controlnet_more_important);
    auto net_input = cond_only ? x_in.narrow(0, batch, batch) : x_in;
    auto net_ehs = cond_only ? prompts_.cond : ehs;
    auto hint = unit.hint_embedding.expand({net_input.size(0), -1, -1, -1});
    auto residuals = unit.net->forward(net_input, timestep, net_ehs, hint, 1.0, false);
    auto apply = [&](torch::Tensor r, int index) {
      r = r * residual_scale(index, unit.scale, unit.mode, guess_mode_);
      return cond_only ? torch::cat({torch::zeros_like(r), r}) : r;
    };
    for (size_t i = 0; i < residuals.down.size(); ++i) residuals.down[i] = apply(residuals.down[i], int(i));
    residuals.mid = apply(residuals.mid, int(residuals.down.size()));
    total.accumulate(residuals);
  }
  return total;
}

torch::Tensor GuidedDenoiser::operator()(const torch::Tensor& x, const torch::Tensor& timestep, int64_t step) {
  torch::NoGradGuard no_grad;
  const auto model_dtype = ehs_.scalar_type();
  auto x_in = (guidance() ? torch::cat({x, x}) : x).to(model_dtype);
  auto residuals = control_residuals(x_in, timestep, ehs_, step);
  auto out = unet_->forward(x_in, timestep, ehs_, &residuals).to(torch::kFloat32);
  StepOutputs outputs;
  if (guidance()) {
    auto halves = out.chunk(2);
    outputs.noise_pred_uncond = halves[0];
    outputs.noise_pred_text = halves[1];
    outputs.noise_pred = halves[0] + guidance_scale_ * (halves[1] - halves[0]);
  } else {
    outputs.noise_pred_text = out;
    outputs.noise_pred = out;
  }
  if (observer) observer(step, outputs);
  return outputs.noise_pred;
}

}  // namespace cn::pipeline
