// --precision bf16 and --gradient-checkpointing: bf16 trains (finite loss
// close to fp32's, weights move, fp32 masters are saved); checkpointing the
// ControlNet gives the gradients of the plain backward.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "io/safetensors.h"
#include "nn/checkpoint.h"
#include "nn/unet_blocks.h"
#include "support/golden.h"
#include "support/loss_csv.h"
#include "train/dataset.h"
#include "train/objective.h"
#include "train/trainer.h"

using namespace cn;
namespace fs = std::filesystem;

namespace {

using cn::testing::losses;

// The backward graph's nodes named `name`, each counted once.
int count_nodes(const torch::Tensor& root, const std::string& name) {
  std::vector<torch::autograd::Node*> stack{root.grad_fn().get()};
  std::set<torch::autograd::Node*> seen;
  int count = 0;
  while (!stack.empty()) {
    auto* node = stack.back();
    stack.pop_back();
    if (!node || !seen.insert(node).second) continue;
    count += node->name() == name;
    for (const auto& edge : node->next_edges()) stack.push_back(edge.function.get());
  }
  return count;
}

}  // namespace

TEST(Precision, Bf16TrainsCloseToFp32) {
  CN_REQUIRE_GOLDEN();
  const auto tmp = fs::temp_directory_path() / "cn_bf16_test";
  fs::remove_all(tmp);
  // 128 px: at 64 px the mini UNet's deepest level is 1x1, GroupNorm
  // groups of 2 values amplify each rounding, and bf16 predictions there
  // differ from fp32 by 23 % (rms), whatever the arithmetic's correctness.
  train::write_fill_dataset((tmp / "data").string(), 8, 128, 5);
  train::TrainOptions o;
  o.model = (cn::testing::golden_root() / "mini-sd15").string();
  o.data = (tmp / "data").string();
  o.resolution = 128;
  o.batch_size = 2;
  o.steps = 2;
  o.lr = 1e-3;
  o.seed = 11;
  o.output = (tmp / "fp32").string();
  train::run_training(o, {});
  o.precision = "bf16";
  o.output = (tmp / "bf16").string();
  train::run_training(o, {});

  const auto fp32 = losses(tmp / "fp32"), bf16 = losses(tmp / "bf16");
  ASSERT_EQ(bf16.size(), 2u);
  for (double l : bf16) EXPECT_TRUE(std::isfinite(l));
  // Step 1 has the same weights, data and draws; only the arithmetic
  // differs. bf16 keeps 8 significant bits, so each value of the prediction
  // is off by a few bf16 roundings (2^-9 relative each), mostly independent:
  // they average out over the MSE's 2x4x16x16 = 2048 terms. A systematic error
  // (a part computing from wrongly cast inputs, an fp32 path rounded through
  // bf16 twice) biases the loss by at least one bf16 step, 2^-8 = 0.4 %,
  // which is the bound. Measured: 8.0e-4 (4.0e-4 with OpenCV-drawn disks).
  const double rel = std::abs(bf16[0] - fp32[0]) / fp32[0];
  EXPECT_LT(rel, 1.0 / 256) << "fp32 " << fp32[0] << " bf16 " << bf16[0];
  std::cout << "[ figures  ] step-1 loss fp32 " << fp32[0] << " bf16 " << bf16[0] << " (relative " << rel << ")\n";

  auto saved = io::load_safetensors((tmp / "bf16/controlnet/diffusion_pytorch_model.safetensors").string());
  const auto& zero_conv = saved.at("controlnet_mid_block.weight");
  EXPECT_EQ(zero_conv.scalar_type(), torch::kFloat) << "the fp32 masters are what is saved";
  EXPECT_GT(zero_conv.abs().max().item<double>(), 1e-4) << "the zero convolution did not move";
  fs::remove_all(tmp);
}

