// Every golden end-to-end run (golden/*/cases/e2e_*) reproduced from its saved
// inputs: prompt ids and embeddings, initial latents, control images, and (for
// ancestral samplers) the noise drawn at each step. Compared per step: the
// UNet's conditional/unconditional outputs, the guided prediction, the latents;
// then the decoded image.
#include <gtest/gtest.h>

#include "io/checkpoint.h"
#include "models/vae.h"
#include "nn/weights.h"
#include "pipeline/denoise.h"
#include "pipeline/prompt.h"
#include "sampling/samplers.h"
#include "support/golden.h"

namespace {

using cn::testing::expect_golden;
using cn::testing::GoldenCase;

template <typename Model, typename Config>
Model build(const cn::io::Component& c) {
  Model model(Config::from_json(c.config));
  cn::nn::load_weights(*model, c.weights, c.source);
  model->eval();
  return model;
}

std::vector<std::string> controlnet_paths(const GoldenCase& c) {
  std::vector<std::string> out;
  const auto& models = c.manifest().at("models");
  if (!models.contains("controlnet")) return out;
  const auto& entry = models.at("controlnet");
  if (entry.is_string()) {
    out.push_back(c.model("controlnet").string());
  } else {
    for (const auto& rel : entry) out.push_back(std::filesystem::weakly_canonical(c.dir() / rel.get<std::string>()).string());
  }
  return out;
}

template <typename T>
T param_or(const nlohmann::json& params, const std::string& key, size_t index, T fallback) {
  if (!params.contains(key) || params[key].is_null()) return fallback;
  const auto& v = params[key];
  return v.is_array() ? v.at(index).get<T>() : v.get<T>();
}

// Maps the manifest's scheduler name to our sampler.
cn::sampling::SamplerSpec sampler_of(const std::string& scheduler) {
  if (scheduler == "euler_ancestral") return cn::sampling::resolve_sampler("euler_a");
  if (scheduler == "pndm_plms") return cn::sampling::resolve_sampler("pndm");
  return cn::sampling::resolve_sampler(scheduler);
}

}  // namespace

TEST(EndToEnd, EveryGoldenRunMatchesStepByStep) {
  CN_REQUIRE_GOLDEN();
  auto cases = cn::testing::golden_cases("e2e_");
  ASSERT_FALSE(cases.empty());
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name());
    const auto& p = c.params();
    const auto model_dir = c.model("unet").parent_path().string();
    auto sd = cn::io::load_sd_model(model_dir);

    // Tokenizer and text encoder against the saved ids and embeddings.
    cn::pipeline::PromptEncoder prompts(sd, torch::kFloat32, torch::kCPU);
    const auto prompt_list = p.at("prompt").is_array() ? p.at("prompt") : nlohmann::json::array({p.at("prompt")});
    const auto negative_list =
        p.at("negative_prompt").is_array() ? p.at("negative_prompt") : nlohmann::json::array({p.at("negative_prompt")});
    std::vector<torch::Tensor> ids, neg_ids;
    for (size_t i = 0; i < prompt_list.size(); ++i) {
      ids.push_back(prompts.token_chunks(prompt_list[i].get<std::string>())[0]);
      neg_ids.push_back(prompts.token_chunks(negative_list[i].get<std::string>())[0]);
    }
    EXPECT_TRUE(torch::equal(torch::stack(ids), c.get("prompt_ids")));
    EXPECT_TRUE(torch::equal(torch::stack(neg_ids), c.get("negative_prompt_ids")));
    std::vector<torch::Tensor> embeds, neg_embeds;
    for (size_t i = 0; i < prompt_list.size(); ++i) {
      embeds.push_back(prompts.encode(prompt_list[i].get<std::string>(), 0));
      neg_embeds.push_back(prompts.encode(negative_list[i].get<std::string>(), 0));
    }
    expect_golden(c, "prompt_embeds", torch::cat(embeds));
    expect_golden(c, "negative_prompt_embeds", torch::cat(neg_embeds));

    // The loop runs on the saved embeddings, so each stage is judged on its own.
    const bool guidance = p.at("do_classifier_free_guidance").get<bool>();
    cn::pipeline::PromptEmbeddings embeddings{c.get("prompt_embeds"),
                                              guidance ? c.get("negative_prompt_embeds") : torch::Tensor()};
    auto unet = build<cn::models::UNet2DConditionModel, cn::models::UNetConfig>(sd.unet);
    const auto paths = controlnet_paths(c);
    std::vector<cn::pipeline::ActiveControlNet> controls;
    for (size_t i = 0; i < paths.size(); ++i) {
      auto component = cn::io::load_controlnet(paths[i]);
      auto net = build<cn::models::ControlNetModel, cn::models::ControlNetConfig>(component);
      cn::pipeline::ActiveControlNet unit{net, net->embed_hint(c.get("control_image_" + std::to_string(i)))};
      unit.scale = param_or<double>(p, "controlnet_conditioning_scale", i, 1.0);
      unit.start = param_or<double>(p, "control_guidance_start", i, 0.0);
      unit.end = param_or<double>(p, "control_guidance_end", i, 1.0);
      controls.push_back(unit);
    }
    const bool guess_mode = param_or<bool>(p, "guess_mode", 0, false);

    const auto sampler = sampler_of(p.at("scheduler").get<std::string>());
    // The model's own scheduler config, as a user's run would take it.
    const auto schedule = cn::sampling::NoiseSchedule::from_json(sd.scheduler_config);
    const auto plan = cn::sampling::make_plan(sampler, schedule, p.at("num_inference_steps").get<int64_t>());
    ASSERT_EQ(plan.loop_iterations(), p.at("num_loop_iterations").get<int64_t>());
    auto timesteps = c.get("timesteps");
    for (int64_t i = 0; i < plan.loop_iterations(); ++i)
      EXPECT_EQ(plan.timesteps[i].item<double>(), timesteps[i].item<double>()) << "timestep " << i;

    cn::pipeline::GuidedDenoiser denoiser(unet, embeddings, p.at("guidance_scale").get<double>(), controls, guess_mode,
                                          plan.loop_iterations());
    denoiser.observer = [&](int64_t i, const cn::pipeline::StepOutputs& out) {
      const auto n = std::to_string(i);
      if (guidance) {
        expect_golden(c, "noise_pred_uncond_" + n, out.noise_pred_uncond);
        expect_golden(c, "noise_pred_text_" + n, out.noise_pred_text);
      }
      expect_golden(c, "noise_pred_" + n, out.noise_pred);
    };
    auto latents = c.get("latents_init") * plan.init_noise_sigma;
    expect_golden(c, "latents_0", latents);
    // Ancestral samplers take the recorded noise instead of drawing it.
    cn::sampling::NoiseSource recorded = [&](int64_t i, at::IntArrayRef) {
      return c.get("ancestral_noise_" + std::to_string(i));
    };
    auto on_step = [&](int64_t i, const torch::Tensor& x) { expect_golden(c, "latents_" + std::to_string(i + 1), x); };
    auto model = [&](const torch::Tensor& x, const torch::Tensor& t, int64_t i) { return denoiser(x, t, i); };
    latents = cn::sampling::sample(model, latents, plan, schedule, recorded, on_step);
    expect_golden(c, "final_latents", latents);

    auto vae = build<cn::models::AutoencoderKL, cn::models::VaeConfig>(sd.vae);
    torch::NoGradGuard no_grad;
    auto image = (vae->decode(latents / vae->scaling_factor()) / 2 + 0.5).clamp(0, 1);
    expect_golden(c, "image", image);
  }
}
