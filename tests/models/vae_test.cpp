#include <gtest/gtest.h>

#include "support/diffusers_folder.h"
#include "models/vae.h"
#include "support/golden.h"

using namespace cn;
using cn::testing::expect_golden;
using cn::testing::golden_cases;

namespace {
models::AutoencoderKL load_vae(const cn::testing::GoldenCase& c) {
  return cn::testing::load_diffusers_component<models::AutoencoderKL, models::VaeConfig>(c.model("vae"));
}
}  // namespace

TEST(Vae, MatchesReference) {
  CN_REQUIRE_GOLDEN();
  auto cases = golden_cases("vae");
  ASSERT_FALSE(cases.empty());
  torch::NoGradGuard no_grad;
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name());
    auto vae = load_vae(c);
    models::Trace trace;
    vae->trace = &trace;
    auto posterior = vae->encode(c.get("image"));
    expect_golden(c, "encoder_out", trace.at("encoder_out"));
    expect_golden(c, "moments", trace.at("moments"));
    expect_golden(c, "posterior_mean", posterior.mean);
    expect_golden(c, "posterior_logvar", posterior.logvar);
    expect_golden(c, "posterior_std", posterior.std());
    expect_golden(c, "latents_scaled", posterior.mean * vae->scaling_factor());
    auto decoded = vae->decode(c.get("z"));
    expect_golden(c, "post_quant_conv_out", trace.at("post_quant_conv_out"));
    expect_golden(c, "decoded", decoded);
    expect_golden(c, "decoded_image01", (decoded / 2 + 0.5).clamp(0, 1));
    expect_golden(c, "roundtrip_decoded", vae->decode(posterior.mean));
  }
}

TEST(Vae, TiledDecodeBlendsTiles) {
  CN_REQUIRE_GOLDEN();
  auto cases = golden_cases("vae");
  ASSERT_FALSE(cases.empty());
  torch::NoGradGuard no_grad;
  auto vae = load_vae(cases.front());
  auto z = cases.front().get("z");  // 16x16 latents: tiles of 12 start at 0 and 4
  EXPECT_TRUE(vae->decode_tiled(z, 16, 4).equal(vae->decode(z)));  // one tile: exact
  auto tiled = vae->decode_tiled(z, 12, 8);
  ASSERT_EQ(tiled.sizes(), vae->decode(z).sizes());
  ASSERT_TRUE(tiled.isfinite().all().item<bool>());
  // Latent rows/columns 0..3 are covered by the first tile alone, so the first
  // 32x32 output pixels are exactly that tile's decode; the far corner is the
  // last tile's. (Closeness to the untiled decode cannot be checked on the
  // mini VAE: its random global mid-block attention makes every tiling differ.)
  auto first = vae->decode(z.narrow(2, 0, 12).narrow(3, 0, 12));
  auto last = vae->decode(z.narrow(2, 4, 12).narrow(3, 4, 12));
  const int64_t pixels = 4 * 8;
  EXPECT_LT((tiled.narrow(2, 0, pixels).narrow(3, 0, pixels) - first.narrow(2, 0, pixels).narrow(3, 0, pixels))
                .abs().max().item<double>(), 1e-5);
  EXPECT_LT((tiled.narrow(2, 96, pixels).narrow(3, 96, pixels) - last.narrow(2, 64, pixels).narrow(3, 64, pixels))
                .abs().max().item<double>(), 1e-5);
}
