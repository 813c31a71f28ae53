#include <gtest/gtest.h>

#include "support/diffusers_folder.h"
#include "support/golden.h"
#include "controlnet/error.h"
#include "models/unet.h"
#include "nn/attention.h"
#include "nn/weights.h"
#include "util/dtype.h"

using namespace cn;
using cn::testing::expect_golden;
using cn::testing::golden_cases;

namespace {

models::UNet2DConditionModel load_unet(const cn::testing::GoldenCase& c) {
  return cn::testing::load_diffusers_component<models::UNet2DConditionModel, models::UNetConfig>(c.model("unet"));
}

}  // namespace

TEST(UNet, MatchesReference) {
  CN_REQUIRE_GOLDEN();
  auto cases = golden_cases("unet");
  ASSERT_FALSE(cases.empty()) << "no unet cases under " << cn::testing::golden_root();
  torch::NoGradGuard no_grad;
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name());
    auto unet = load_unet(c);
    auto sample = c.get("sample"), context = c.get("encoder_hidden_states");

    models::Trace trace;
    expect_golden(c, "out_no_residuals", unet->forward(sample, c.get("timestep"), context, nullptr, &trace));
    for (const auto& name : c.names("debug")) {
      ASSERT_TRUE(trace.count(name)) << "no intermediate " << name;
      expect_golden(c, name, trace.at(name));
    }
    expect_golden(c, "out_no_residuals_tfloat", unet->forward(sample, c.get("timesteps_float"), context));

    models::ControlResiduals residuals;
    for (int i = 0; c.has("down_block_additional_residuals_" + std::to_string(i)); ++i)
      residuals.down.push_back(c.get("down_block_additional_residuals_" + std::to_string(i)));
    residuals.mid = c.get("mid_block_additional_residual");
    expect_golden(c, "out_with_residuals", unet->forward(sample, c.get("timestep"), context, &residuals));
  }
}

TEST(UNet, RefusesUnsupportedConfig) {
  auto config = models::UNetConfig().to_json();
  config["resnet_time_scale_shift"] = "scale_shift";
  try {
    models::UNetConfig::from_json(config);
    FAIL() << "accepted an unsupported config";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("resnet_time_scale_shift"), std::string::npos) << e.what();
  }
  config = models::UNetConfig().to_json();
  config["attention_head_dim"] = 7;
  EXPECT_THROW(models::UNetConfig::from_json(config), Error);
}

// The first golden UNet case's model and inputs.
struct UNetInputs {
  models::UNet2DConditionModel unet{nullptr};
  torch::Tensor sample, context, t;
};
UNetInputs first_unet_case() {
  auto cases = golden_cases("unet");
  if (cases.empty()) throw std::runtime_error("no unet cases under " + cn::testing::golden_root().string());
  const auto& c = cases.front();
  return {load_unet(c), c.get("sample"), c.get("encoder_hidden_states"), c.get("timestep")};
}

TEST(UNet, Bf16StaysCloseToFloat32) {
  CN_REQUIRE_GOLDEN();
  torch::NoGradGuard no_grad;
  auto [unet, sample, context, t] = first_unet_case();
  auto reference = unet->forward(sample, t, context);
  unet->to(torch::kBFloat16);
  auto low = unet->forward(sample.to(torch::kBFloat16), t, context.to(torch::kBFloat16));
  EXPECT_EQ(low.scalar_type(), torch::kBFloat16);
  // bf16 keeps 8 mantissa bits (relative step 2^-8 = 0.4 %); through the ~40
  // layers of the random-weight mini UNet the mean error measured 5.8 % of the
  // output's spread. A wrong bf16 path (a missing cast, a layer in the wrong
  // dtype) gives errors of the order of the spread itself.
  const double spread = reference.std().item<double>();
  const double err = (low.to(torch::kFloat) - reference).abs().mean().item<double>();
  std::cout << "[bf16] unet mean abs error " << err << " (output std " << spread << ")\n";
  EXPECT_LT(err, 0.1 * spread);
}

