// One ControlNet training step against the reference (diffusers
// train_controlnet.py semantics) and the zero-convolution property.
#include <gtest/gtest.h>

#include "models/vae.h"
#include "support/diffusers_folder.h"
#include "support/golden.h"
#include "text/clip.h"
#include "train/objective.h"

using namespace cn;
using cn::testing::expect_golden;
using cn::testing::GoldenCase;
using cn::testing::load_diffusers_component;

namespace {

struct Frozen {
  models::UNet2DConditionModel unet{nullptr};
  models::AutoencoderKL vae{nullptr};
  text::ClipTextModel text{nullptr};
};

Frozen load_frozen(const GoldenCase& c) {
  Frozen f;
  f.unet = load_diffusers_component<models::UNet2DConditionModel, models::UNetConfig>(c.model("unet"));
  f.vae = load_diffusers_component<models::AutoencoderKL, models::VaeConfig>(c.model("vae"));
  f.text = load_diffusers_component<text::ClipTextModel, text::ClipTextConfig>(c.model("text_encoder"), "model.safetensors");
  for (auto& p : f.unet->parameters()) p.set_requires_grad(false);
  return f;
}

// The initial ControlNet of a case: a folder, or (zero_init) a fresh
// from_unet copy whose hint encoder body comes from the mini ControlNet.
models::ControlNetModel initial_controlnet(const GoldenCase& c, Frozen& f) {
  const auto& spec = c.manifest().at("models").at("controlnet_initial").get<std::string>();
  const auto mini = c.dir() / "../../mini-sd15/controlnet";
  if (spec.rfind("fresh", 0) != 0)
    return load_diffusers_component<models::ControlNetModel, models::ControlNetConfig>(c.model("controlnet_initial"));
  models::ControlNetModel net(models::ControlNetConfig::from_unet(f.unet->config()));
  net->copy_trunk_from(*f.unet);
  auto donor = load_diffusers_component<models::ControlNetModel, models::ControlNetConfig>(mini);
  torch::NoGradGuard no_grad;
  auto donor_params = donor->named_parameters();
  for (auto& item : net->named_parameters()) {
    const auto& name = item.key();
    const bool hint_body = name.rfind("controlnet_cond_embedding.", 0) == 0 &&
                           name.rfind("controlnet_cond_embedding.conv_out.", 0) != 0;
    if (hint_body) item.value().copy_(donor_params[name]);
  }
  return net;
}

}  // namespace

TEST(Training, OneStepMatchesReference) {
  CN_REQUIRE_GOLDEN();
  std::vector<GoldenCase> cases;  // training/<case>/manifest.json
  for (const auto& entry : std::filesystem::directory_iterator(cn::testing::golden_root() / "training"))
    if (std::filesystem::exists(entry.path() / "manifest.json")) cases.emplace_back(entry.path());
  std::sort(cases.begin(), cases.end(), [](const auto& a, const auto& b) { return a.name() < b.name(); });
  ASSERT_FALSE(cases.empty());
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name());
    auto f = load_frozen(c);
    auto net = initial_controlnet(c, f);
    net->train();
    const auto schedule = sampling::NoiseSchedule::from_json(c.params().at("noise_scheduler"));

    train::DiffusionInputs in;
    {
      torch::NoGradGuard no_grad;
      auto mean = f.vae->encode(c.get("input.images")).mean;
      expect_golden(c, "posterior_mean", mean);
      in.latents = mean * f.vae->scaling_factor();
      in.context = f.text->forward(c.get("input.input_ids")).last_hidden_state;
    }
    expect_golden(c, "latents", in.latents);
    expect_golden(c, "encoder_hidden_states", in.context);
    in.noise = c.get("input.noise");
    in.timesteps = c.get("input.timesteps");
    in.hint = c.get("input.hints");

    auto out = train::diffusion_loss(f.unet, &net, schedule, in);
    expect_golden(c, "noisy_latents", out.noisy_latents);
    for (size_t i = 0; i < out.residuals.down.size(); ++i)
      expect_golden(c, "controlnet_down_" + std::to_string(i), out.residuals.down[i]);
    expect_golden(c, "controlnet_mid", out.residuals.mid);
    expect_golden(c, "model_pred", out.prediction);
    expect_golden(c, "loss", out.loss);
    {
      torch::NoGradGuard no_grad;
      expect_golden(c, "loss_plain_unet", train::diffusion_loss(f.unet, nullptr, schedule, in).loss);
    }
    out.loss.backward();
    // Parameters the reference lists no gradient for must get exactly zero
    // (zero_init_controlnet: everything but the zero convolutions).
    for (auto& item : net->named_parameters()) {
      const auto& grad = item.value().grad();
      if (c.has("grad." + item.key())) {
        ASSERT_TRUE(grad.defined()) << item.key();
        expect_golden(c, "grad." + item.key(), grad);
      } else {
        EXPECT_TRUE(!grad.defined() || grad.abs().max().item<double>() == 0.0) << item.key() << " has a gradient";
      }
    }

    // AdamW fed the reference gradients, as the fixture's tolerance assumes.
    const auto& opt = c.params().at("optimizer");
    torch::optim::AdamW adamw(net->parameters(),
                              torch::optim::AdamWOptions(opt.at("lr").get<double>())
                                  .betas({opt.at("betas")[0].get<double>(), opt.at("betas")[1].get<double>()})
                                  .eps(opt.at("eps").get<double>())
                                  .weight_decay(opt.at("weight_decay").get<double>()));
    for (auto& item : net->named_parameters()) {
      const auto name = "grad." + item.key();
      item.value().mutable_grad() = c.has(name) ? c.get(name).clone() : torch::zeros_like(item.value());
    }
    adamw.step();
    for (auto& item : net->named_parameters())
      if (c.has("param_after." + item.key())) expect_golden(c, "param_after." + item.key(), item.value());
  }
}

