// The layers LibTorch 1.13 cannot run in bf16 on the CPU: ours give the
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
