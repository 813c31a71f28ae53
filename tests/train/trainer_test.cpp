// The trainer end to end on the golden mini model: a resumed run continues
// exactly the loss curve and weights of an uninterrupted one.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>

#include "controlnet/error.h"
#include "io/keymap.h"
#include "io/safetensors.h"
#include "models/vae.h"
#include "support/diffusers_folder.h"
#include "support/golden.h"
#include "train/dataset.h"
#include "train/trainer.h"

using namespace cn;
namespace fs = std::filesystem;

namespace {

std::vector<std::string> loss_lines(const fs::path& dir) {
  std::ifstream in(dir / "loss.csv");
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) out.push_back(line.substr(0, line.rfind(',')));  // drop the time
  return out;
}

// A fresh VAE (the default model's config) trained for `steps` on a small
// fill dataset in tmp/data, written to tmp/run_name.
train::TrainOptions vae_from_scratch(const fs::path& tmp, const std::string& run_name, int count, int64_t steps) {
  train::write_fill_dataset((tmp / "data").string(), count, 64, 7);
  train::TrainOptions o;
  o.model = (fs::path(CONTROLNET_SOURCE_DIR) / "models" / "default-config").string();
  o.from_scratch = true;
  o.train = {"vae"};
  o.data = (tmp / "data").string();
  o.output = (tmp / run_name).string();
  o.resolution = 64;
  o.batch_size = 4;
  o.lr = 1e-3;
  o.steps = steps;
  return o;
}

}  // namespace

TEST(Trainer, ResumedRunContinuesTheSameCurve) {
  CN_REQUIRE_GOLDEN();
  const auto tmp = fs::temp_directory_path() / "cn_trainer_test";
  fs::remove_all(tmp);
  train::write_fill_dataset((tmp / "data").string(), 12, 64, 5);

  train::TrainOptions o;
  o.model = (cn::testing::golden_root() / "mini-sd15").string();
  o.data = (tmp / "data").string();
  o.resolution = 64;
  o.batch_size = 2;
  o.lr = 1e-4;
  o.seed = 11;
  o.log_every = 1;
  o.steps = 4;
  o.output = (tmp / "straight").string();
  train::run_training(o, {});

  o.steps = 2;
  o.output = (tmp / "resumed").string();
  train::run_training(o, {});
  o.steps = 4;
  o.resume = o.output;
  train::run_training(o, {});

  const auto straight = loss_lines(tmp / "straight"), resumed = loss_lines(tmp / "resumed");
  ASSERT_EQ(straight.size(), 5u);  // header + 4 steps
  EXPECT_EQ(straight, resumed);
  auto a = io::load_safetensors((tmp / "straight/controlnet/diffusion_pytorch_model.safetensors").string());
  auto b = io::load_safetensors((tmp / "resumed/controlnet/diffusion_pytorch_model.safetensors").string());
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, t] : a) EXPECT_TRUE(t.equal(b.at(name))) << name;
  // Both layouts are written, and the LDM one holds control_model.* names.
  auto ldm = io::load_safetensors((tmp / "straight/control_model.safetensors").string());
  EXPECT_TRUE(ldm.count("control_model.middle_block_out.0.weight"));
  EXPECT_TRUE(fs::exists(tmp / "straight/loss.png"));
  fs::remove_all(tmp);
}

TEST(Dataset, FillSamplesMatchTheirPrompts) {
  const auto tmp = fs::temp_directory_path() / "cn_fill_test";
  fs::remove_all(tmp);
  train::write_fill_dataset(tmp.string(), 6, 64, 3);
  train::PairDataset data(tmp.string(), 64);
  ASSERT_EQ(data.size(), 6u);
  auto batch = data.load({0, 1});
  EXPECT_EQ(batch.images.sizes(), (std::vector<int64_t>{2, 3, 64, 64}));
  EXPECT_GE(batch.images.min().item<double>(), -1.0);
  EXPECT_LE(batch.hints.max().item<double>(), 1.0);
  // The prompt names the fill colour: the target's centre of mass of that
  // colour lies inside the outline drawn in the hint.
  const auto& colours = train::fill_colours();
  for (int i = 0; i < 2; ++i) {
    const auto fill = batch.prompts[i].substr(0, batch.prompts[i].find(' '));
    auto it = std::find_if(colours.begin(), colours.end(), [&](const auto& c) { return c.first == fill; });
    ASSERT_NE(it, colours.end()) << batch.prompts[i];
    auto rgb = torch::tensor({it->second[0], it->second[1], it->second[2]}, torch::kFloat).view({3, 1, 1}) / 127.5 - 1;
    auto mask = (batch.images[i] - rgb).abs().sum(0) < 0.1;
    EXPECT_GT(mask.sum().item<int64_t>(), 50) << "no pixels of the prompted fill colour";
    EXPECT_GT(batch.hints[i].sum().item<double>(), 10.0) << "empty outline";
  }
  fs::remove_all(tmp);
}

