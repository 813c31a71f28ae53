#pragma once
// Noise schedules and step plans with the semantics of diffusers 0.27 schedulers
// (timestep spacing, sigma interpolation, Karras sigmas), so a sampler here
// visits exactly the timesteps and noise levels the reference does.
#include <torch/torch.h>

#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace cn::sampling {

// The training-time diffusion process of a model (its scheduler_config.json).
struct NoiseSchedule {
  int64_t train_steps = 1000;
  torch::Tensor betas;           // [train_steps] float32
  torch::Tensor alphas_cumprod;  // [train_steps] float32
  std::string prediction_type = "epsilon";  // or v_prediction
  int64_t steps_offset = 1;
  bool set_alpha_to_one = false;
  std::string timestep_spacing;  // leading | trailing | linspace; empty: the sampler's default

  // Keys absent from `config` take diffusers' class defaults.
  static NoiseSchedule from_json(const nlohmann::json& config);
  // SD's scaled_linear schedule (beta 0.00085 .. 0.012), for models without a scheduler config.
  static NoiseSchedule stable_diffusion(const std::string& prediction_type = "epsilon");

  bool v_prediction() const { return prediction_type == "v_prediction"; }
  double alpha_cumprod(int64_t t) const;

  // sqrt(a_t) x0 + sqrt(1 - a_t) noise, per-sample integer timesteps [B].
  torch::Tensor add_noise(const torch::Tensor& x0, const torch::Tensor& noise, const torch::Tensor& timesteps) const;
  // The v-prediction target sqrt(a_t) noise - sqrt(1 - a_t) x0.
  torch::Tensor velocity(const torch::Tensor& x0, const torch::Tensor& noise, const torch::Tensor& timesteps) const;
};

enum class SamplerKind { ddim, pndm, euler, euler_ancestral, lms, dpmpp_2m, unipc };

// A sampler by name and its sigma schedule.
struct SamplerSpec {
  SamplerKind kind;
  bool karras = false;
  std::string name;  // canonical, e.g. "dpmpp_2m_karras"
};

// "ddim", "pndm" (alias "plms"), "euler", "euler_a", "lms", "dpmpp_2m", "unipc";
// a "_karras" suffix or schedule "karras" selects Karras sigmas (for the
// sigma-based samplers). Unknown names throw cn::Error listing the valid ones.
SamplerSpec resolve_sampler(const std::string& name, const std::string& schedule = "default");
std::vector<std::string> sampler_names();

// One generation's steps: what set_timesteps(N) computes.
struct Plan {
  SamplerSpec sampler;
  int64_t inference_steps = 0;
  std::vector<torch::Tensor> timesteps;  // per loop iteration, 0-dim, dtype as passed to the model
  std::vector<double> sigmas;            // [iterations + 1] (float32 values), empty for DDIM/PNDM
  double init_noise_sigma = 1.0;
  int64_t start = 0;                     // first loop iteration run (img2img skips the first ones)

  int64_t loop_iterations() const { return static_cast<int64_t>(timesteps.size()); }
  // Whether the state is x0 + sigma * noise (k-diffusion style: Euler, Euler-a,
  // LMS) rather than sqrt(a) x0 + sqrt(1 - a) noise.
  bool sigma_scaled_state() const;
  // The factor scale_model_input applies at iteration i (1/sqrt(sigma^2 + 1) or 1).
  double input_scale(int64_t i) const;
};

Plan make_plan(const SamplerSpec& sampler, const NoiseSchedule& schedule, int64_t steps);

// img2img: keeps the last `strength` fraction of the steps (diffusers'
// get_timesteps) and returns x0 noised to the first kept step.
torch::Tensor start_from_image(Plan& plan, const NoiseSchedule& schedule, double strength, const torch::Tensor& x0,
                               const torch::Tensor& noise);

}  // namespace cn::sampling