TEST(UNet, ChannelsLastWeightsRunTheWholeNetworkChannelsLastWithTheSameResult) {
  CN_REQUIRE_GOLDEN();
  torch::NoGradGuard no_grad;
  auto [unet, sample, context, t] = first_unet_case();
  models::Trace channels_last_trace;
  auto nchw = unet->forward(sample, t, context);
  nn::set_memory_format(*unet, torch::MemoryFormat::ChannelsLast);
  // The input stays NCHW: the first convolution's kernel sets the layout.
  auto channels_last = unet->forward(sample, t, context, nullptr, &channels_last_trace);
  EXPECT_TRUE(channels_last.is_contiguous(torch::MemoryFormat::ChannelsLast));
  EXPECT_FALSE(channels_last.is_contiguous());
  int images = 0;  // intermediates with channels and pixels, whose layout tells
  for (const auto& [name, value] : channels_last_trace) {
    if (value.dim() != 4 || value.size(1) == 1 || value.size(2) * value.size(3) == 1) continue;
    ++images;
    EXPECT_TRUE(value.is_contiguous(torch::MemoryFormat::ChannelsLast)) << name << " is not channels-last";
  }
  EXPECT_GE(images, 4);
  // Only the order of the sums differs.
  const double spread = nchw.std().item<double>();
  EXPECT_LT((channels_last - nchw).abs().max().item<double>(), 1e-5 * spread);
}

TEST(UNet, ConstructedInBf16HasNoFloat32Weights) {
  CN_REQUIRE_GOLDEN();
  auto cases = golden_cases("unet");
  ASSERT_FALSE(cases.empty());
  const auto config = models::UNetConfig::from_json(cn::testing::read_json_file(cases.front().model("unet") / "config.json"));
  auto unet = construct_in(torch::kBFloat16, [&] { return models::UNet2DConditionModel(config); });
  for (const auto& p : unet->named_parameters()) EXPECT_EQ(p.value().scalar_type(), torch::kBFloat16) << p.key();
  EXPECT_EQ(c10::get_default_dtype_as_scalartype(), torch::kFloat);
  // Restored when construction fails too.
  EXPECT_THROW(construct_in(torch::kBFloat16, []() -> int { throw Error("no"); }), Error);
  EXPECT_EQ(c10::get_default_dtype_as_scalartype(), torch::kFloat);
}

TEST(Attention, BlocksEqualWhole) {
  torch::manual_seed(0);
  auto q = torch::randn({2, 300, 32}), k = torch::randn({2, 77, 32}), v = torch::randn({2, 77, 32});
  auto causal = torch::full({300, 77}, -INFINITY).triu(1);
  auto per_head = torch::randn({8, 300, 77});  // a different mask for each of the 2 x 4 matrices
  auto whole = nn::attention(q, k, v, 4), whole_causal = nn::attention(q, k, v, 4, false, causal),
       whole_per_head = nn::attention(q, k, v, 4, false, per_head);
  EXPECT_GT((whole - whole_causal).abs().max().item<double>(), 1e-3);  // the masks matter
  EXPECT_GT((whole_causal - whole_per_head).abs().max().item<double>(), 1e-3);
  struct Case {
    int64_t budget, heads, rows;
  };
  // Row slices of one head (16 rows, the last 12), then groups of whole
  // matrices (3, 3, 2).
  for (const auto& c : {Case{77 * 16, 1, 16}, Case{3 * 300 * 77, 3, 300}}) {
    nn::set_attention_slice_budget(c.budget);
    const auto block = nn::attention_block(8, 300, 77);
    EXPECT_EQ(block.heads, c.heads);
    EXPECT_EQ(block.rows, c.rows);
    EXPECT_LT((nn::attention(q, k, v, 4) - whole).abs().max().item<double>(), 1e-6);
    EXPECT_LT((nn::attention(q, k, v, 4, false, causal) - whole_causal).abs().max().item<double>(), 1e-6);
    EXPECT_LT((nn::attention(q, k, v, 4, false, per_head) - whole_per_head).abs().max().item<double>(), 1e-6);
  }
  nn::set_attention_slice_budget(0);
}

// Training backpropagates through the blocks (written into one output).
TEST(Attention, BlockGradientsEqualWholeOnes) {
  torch::manual_seed(1);
  auto q = torch::randn({2, 300, 32}, torch::requires_grad()), k = torch::randn({2, 77, 32}, torch::requires_grad()),
       v = torch::randn({2, 77, 32}, torch::requires_grad());
  auto weights = torch::randn({2, 300, 32});
  auto gradients = [&] {
    for (auto* t : {&q, &k, &v}) t->mutable_grad().reset();
    (nn::attention(q, k, v, 4) * weights).sum().backward();
    return std::vector<torch::Tensor>{q.grad().clone(), k.grad().clone(), v.grad().clone()};
  };
  const auto whole = gradients();
  nn::set_attention_slice_budget(77 * 16);
  const auto blocked = gradients();
  nn::set_attention_slice_budget(0);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_GT(whole[i].abs().max().item<double>(), 1e-3);
    EXPECT_LT((blocked[i] - whole[i]).abs().max().item<double>(), 1e-5) << "input " << i;
  }
}