// The paper's zero-convolution argument: a fresh ControlNet leaves SD's output
// unchanged, only the zero convolutions get gradients at first, and one step
// makes the output differ.
TEST(Training, ZeroConvolutionsStartNeutralAndLearn) {
  models::UNetConfig config;
  config.block_out_channels = {32, 64};
  config.down_block_types = {"CrossAttnDownBlock2D", "DownBlock2D"};
  config.up_block_types = {"UpBlock2D", "CrossAttnUpBlock2D"};
  config.heads = {4, 4};
  config.transformer_layers = {1, 1};
  config.cross_attention_dim = 16;
  torch::manual_seed(3);
  models::UNet2DConditionModel unet(config);
  for (auto& p : unet->parameters()) p.set_requires_grad(false);
  models::ControlNetModel net(models::ControlNetConfig::from_unet(config));
  net->copy_trunk_from(*unet);
  const auto schedule = sampling::NoiseSchedule::stable_diffusion();
  train::DiffusionInputs in{torch::randn({2, 4, 16, 16}), torch::randn({2, 7, 16}), torch::randn({2, 4, 16, 16}),
                            torch::tensor({10, 700}), torch::rand({2, 3, 128, 128})};

  auto with = train::diffusion_loss(unet, &net, schedule, in);
  torch::Tensor plain;
  {
    torch::NoGradGuard no_grad;
    plain = train::diffusion_loss(unet, nullptr, schedule, in).prediction;
  }
  EXPECT_TRUE(with.prediction.equal(plain)) << "a fresh ControlNet changed the output";
  with.loss.backward();
  for (auto& item : net->named_parameters()) {
    const auto& name = item.key();
    const double g = item.value().grad().defined() ? item.value().grad().abs().max().item<double>() : 0.0;
    const bool zero_conv = name.rfind("controlnet_down_blocks.", 0) == 0 || name.rfind("controlnet_mid_block.", 0) == 0;
    if (zero_conv && name.find("bias") != std::string::npos) {
      EXPECT_GT(g, 0.0) << name;
    } else if (!zero_conv) {
      EXPECT_EQ(g, 0.0) << name;  // trunk and hint encoder: zero until the zero convs move
    }
  }
  torch::optim::AdamW adamw(net->parameters(), torch::optim::AdamWOptions(1e-3));
  adamw.step();
  torch::NoGradGuard no_grad;
  EXPECT_FALSE(train::diffusion_loss(unet, &net, schedule, in).prediction.equal(plain));
}
