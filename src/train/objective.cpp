#include "train/objective.h"

#include "train/checkpoint.h"

namespace cn::train {

DiffusionOutputs diffusion_loss(models::UNet2DConditionModel& unet, models::ControlNetModel* controlnet,
                                const sampling::NoiseSchedule& schedule, const DiffusionInputs& in,
                                const DiffusionOptions& options) {
  DiffusionOutputs out;
  out.noisy_latents = schedule.add_noise(in.latents, in.noise, in.timesteps);
  const auto dtype = unet->parameters().front().scalar_type();
  const auto sample = out.noisy_latents.to(dtype), context = in.context.to(dtype);
  if (controlnet) {
    const auto net = controlnet->ptr();
    // The whole ControlNet (hint encoder, trunk, zero convolutions) as one
    // segment: its residuals are all the locked UNet needs from it.
    const Segment run = [net](const std::vector<torch::Tensor>& x) {
      auto residuals = net->forward(x[0], x[1], x[2], net->embed_hint(x[3]));
      auto flat = residuals.down;
      flat.push_back(residuals.mid);
      return flat;
    };
    const std::vector<torch::Tensor> inputs{sample, in.timesteps, context, in.hint};
    std::vector<torch::Tensor> flat;
    if (options.checkpoint_controlnet) {
      std::vector<torch::Tensor> trainable;
      for (const auto& p : net->parameters())
        if (p.requires_grad()) trainable.push_back(p);
      flat = checkpoint(run, inputs, trainable);
    } else {
      flat = run(inputs);
    }
    out.residuals.mid = flat.back();
    out.residuals.down.assign(flat.begin(), flat.end() - 1);
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
