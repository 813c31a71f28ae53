#include <gtest/gtest.h>

#include <fstream>

#include "controlnet/error.h"
#include "sampling/samplers.h"
#include "support/golden.h"

using namespace cn;
using cn::testing::expect_golden;
using cn::testing::golden_root;
using cn::testing::GoldenCase;

namespace {

nlohmann::json read_manifest(const std::string& folder) {
  std::ifstream in(golden_root() / folder / "manifest.json");
  return nlohmann::json::parse(in);
}

// The golden's scheduler names -> ours.
sampling::SamplerSpec sampler_of(const std::string& scheduler) {
  if (scheduler == "euler_ancestral") return sampling::resolve_sampler("euler_a");
  if (scheduler == "pndm_plms") return sampling::resolve_sampler("pndm");
  return sampling::resolve_sampler(scheduler);
}

}  // namespace

TEST(Samplers, ReproduceReferenceTrajectories) {
  CN_REQUIRE_GOLDEN();
  const auto manifest = read_manifest("schedulers");
  ASSERT_FALSE(manifest.at("trajectories").empty());
  for (const auto& [name, trajectory] : manifest.at("trajectories").items()) {
    SCOPED_TRACE(name);
    GoldenCase c(golden_root() / "schedulers", trajectory, "schedulers/" + name);
    const auto schedule = sampling::NoiseSchedule::from_json(trajectory.at("config"));
    const auto plan = sampling::make_plan(sampler_of(trajectory.at("scheduler")), schedule,
                                          trajectory.at("num_inference_steps").get<int64_t>());

    ASSERT_EQ(plan.loop_iterations(), trajectory.at("num_timesteps_in_loop").get<int64_t>());
    EXPECT_NEAR(plan.init_noise_sigma, trajectory.at("init_noise_sigma").get<double>(), 1e-5);
    auto timesteps = c.get("timesteps");
    auto factors = c.get("scale_model_input_factors");
    for (int64_t i = 0; i < plan.loop_iterations(); ++i) {
      EXPECT_EQ(plan.timesteps[i].scalar_type(), timesteps.scalar_type()) << "step " << i;
      EXPECT_EQ(plan.timesteps[i].item<double>(), timesteps[i].item<double>()) << "timestep " << i;
      EXPECT_NEAR(plan.input_scale(i), factors[i].item<double>(), 1e-7) << "scale_model_input " << i;
    }
    if (c.has("sigmas")) {
      auto sigmas = c.get("sigmas");
      ASSERT_EQ(int64_t(plan.sigmas.size()), sigmas.numel());
      for (int64_t i = 0; i < sigmas.numel(); ++i)
        EXPECT_EQ(float(plan.sigmas[i]), sigmas[i].item<float>()) << "sigma " << i;
    }

    // Feed the recorded model outputs (and ancestral noise); compare every sample.
    auto model = [&](const torch::Tensor& input, const torch::Tensor& t, int64_t i) {
      EXPECT_EQ(t.item<double>(), timesteps[i].item<double>());
      return c.get("model_output_" + std::to_string(i));
    };
    auto noise = [&](int64_t i, at::IntArrayRef) { return c.get("noise_" + std::to_string(i)); };
    sampling::sample(model, c.get("sample_0"), plan, schedule, noise, [&](int64_t i, const torch::Tensor& x) {
      expect_golden(c, "sample_" + std::to_string(i + 1), x);
    });
  }
}

TEST(Samplers, AddNoiseAndVelocity) {
  CN_REQUIRE_GOLDEN();
  const auto manifest = read_manifest("schedulers");
  const auto& section = manifest.at("ddpm_add_noise");
  auto tensors = nlohmann::json::object();
  for (const char* name : {"noisy_samples", "velocity", "alphas_cumprod", "betas"})
    tensors[name] = {{"suggested_atol", section.contains(name) ? section[name].value("suggested_atol", 5e-6) : 5e-6}};
  GoldenCase c(golden_root() / "schedulers", {{"file", section.at("file")}, {"tensors", tensors}},
               "schedulers/ddpm_add_noise");
  const auto schedule = sampling::NoiseSchedule::from_json(section.at("config"));
  expect_golden(c, "betas", schedule.betas);
  expect_golden(c, "alphas_cumprod", schedule.alphas_cumprod);
  auto x0 = c.get("original_samples"), noise = c.get("noise"), t = c.get("timesteps");
  expect_golden(c, "noisy_samples", schedule.add_noise(x0, noise, t));
  expect_golden(c, "velocity", schedule.velocity(x0, noise, t));
}

TEST(Rng, MatchesPyTorchCpuGenerator) {
  CN_REQUIRE_GOLDEN();
  const auto manifest = read_manifest("rng");
  auto data = io::SafetensorsFile::open((golden_root() / "rng" / "randn.safetensors").string());
  ASSERT_FALSE(manifest.at("cases").empty());
  for (const auto& rng_case : manifest.at("cases")) {
    const std::string name = rng_case.at("name");
    SCOPED_TRACE(name);
    auto generator = sampling::make_cpu_generator(rng_case.at("seed").get<uint64_t>());
    auto shape = rng_case.at("shape").get<std::vector<int64_t>>();
    auto first = torch::randn(shape, generator);
    auto next = torch::randn({1, 4, 8, 8}, generator);
    EXPECT_TRUE(first.equal(data->tensor(name))) << "first draw differs";
    EXPECT_TRUE(next.equal(data->tensor(name + "_next"))) << "second draw differs";
  }
}

TEST(Samplers, NamesAndErrors) {
  EXPECT_EQ(sampling::resolve_sampler("dpmpp_2m_karras").name, "dpmpp_2m_karras");
  EXPECT_TRUE(sampling::resolve_sampler("euler", "karras").karras);
  try {
    sampling::resolve_sampler("heun");
    FAIL() << "accepted an unknown sampler";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("euler_a"), std::string::npos) << e.what();
  }
  EXPECT_THROW(sampling::resolve_sampler("ddim", "karras"), Error);
  EXPECT_THROW(sampling::resolve_sampler("euler", "exponential"), Error);
}

TEST(Samplers, Img2ImgStartsPartWay) {
  auto schedule = sampling::NoiseSchedule::stable_diffusion();
  auto plan = sampling::make_plan(sampling::resolve_sampler("ddim"), schedule, 20);
  auto x0 = torch::zeros({1, 4, 8, 8}), noise = torch::ones({1, 4, 8, 8});
  auto start = sampling::start_from_image(plan, schedule, 0.5, x0, noise);
  EXPECT_EQ(plan.start, 10);
  const double a = schedule.alpha_cumprod(plan.timesteps[10].item<int64_t>());
  EXPECT_NEAR(start.mean().item<double>(), std::sqrt(1 - a), 1e-6);
  auto euler = sampling::make_plan(sampling::resolve_sampler("euler"), schedule, 20);
  auto euler_start = sampling::start_from_image(euler, schedule, 0.25, x0, noise);
  EXPECT_EQ(euler.start, 15);
  EXPECT_NEAR(euler_start.mean().item<double>(), euler.sigmas[15], 1e-6);
}
