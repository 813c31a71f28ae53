// The layers LibTorch 1.13 cannot run (or runs slowly) in bf16 on the CPU: ours give the
// float32 result's shape and values (to bf16 rounding) and leave float32 as
// torch::nn computes it.
#include <gtest/gtest.h>

#include "nn/bf16_fallbacks.h"

namespace F = torch::nn;

TEST(Bf16Fallbacks, TransposedConvolutionKeepsItsShapeInBf16) {
  torch::manual_seed(0);
  cn::nn::ConvTranspose2d ours(F::ConvTranspose2dOptions(8, 4, 4).stride(2).padding(1));
  F::ConvTranspose2d plain(F::ConvTranspose2dOptions(8, 4, 4).stride(2).padding(1));
  {
    torch::NoGradGuard no_grad;
    plain->weight.copy_(ours->weight);
    plain->bias.copy_(ours->bias);
  }
  const auto x = torch::randn({1, 8, 2, 3});
  const auto expected = plain(x);
  EXPECT_TRUE(ours(x).equal(expected)) << "float32 must be torch::nn's own";
  ours->to(torch::kBFloat16);
  const auto y = ours(x.to(torch::kBFloat16));
  ASSERT_EQ(y.sizes(), expected.sizes());  // LibTorch's own bf16 kernel gives [1, 4, 1, 1]
  EXPECT_EQ(y.scalar_type(), torch::kBFloat16);
  EXPECT_LT((y.to(torch::kFloat32) - expected).abs().max().item<double>(), 0.05 * expected.abs().max().item<double>());
}

TEST(Bf16Fallbacks, ReflectionPaddingRunsInBf16) {
  const auto x = torch::arange(12, torch::kFloat32).reshape({1, 1, 3, 4});
  cn::nn::ReflectionPad2d pad(1);
  const auto expected = F::ReflectionPad2d(1)(x);
  EXPECT_TRUE(pad(x).equal(expected));
  const auto y = pad(x.to(torch::kBFloat16));
  EXPECT_EQ(y.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(y.to(torch::kFloat32).equal(expected));  // small integers are exact in bf16
}

// bf16 layer norm is computed in float32 and rounded once: it equals the
// float32 result of the same bf16 input and weights rounded to bf16, and
// float32 stays torch::nn's own.
TEST(Bf16Fallbacks, LayerNormInBf16IsTheFloat32ResultRounded) {
  torch::manual_seed(0);
  cn::nn::LayerNorm ours(F::LayerNormOptions({320}).eps(1e-5));
  F::LayerNorm plain(F::LayerNormOptions({320}).eps(1e-5));
  {
    torch::NoGradGuard no_grad;
    ours->weight.normal_(1, 0.5);
    ours->bias.normal_(0, 0.5);
    plain->weight.copy_(ours->weight);
    plain->bias.copy_(ours->bias);
  }
  const auto x = torch::randn({2, 64, 320}) * 3 + 1;
  EXPECT_TRUE(ours(x).equal(plain(x))) << "float32 must be torch::nn's own";
  ours->to(torch::kBFloat16);
  plain->to(torch::kBFloat16);
  const auto xb = x.to(torch::kBFloat16);
  const auto y = ours(xb);
  EXPECT_EQ(y.scalar_type(), torch::kBFloat16);
  plain->to(torch::kFloat32);  // the bf16-rounded weights, widened
  EXPECT_TRUE(y.equal(plain(xb.to(torch::kFloat32)).to(torch::kBFloat16)));
}
