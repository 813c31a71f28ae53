#include "sampling/schedule.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "controlnet/error.h"

namespace cn::sampling {
namespace {

using json = nlohmann::json;

// sigma(t) = sqrt((1 - a_t) / a_t) over the training steps, float32 like the reference.
std::vector<double> training_sigmas(const NoiseSchedule& s) {
  auto sig = ((1 - s.alphas_cumprod) / s.alphas_cumprod).sqrt().contiguous();
  return std::vector<double>(sig.data_ptr<float>(), sig.data_ptr<float>() + sig.numel());
}

// Linear interpolation of `values` (given at 0, 1, 2, ...) at fractional `x` (numpy.interp).
double interp(double x, const std::vector<double>& values) {
  if (x <= 0) return values.front();
  if (x >= values.size() - 1) return values.back();
  const auto i = static_cast<size_t>(std::floor(x));
  // numpy's formulation, so results round the same way.
  const double slope = values[i + 1] - values[i];
  return slope * (x - double(i)) + values[i];
}

// The fractional training timestep of a sigma, interpolating log-sigmas
// (diffusers' _sigma_to_t).
double sigma_to_t(double sigma, const std::vector<double>& log_sigmas) {
  const double log_sigma = std::log(std::max(sigma, 1e-10));
  int64_t low = 0;
  for (size_t i = 0; i < log_sigmas.size(); ++i)
    if (log_sigma - log_sigmas[i] >= 0) low = i;
  low = std::min<int64_t>(low, log_sigmas.size() - 2);
  const double lo = log_sigmas[low], hi = log_sigmas[low + 1];
  const double w = std::clamp((lo - log_sigma) / (lo - hi), 0.0, 1.0);
  return (1 - w) * low + w * (low + 1);
}

// Karras et al. (2022) sigmas between the schedule's extremes, rho = 7.
std::vector<double> karras_sigmas(double sigma_min, double sigma_max, int64_t n) {
  const double rho = 7.0, min_inv = std::pow(sigma_min, 1 / rho), max_inv = std::pow(sigma_max, 1 / rho);
  std::vector<double> out;
  for (int64_t i = 0; i < n; ++i) {
    const double ramp = n == 1 ? 0.0 : double(i) / double(n - 1);
    out.push_back(std::pow(max_inv + ramp * (min_inv - max_inv), rho));
  }
  return out;
}

double to_float32(double v) { return static_cast<double>(static_cast<float>(v)); }

const std::vector<std::pair<std::string, SamplerKind>> kSamplers = {
    {"ddim", SamplerKind::ddim},          {"pndm", SamplerKind::pndm},   {"plms", SamplerKind::pndm},
    {"euler", SamplerKind::euler},        {"euler_a", SamplerKind::euler_ancestral},
    {"euler_ancestral", SamplerKind::euler_ancestral},
    {"lms", SamplerKind::lms},            {"dpmpp_2m", SamplerKind::dpmpp_2m}, {"unipc", SamplerKind::unipc},
};

}  // namespace

NoiseSchedule NoiseSchedule::from_json(const json& config) {
  NoiseSchedule s;
  double beta_start = 0.00085, beta_end = 0.012;
  std::string beta_schedule = "scaled_linear";
  try {
    s.train_steps = config.value("num_train_timesteps", s.train_steps);
    beta_start = config.value("beta_start", beta_start);
    beta_end = config.value("beta_end", beta_end);
    beta_schedule = config.value("beta_schedule", beta_schedule);
    s.prediction_type = config.value("prediction_type", s.prediction_type);
    s.steps_offset = config.value("steps_offset", int64_t(0));
    s.set_alpha_to_one = config.value("set_alpha_to_one", false);
    if (config.contains("timestep_spacing") && !config["timestep_spacing"].is_null())
      s.timestep_spacing = config["timestep_spacing"];
    if (config.contains("trained_betas") && !config["trained_betas"].is_null())
      throw Error("scheduler config: \"trained_betas\" is not supported");
  } catch (const json::exception& e) {
    throw Error(std::string("scheduler config: ") + e.what());
  }
  if (s.prediction_type != "epsilon" && s.prediction_type != "v_prediction")
    throw Error("scheduler config: unsupported \"prediction_type\": " + s.prediction_type);
  if (beta_schedule == "scaled_linear")
    s.betas = torch::linspace(std::sqrt(beta_start), std::sqrt(beta_end), s.train_steps, torch::kFloat).pow(2);
  else if (beta_schedule == "linear")
    s.betas = torch::linspace(beta_start, beta_end, s.train_steps, torch::kFloat);
  else
    throw Error("scheduler config: unsupported \"beta_schedule\": " + beta_schedule);
  s.alphas_cumprod = torch::cumprod(1 - s.betas, 0);
  return s;
}

NoiseSchedule NoiseSchedule::stable_diffusion(const std::string& prediction_type) {
  return from_json({{"beta_schedule", "scaled_linear"},
                    {"beta_start", 0.00085},
                    {"beta_end", 0.012},
                    {"num_train_timesteps", 1000},
                    {"steps_offset", 1},
                    {"set_alpha_to_one", false},
                    {"prediction_type", prediction_type}});
}

double NoiseSchedule::alpha_cumprod(int64_t t) const { return alphas_cumprod[t].item<double>(); }

torch::Tensor NoiseSchedule::add_noise(const torch::Tensor& x0, const torch::Tensor& noise,
                                       const torch::Tensor& timesteps) const {
  auto a = alphas_cumprod.to(x0.device()).index_select(0, timesteps.to(x0.device()).to(torch::kLong).reshape({-1}));
  a = a.view({-1, 1, 1, 1}).to(x0.scalar_type());
  return a.sqrt() * x0 + (1 - a).sqrt() * noise;
}

torch::Tensor NoiseSchedule::velocity(const torch::Tensor& x0, const torch::Tensor& noise,
                                      const torch::Tensor& timesteps) const {
  auto a = alphas_cumprod.to(x0.device()).index_select(0, timesteps.to(x0.device()).to(torch::kLong).reshape({-1}));
  a = a.view({-1, 1, 1, 1}).to(x0.scalar_type());
  return a.sqrt() * noise - (1 - a).sqrt() * x0;
}

std::vector<std::string> sampler_names() {
  return {"ddim", "pndm", "euler", "euler_a", "lms", "dpmpp_2m", "dpmpp_2m_karras", "unipc"};
}

SamplerSpec resolve_sampler(const std::string& name, const std::string& schedule) {
  if (schedule != "default" && schedule != "karras")
    throw Error("unknown schedule '" + schedule + "' (valid: default, karras)");
  std::string base = name;
  bool karras = schedule == "karras";
  const std::string suffix = "_karras";
  if (base.size() > suffix.size() && base.compare(base.size() - suffix.size(), suffix.size(), suffix) == 0) {
    base.resize(base.size() - suffix.size());
    karras = true;
  }
  for (const auto& [key, kind] : kSamplers) {
    if (key != base) continue;
    if (karras && (kind == SamplerKind::ddim || kind == SamplerKind::pndm || kind == SamplerKind::euler_ancestral))
      throw Error("sampler '" + base + "' has no Karras schedule (use it with euler, lms, dpmpp_2m or unipc)");
    return {kind, karras, base + (karras ? suffix : "")};
  }
  std::string valid;
  for (const auto& n : sampler_names()) valid += (valid.empty() ? "" : ", ") + n;
  throw Error("unknown sampler '" + name + "' (valid: " + valid + ")");
}

bool Plan::sigma_scaled_state() const {
  return sampler.kind == SamplerKind::euler || sampler.kind == SamplerKind::euler_ancestral ||
         sampler.kind == SamplerKind::lms;
}

double Plan::input_scale(int64_t i) const {
  if (!sigma_scaled_state()) return 1.0;
  return 1.0 / std::sqrt(sigmas[i] * sigmas[i] + 1.0);
}

Plan make_plan(const SamplerSpec& sampler, const NoiseSchedule& schedule, int64_t steps) {
  if (steps < 1 || steps > schedule.train_steps)
    throw Error("steps must be between 1 and " + std::to_string(schedule.train_steps));
  Plan plan;
  plan.sampler = sampler;
  plan.inference_steps = steps;
  const int64_t T = schedule.train_steps;
  const bool leading_default = sampler.kind == SamplerKind::ddim || sampler.kind == SamplerKind::pndm;
  const std::string spacing =
      schedule.timestep_spacing.empty() ? (leading_default ? "leading" : "linspace") : schedule.timestep_spacing;

  // Timesteps in descending order, before dtype conversion.
  std::vector<double> t;
  const bool multistep = sampler.kind == SamplerKind::dpmpp_2m || sampler.kind == SamplerKind::unipc;
  if (spacing == "leading") {
    // DPM++ and UniPC space N + 1 points and drop the last, as with linspace.
    const int64_t ratio = multistep ? T / (steps + 1) : T / steps;
    for (int64_t i = multistep ? steps : steps - 1; i >= (multistep ? 1 : 0); --i)
      t.push_back(double(i * ratio + schedule.steps_offset));
  } else if (spacing == "trailing") {
    const double ratio = double(T) / steps;
    for (double v = T; v > 0; v -= ratio) t.push_back(std::round(v) - 1);
  } else if (spacing == "linspace") {
    // DPM++ and UniPC take N of N + 1 points (dropping 0) and round them.
    const int64_t points = multistep ? steps + 1 : steps;
    for (int64_t i = points - 1; i >= (multistep ? 1 : 0); --i) {
      // numpy.linspace: i * step, with the end point exact.
      const double step = points == 1 ? 0.0 : double(T - 1) / double(points - 1);
      const double v = i == points - 1 ? double(T - 1) : double(i) * step;
      // Euler/LMS space in float32 (numpy linspace with dtype float32) before
      // interpolating their sigmas; DPM++/UniPC round to integers.
      t.push_back(multistep ? std::round(v) : to_float32(v));
    }
  } else {
    throw Error("scheduler config: unsupported \"timestep_spacing\": " + spacing);
  }

  const bool sigma_based = !leading_default;
  if (sigma_based) {
    const auto train = training_sigmas(schedule);
    std::vector<double> log_sigmas;
    for (double s : train) log_sigmas.push_back(to_float32(std::log(s)));
    std::vector<double> sig;
    if (sampler.karras) {
      std::vector<double> at_t;
      for (double v : t) at_t.push_back(interp(v, train));
      // Euler/LMS interpolate first and then space the range; DPM++/UniPC space
      // the whole training range.
      const double lo = multistep ? train.front() : at_t.back(), hi = multistep ? train.back() : at_t.front();
      sig = karras_sigmas(lo, hi, steps);
      t.clear();
      for (double s : sig) t.push_back(multistep ? std::round(sigma_to_t(s, log_sigmas)) : sigma_to_t(s, log_sigmas));
    } else {
      for (double v : t) sig.push_back(interp(v, train));
    }
    // UniPC ends at the smallest training sigma, the others at zero.
    sig.push_back(sampler.kind == SamplerKind::unipc ? train.front() : 0.0);
    for (double s : sig) plan.sigmas.push_back(to_float32(s));
    if (plan.sigma_scaled_state()) {
      const double max_sigma = *std::max_element(plan.sigmas.begin(), plan.sigmas.end());
      plan.init_noise_sigma = spacing == "leading" ? std::sqrt(max_sigma * max_sigma + 1) : max_sigma;
    }
  }
  if (sampler.kind == SamplerKind::pndm) {
    // PLMS without Runge-Kutta warm-up repeats the second timestep: N + 1 iterations.
    t.insert(t.begin() + 1, t[1 < t.size() ? 1 : 0]);
  }
  const bool float_timesteps = plan.sigma_scaled_state();
  for (double v : t)
    plan.timesteps.push_back(float_timesteps ? torch::tensor(static_cast<float>(v))
                                             : torch::tensor(static_cast<int64_t>(std::llround(v))));
  return plan;
}

torch::Tensor start_from_image(Plan& plan, const NoiseSchedule& schedule, double strength, const torch::Tensor& x0,
                               const torch::Tensor& noise) {
  const int64_t n = plan.inference_steps;
  const int64_t kept = std::min<int64_t>(static_cast<int64_t>(n * strength), n);
  plan.start = std::max<int64_t>(n - kept, 0);
  if (plan.start >= plan.loop_iterations()) throw Error("strength too low: no denoising step would run");
  if (plan.sigma_scaled_state()) return x0 + noise * plan.sigmas[plan.start];
  return schedule.add_noise(x0, noise, plan.timesteps[plan.start].reshape({1}).expand({x0.size(0)}));
}

}  // namespace cn::sampling
