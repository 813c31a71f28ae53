#include "train/objective.h"

namespace cn::train {

DiffusionOutputs diffusion_loss(models::UNet2DConditionModel& unet, models::ControlNetModel* controlnet,
                                const sampling::NoiseSchedule& schedule, const DiffusionInputs& in,
                                bool only_mid_control) {
  DiffusionOutputs out;
  out.noisy_latents = schedule.add_noise(in.latents, in.noise, in.timesteps);
  if (controlnet) {
    auto hint = (*controlnet)->embed_hint(in.hint);
    out.residuals = (*controlnet)->forward(out.noisy_latents, in.timesteps, in.context, hint);
    if (only_mid_control)
      for (auto& r : out.residuals.down) r = torch::zeros_like(r);
  }
  out.prediction = unet->forward(out.noisy_latents, in.timesteps, in.context,
                                 controlnet ? &out.residuals : nullptr);
  const auto target = schedule.v_prediction() ? schedule.velocity(in.latents, in.noise, in.timesteps) : in.noise;
  out.loss = torch::mse_loss(out.prediction.to(torch::kFloat), target.to(torch::kFloat));
  return out;
}

std::vector<std::string> drop_prompts(std::vector<std::string> prompts, double p, torch::Generator& rng) {
  auto draws = torch::rand({int64_t(prompts.size())}, rng);
  for (size_t i = 0; i < prompts.size(); ++i)
    if (draws[i].item<double>() < p) prompts[i].clear();
  return prompts;
}

}  // namespace cn::train