TEST(Trainer, LearningRateScheduleWarmsUpAndDecays) {
  train::TrainOptions o;
  o.lr = 1e-3;
  o.warmup_steps = 10;
  EXPECT_DOUBLE_EQ(train::scheduled_lr(o, 0, 110), 1e-4);  // linear warm-up from 0
  EXPECT_DOUBLE_EQ(train::scheduled_lr(o, 9, 110), 1e-3);
  EXPECT_DOUBLE_EQ(train::scheduled_lr(o, 50, 110), 1e-3);  // constant after it
  o.lr_schedule = "cosine";
  EXPECT_DOUBLE_EQ(train::scheduled_lr(o, 10, 110), 1e-3);  // cosine from the end of the warm-up
  EXPECT_NEAR(train::scheduled_lr(o, 60, 110), 0.5e-3, 1e-12);
  EXPECT_NEAR(train::scheduled_lr(o, 109, 110), 1e-3 * 0.5 * (1 + std::cos(M_PI * 99.0 / 100.0)), 1e-15);
  EXPECT_GT(train::scheduled_lr(o, 100, 110), train::scheduled_lr(o, 105, 110));
}

// A VAE trained from scratch saves the scaling factor of its own final
// encoder: the scaled latents of the training images have unit spread.
TEST(Trainer, TrainedVaeScalesItsLatentsToUnitStd) {
  const auto tmp = fs::temp_directory_path() / "cn_trainer_vae_test";
  fs::remove_all(tmp);
  const auto o = vae_from_scratch(tmp, "run", 16, 3);
  train::run_training(o, {});
  auto vae = cn::testing::load_diffusers_component<models::AutoencoderKL, models::VaeConfig>(tmp / "run" / "vae");
  const double scale = vae->scaling_factor();
  ASSERT_TRUE(std::isfinite(scale) && scale > 0) << scale;
  train::PairDataset data(o.data, 64, false, {});
  std::vector<size_t> all(data.size());
  std::iota(all.begin(), all.end(), size_t{0});
  torch::NoGradGuard no_grad;
  const auto latents = vae->encode(data.load(all).images).mean * scale;
  EXPECT_NEAR(latents.std(/*unbiased=*/false).item<double>(), 1.0, 1e-3);
  fs::remove_all(tmp);
}

// Fine-tuning the VAE's decoder leaves its encoder, and so the latent space a
// UNet learned on, exactly as it was: the encoder's weights and the scaling
// factor come out bit for bit, the decoder's change.
TEST(Trainer, VaeDecoderFineTuneKeepsTheEncoder) {
  const auto tmp = fs::temp_directory_path() / "cn_trainer_vae_decoder_test";
  fs::remove_all(tmp);
  auto o = vae_from_scratch(tmp, "vae", 8, 1);
  train::run_training(o, {});

  o.train = {"vae_decoder"};
  EXPECT_THROW(train::run_training(o, {}), Error) << "a decoder alone cannot start from scratch";
  o.from_scratch = false;
  o.model = o.output;
  o.output = (tmp / "decoder").string();
  o.steps = 2;
  train::run_training(o, {});

  const auto weights_of = [&](const char* run) {
    return io::read_tensor_file((tmp / run / "vae" / "diffusion_pytorch_model.safetensors").string());
  };
  const auto before = weights_of("vae"), after = weights_of("decoder");
  ASSERT_EQ(before.size(), after.size());
  int decoder_changed = 0, encoder_tensors = 0;
  for (const auto& [name, tensor] : before) {
    const bool decoder = name.rfind("decoder.", 0) == 0 || name.rfind("post_quant_conv.", 0) == 0;
    if (decoder) {
      decoder_changed += !torch::equal(tensor, after.at(name));
    } else {
      ++encoder_tensors;
      EXPECT_TRUE(torch::equal(tensor, after.at(name))) << name;
    }
  }
  EXPECT_GT(encoder_tensors, 0);
  EXPECT_GT(decoder_changed, 0);
  const auto scale_of = [&](const char* run) {
    return cn::testing::load_diffusers_component<models::AutoencoderKL, models::VaeConfig>(tmp / run / "vae")->scaling_factor();
  };
  EXPECT_EQ(scale_of("vae"), scale_of("decoder"));
  fs::remove_all(tmp);
}