// The generic segment: gradients into inputs and parameters equal the plain ones.
TEST(GradientCheckpointing, SegmentGradientsEqualPlainOnes) {
  torch::manual_seed(1);
  auto w = torch::randn({5, 5}, torch::requires_grad());
  auto x = torch::randn({3, 5}, torch::requires_grad());
  auto frozen = torch::randn({3, 5});
  const nn::Segment segment = [&](const std::vector<torch::Tensor>& in) {
    auto h = torch::tanh(torch::matmul(in[0], w)) * in[1];
    return std::vector<torch::Tensor>{h, h.sum(1)};
  };
  auto plain = segment({x, frozen});
  (plain[0].pow(2).sum() + plain[1].sum()).backward();
  const auto gw = w.grad().clone(), gx = x.grad().clone();
  w.mutable_grad().reset();
  x.mutable_grad().reset();
  auto checked = nn::checkpoint(segment, {x, frozen}, {w});
  EXPECT_TRUE(checked[0].equal(plain[0]));
  (checked[0].pow(2).sum() + checked[1].sum()).backward();
  EXPECT_TRUE(w.grad().equal(gw));
  EXPECT_TRUE(x.grad().equal(gx));
}

// UNet and ControlNet checkpointed layer by layer: same loss, and the same
// gradient for every ControlNet parameter up to float32 rounding. The layers'
// parameter gradients now come from separate graphs, summed in another order;
// the rounding is that of the terms summed, so it is measured against the
// largest gradient (a bias before a GroupNorm has an exact gradient of zero
// and a computed one of rounding size either way).
TEST(GradientCheckpointing, ControlNetGradientsEqualPlainBackward) {
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
  {
    // Non-zero zero convolutions, so every ControlNet parameter gets a gradient.
    torch::NoGradGuard no_grad;
    for (auto& item : net->named_parameters())
      if (item.value().abs().max().item<double>() == 0.0) item.value().normal_(0, 0.05);
  }
  const auto schedule = sampling::NoiseSchedule::stable_diffusion();
  train::DiffusionInputs in{torch::randn({2, 4, 16, 16}), torch::randn({2, 7, 16}), torch::randn({2, 4, 16, 16}),
                            torch::tensor({10, 700}), torch::rand({2, 3, 128, 128})};
  auto plain = train::diffusion_loss(unet, &net, schedule, in);
  plain.loss.backward();
  std::map<std::string, torch::Tensor> expected;
  for (auto& item : net->named_parameters()) {
    expected[item.key()] = item.value().grad().clone();
    item.value().mutable_grad().reset();
  }
  nn::set_gradient_checkpointing(*unet, true);
  nn::set_gradient_checkpointing(*net, true);
  auto checked = train::diffusion_loss(unet, &net, schedule, in);
  // Every resnet and transformer: ControlNet 4 + 2 + 3 (down blocks, mid),
  // UNet decoder 3 + 6 (its encoder needs no gradient, so records nothing).
  EXPECT_EQ(count_nodes(plain.loss, "CheckpointBackward"), 0);
  EXPECT_EQ(count_nodes(checked.loss, "CheckpointBackward"), 4 + 2 + 3 + 3 + 6);
  EXPECT_EQ(checked.loss.item<double>(), plain.loss.item<double>());
  checked.loss.backward();
  double largest = 0, worst = 0;
  for (const auto& [name, grad] : expected) largest = std::max(largest, grad.abs().max().item<double>());
  for (auto& item : net->named_parameters()) {
    ASSERT_TRUE(item.value().grad().defined()) << item.key();
    ASSERT_GT(expected[item.key()].abs().max().item<double>(), 0.0) << item.key();
    const double diff = (item.value().grad() - expected[item.key()]).abs().max().item<double>() / largest;
    worst = std::max(worst, diff);
    EXPECT_LT(diff, 1e-5) << item.key();
  }
  std::cout << "[ figures  ] checkpointed vs plain ControlNet gradients: max difference " << worst
            << " of the largest gradient\n";
}
