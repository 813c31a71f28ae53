// `controlnet convert` and `add-control` on the golden mini models.
#include <gtest/gtest.h>

#include <cstdlib>

#include "io/checkpoint.h"
#include "support/golden.h"

using namespace cn;
namespace fs = std::filesystem;

namespace {
int run(const std::string& args) {
  return WEXITSTATUS(std::system((std::string(CONTROLNET_CLI) + " " + args + " > /dev/null 2>&1").c_str()));
}
void expect_equal(const io::TensorMap& a, const io::TensorMap& b) {
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, t] : b) {
    ASSERT_TRUE(a.count(name)) << name;
    EXPECT_TRUE(a.at(name).equal(t)) << name;
  }
}
}  // namespace

// SD1 and SD2: the LDM file converts to the golden diffusers folder tensor for
// tensor, and back to the LDM file. What the diffusers layout has no place
// for comes back as zeros: SD2's unused last OpenCLIP block, text_projection
// and logit_scale (SD1's position_ids buffer is dropped).
TEST(Convert, LdmToDiffusersAndBackIsExact) {
  CN_REQUIRE_GOLDEN();
  const auto tmp = fs::temp_directory_path() / "cn_convert_test";
  int models = 0;
  for (const auto& [name, file] : {std::pair{"mini-sd15", "sd15_mini.safetensors"}, {"mini-sd21", "sd21_mini.safetensors"}}) {
    const auto root = cn::testing::golden_root() / name;
    if (!fs::exists(root / "ldm" / file)) continue;
    SCOPED_TRACE(name);
    ++models;
    fs::remove_all(tmp);
    ASSERT_EQ(run("convert " + (root / "ldm" / file).string() + " " + (tmp / "sd").string()), 0);
    const auto converted = io::load_sd_model((tmp / "sd").string()), golden = io::load_sd_model(root.string());
    expect_equal(converted.unet.weights, golden.unet.weights);
    expect_equal(converted.vae.weights, golden.vae.weights);
    expect_equal(converted.text_encoder.weights, golden.text_encoder.weights);
    EXPECT_EQ(converted.text_encoder.config["num_hidden_layers"], golden.text_encoder.config["num_hidden_layers"]);
    ASSERT_EQ(run("convert --layout ldm " + (tmp / "sd").string() + " " + (tmp / "back.safetensors").string()), 0);
    auto original = io::load_safetensors((root / "ldm" / file).string());
    original.erase("cond_stage_model.transformer.text_model.embeddings.position_ids");
    const auto back = io::load_safetensors((tmp / "back.safetensors").string());
    const std::string unused_block = "cond_stage_model.model.transformer.resblocks." +
                                     std::to_string(golden.text_encoder.config["num_hidden_layers"].get<int>()) + ".";
    ASSERT_EQ(back.size(), original.size());
    int placeholders = 0;
    for (const auto& [key, t] : original) {
      ASSERT_TRUE(back.count(key)) << key;
      const bool unused = key.rfind(unused_block, 0) == 0 || key == "cond_stage_model.model.text_projection" ||
                          key == "cond_stage_model.model.logit_scale";
      if (unused) {
        ++placeholders;
        EXPECT_TRUE(back.at(key).equal(torch::zeros_like(t))) << key;
      } else {
        EXPECT_TRUE(back.at(key).equal(t)) << key;
      }
    }
    if (golden.family == "SD2.x") EXPECT_EQ(placeholders, 14);  // 12 tensors of a block + 2
    else EXPECT_EQ(placeholders, 0);
    // The file written back loads to the same model.
    const auto reloaded = io::load_sd_model((tmp / "back.safetensors").string());
    expect_equal(reloaded.text_encoder.weights, golden.text_encoder.weights);
  }
  EXPECT_EQ(models, 2);

  const auto root = cn::testing::golden_root() / "mini-sd15";

  const auto control = root / "ldm/control_sd15_mini.safetensors";
  ASSERT_EQ(run("convert " + control.string() + " " + (tmp / "cn").string()), 0);
  expect_equal(io::load_controlnet((tmp / "cn").string()).weights, io::load_controlnet((root / "controlnet").string()).weights);
  ASSERT_EQ(run("convert --layout ldm --dtype fp16 " + (tmp / "cn").string() + " " + (tmp / "cn16.safetensors").string()), 0);
  auto half = io::load_safetensors((tmp / "cn16.safetensors").string());
  auto full = io::load_safetensors(control.string());
  ASSERT_EQ(half.size(), full.size());
  for (const auto& [name, t] : full) EXPECT_TRUE(half.at(name).equal(t.to(torch::kHalf))) << name;
  fs::remove_all(tmp);
}

TEST(Convert, AddControlCopiesTheEncoderWithZeroConvolutions) {
  CN_REQUIRE_GOLDEN();
  const auto root = cn::testing::golden_root() / "mini-sd15";
  const auto out = fs::temp_directory_path() / "cn_add_control.safetensors";
  ASSERT_EQ(run("add-control " + (root / "ldm/sd15_mini.safetensors").string() + " " + out.string()), 0);
  const auto control = io::load_safetensors(out.string());
  const auto sd = io::load_safetensors((root / "ldm/sd15_mini.safetensors").string());
  int trunk = 0;
  for (const auto& [name, t] : control) {
    const auto rest = name.substr(std::string("control_model.").size());
    if (rest.rfind("zero_convs.", 0) == 0 || rest.rfind("middle_block_out.", 0) == 0 || rest.rfind("input_hint_block.14.", 0) == 0) {
      EXPECT_EQ(t.abs().max().item<double>(), 0.0) << name;
    } else if (rest.rfind("input_hint_block.", 0) != 0) {
      ASSERT_TRUE(sd.count("model.diffusion_model." + rest)) << name;
      EXPECT_TRUE(t.equal(sd.at("model.diffusion_model." + rest))) << name;
      ++trunk;
    }
  }
  EXPECT_GT(trunk, 100);
  EXPECT_EQ(io::load_controlnet(out.string()).weights.size(), control.size());
  fs::remove(out);
}
