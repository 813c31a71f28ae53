#include <gtest/gtest.h>

#include "support/diffusers_folder.h"
#include "support/golden.h"
#include "models/controlnet.h"

using namespace cn;
using cn::testing::expect_golden;
using cn::testing::golden_cases;

TEST(ControlNet, MatchesReference) {
  CN_REQUIRE_GOLDEN();
  auto cases = golden_cases("controlnet");
  ASSERT_FALSE(cases.empty());
  torch::NoGradGuard no_grad;
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name());
    auto net = cn::testing::load_diffusers_component<models::ControlNetModel, models::ControlNetConfig>(
        c.model("controlnet"));
    auto sample = c.get("sample"), context = c.get("encoder_hidden_states");
    models::Trace trace;
    auto hint = net->embed_hint(c.get("controlnet_cond"), &trace);

    // Variants are listed in the manifest: prefix -> {conditioning_scale, guess_mode, timestep}.
    const auto& variants = c.params().at("variants");
    ASSERT_FALSE(variants.empty());
    for (const auto& [prefix, v] : variants.items()) {
      SCOPED_TRACE(prefix);
      const bool first_plain = prefix == "scale1";
      auto out = net->forward(sample, c.get(v.at("timestep").get<std::string>()), context, hint,
                              v.at("conditioning_scale").get<double>(), v.at("guess_mode").get<bool>(),
                              first_plain ? &trace : nullptr);
      ASSERT_EQ(out.down.size(), 12u);
      for (size_t i = 0; i < out.down.size(); ++i)
        expect_golden(c, prefix + ".down_" + std::to_string(i), out.down[i]);
      expect_golden(c, prefix + ".mid", out.mid);
    }
    for (const auto& name : c.names("debug")) {
      ASSERT_TRUE(trace.count(name)) << "no intermediate " << name;
      expect_golden(c, name, trace.at(name));
    }
  }
}

TEST(ControlNet, FreshControlNetStartsAtZero) {
  models::UNetConfig unet_config;
  unet_config.block_out_channels = {32, 64};
  unet_config.down_block_types = {"CrossAttnDownBlock2D", "DownBlock2D"};
  unet_config.up_block_types = {"UpBlock2D", "CrossAttnUpBlock2D"};
  unet_config.heads = {4, 4};
  unet_config.transformer_layers = {1, 1};
  unet_config.cross_attention_dim = 16;
  models::UNet2DConditionModel unet(unet_config);
  models::ControlNetModel net(models::ControlNetConfig::from_unet(unet_config));
  net->copy_trunk_from(*unet);
  auto unet_params = unet->named_parameters();
  for (const auto& item : net->named_parameters()) {
    const auto& name = item.key();
    const auto& p = item.value();
    if (name.rfind("controlnet_", 0) == 0) {
      const bool hint_body = name.rfind("controlnet_cond_embedding.", 0) == 0 &&
                             name.rfind("controlnet_cond_embedding.conv_out.", 0) != 0;
      if (!hint_body) EXPECT_EQ(p.abs().max().item<double>(), 0.0) << name;
    } else {
      EXPECT_TRUE(p.equal(unet_params[name])) << name;
    }
  }
  torch::NoGradGuard no_grad;
  auto x = torch::randn({1, 4, 16, 16}), ctx = torch::randn({1, 5, 16});
  auto residuals = net->forward(x, torch::tensor(10), ctx, net->embed_hint(torch::rand({1, 3, 128, 128})));
  EXPECT_EQ(residuals.down.size(), 6u);  // conv_in + 2 + downsampler + 2
  auto plain = unet->forward(x, torch::tensor(10), ctx);
  EXPECT_TRUE(plain.equal(unet->forward(x, torch::tensor(10), ctx, &residuals)));
}
