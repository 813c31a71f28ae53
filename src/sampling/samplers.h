#pragma once
// Reverse-diffusion samplers as small functions of (model, x, plan, noise),
// in the spirit of k-diffusion, reproducing diffusers 0.27's scheduler steps.
#include <torch/torch.h>

#include <functional>

#include "sampling/schedule.h"

namespace cn::sampling {

// The model as a sampler sees it: raw output (epsilon or v) for the already
// scaled input at `timestep` (0-dim, as diffusers passes it) in loop iteration i.
using Model = std::function<torch::Tensor(const torch::Tensor& input, const torch::Tensor& timestep, int64_t i)>;
// Fresh standard-normal noise for iteration i (ancestral samplers, DDIM eta > 0).
using NoiseSource = std::function<torch::Tensor(int64_t i, at::IntArrayRef shape)>;
// Called after iteration i with the new latents; may throw to cancel.
using StepCallback = std::function<void(int64_t i, const torch::Tensor& x)>;

struct SamplerOptions {
  double eta = 0.0;  // DDIM stochasticity
};

// Runs iterations plan.start .. end on x (the initial latents already scaled
// by plan.init_noise_sigma, or the noised init image) and returns the final
// latents. Arithmetic is in float32 whatever the model's dtype.
torch::Tensor sample(const Model& model, torch::Tensor x, const Plan& plan, const NoiseSchedule& schedule,
                     const NoiseSource& noise, const StepCallback& on_step = {}, const SamplerOptions& options = {});

// Noise from a PyTorch-compatible CPU generator (float32 on the CPU, then
// moved to `device`), as diffusers draws it with a CPU torch.Generator.
NoiseSource generator_noise(torch::Generator generator, torch::Device device);

// torch.Generator().manual_seed(seed): LibTorch's CPU generator is the same
// mt19937 with the same normal sampling, so seeds reproduce PyTorch's draws.
torch::Generator make_cpu_generator(uint64_t seed);

}  // namespace cn::sampling
