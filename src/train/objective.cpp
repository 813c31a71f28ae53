#include "train/objective.h"

namespace cn::train {

DiffusionOutputs diffusion_loss(models::UNet2DConditionModel& unet, models::ControlNetModel* controlnet,
                                const sampling::NoiseSchedule& schedule, const DiffusionInputs& in,
                                const DiffusionOptions& options) {
  DiffusionOutputs out;
  out.noisy_latents = schedule.add_noise(in.latents, in.noise, in.timesteps);
  const auto dtype = unet->parameters().front().scalar_type();
  const auto sample = out.noisy_latents.to(dtype), context = in.context.to(dtype);
  if (controlnet) {
    out.residuals = (*controlnet)->forward(sample, in.timesteps, context, (*controlnet)->embed_hint(in.hint));
    if (options.only_mid_control)
      for (auto& r : out.residuals.down) r = torch::zeros_like(r);
  }
  out.prediction = unet->forward(sample, in.timesteps, context, controlnet ? &out.residuals : nullptr);
  const auto target = schedule.v_prediction() ? schedule.velocity(in.latents, in.noise, in.timesteps) : in.noise;
  out.loss = torch::mse_loss(out.prediction.to(torch::kFloat), target.to(torch::kFloat));
  return out;
}

std::vector<std::string> drop_prompts(std::vector<std::string> prompts, double p, const torch::Tensor& draws) {
  TORCH_CHECK(draws.numel() == int64_t(prompts.size()), "drop_prompts: one draw per prompt");
  auto values = draws.to(torch::kDouble).contiguous();
  for (size_t i = 0; i < prompts.size(); ++i)
    if (values.data_ptr<double>()[i] < p) prompts[i].clear();
  return prompts;
}

}  // namespace cn::train
