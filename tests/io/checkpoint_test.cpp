// Every layout of the golden mini models loads to the same tensors: the LDM
// single files convert to exactly the golden diffusers weights and configs.
#include <gtest/gtest.h>

#include "controlnet/error.h"
#include "io/checkpoint.h"
#include "io/keymap.h"
#include "support/golden.h"
#include "support/torch_zip.h"

using namespace cn;
using cn::testing::golden_root;

namespace {

void expect_same_tensors(const io::TensorMap& actual, const io::TensorMap& expected, const std::string& what) {
  std::vector<std::string> missing, extra, different;
  for (const auto& [name, t] : expected) {
    auto it = actual.find(name);
    if (it == actual.end()) missing.push_back(name);
    // A half-precision file must equal the reference rounded to its dtype.
    else if (!it->second.sizes().equals(t.sizes()) || !it->second.equal(t.to(it->second.scalar_type())))
      different.push_back(name);
  }
  for (const auto& [name, _] : actual)
    if (!expected.count(name)) extra.push_back(name);
  EXPECT_TRUE(missing.empty()) << what << ": missing " << missing.size() << ", first " << missing.front();
  EXPECT_TRUE(extra.empty()) << what << ": extra " << extra.size() << ", first " << (extra.empty() ? "" : extra.front());
  EXPECT_TRUE(different.empty()) << what << ": " << different.size() << " differ, first "
                                 << (different.empty() ? "" : different.front());
}

// The config fields the models read must equal the golden config.json values.
void expect_config_fields(const nlohmann::json& actual, const nlohmann::json& golden, const std::vector<std::string>& keys,
                          const std::string& what) {
  for (const auto& key : keys) {
    ASSERT_TRUE(actual.contains(key)) << what << " lacks " << key;
    auto a = actual[key], g = golden[key];
    if (a.is_number() && g.is_array()) a = nlohmann::json(std::vector<int64_t>(g.size(), a.get<int64_t>()));
    if (g.is_number() && a.is_array()) g = nlohmann::json(std::vector<int64_t>(a.size(), g.get<int64_t>()));
    EXPECT_EQ(a, g) << what << " config " << key;
  }
}

}  // namespace

TEST(Checkpoint, LdmFilesMatchTheDiffusersFolders) {
  CN_REQUIRE_GOLDEN();
  const std::vector<std::string> unet_keys = {"in_channels", "out_channels", "block_out_channels", "down_block_types",
                                              "up_block_types", "layers_per_block", "attention_head_dim",
                                              "cross_attention_dim", "use_linear_projection"};
  int checked = 0;
  for (const auto& entry : std::filesystem::directory_iterator(golden_root())) {
    const auto ldm_dir = entry.path() / "ldm";
    if (!std::filesystem::is_directory(ldm_dir)) continue;
    const auto folder = io::load_sd_model(entry.path().string());
    for (const auto& file : std::filesystem::directory_iterator(ldm_dir)) {
      const auto name = file.path().filename().string();
      if (file.path().extension() != ".safetensors" || name.rfind("control_", 0) == 0) continue;
      SCOPED_TRACE(file.path().string());
      const auto ldm = io::load_sd_model(file.path().string());
      EXPECT_EQ(ldm.family, folder.family);
      const bool fp16 = name.find("fp16") != std::string::npos;
      EXPECT_EQ(ldm.unet.weights.at("conv_in.weight").scalar_type(), fp16 ? torch::kHalf : torch::kFloat);
      expect_same_tensors(ldm.unet.weights, folder.unet.weights, "unet");
      expect_config_fields(ldm.unet.config, folder.unet.config, unet_keys, "unet");
      expect_same_tensors(ldm.vae.weights, folder.vae.weights, "vae");
      expect_config_fields(ldm.vae.config, folder.vae.config, {"block_out_channels", "layers_per_block", "latent_channels"}, "vae");
      // SD2 files hold OpenCLIP's unused last block; both layouts drop it.
      expect_same_tensors(ldm.text_encoder.weights, folder.text_encoder.weights, "text encoder");
      expect_config_fields(ldm.text_encoder.config, folder.text_encoder.config,
                           {"hidden_size", "num_attention_heads", "intermediate_size", "hidden_act", "num_hidden_layers"},
                           "text encoder");
      EXPECT_EQ(ldm.text_pad_id, folder.text_pad_id);
      ++checked;
    }
    for (const auto& file : std::filesystem::directory_iterator(ldm_dir)) {
      const auto name = file.path().filename().string();
      if (name.rfind("control_", 0) != 0 || file.path().extension() != ".safetensors") continue;
      SCOPED_TRACE(file.path().string());
      const auto ldm = io::load_controlnet(file.path().string());
      const auto diffusers = io::load_controlnet((entry.path() / "controlnet").string());
      expect_same_tensors(ldm.weights, diffusers.weights, "controlnet");
      expect_config_fields(ldm.config, diffusers.config,
                           {"block_out_channels", "down_block_types", "layers_per_block", "attention_head_dim",
                            "cross_attention_dim", "conditioning_embedding_out_channels"},
                           "controlnet");
      ++checked;
    }
  }
  EXPECT_GE(checked, 4) << "expected SD and ControlNet LDM files in both golden models";
}

TEST(Checkpoint, LdmRoundTripIsExact) {
  CN_REQUIRE_GOLDEN();
  for (const auto* model : {"mini-sd15", "mini-sd21"}) {
    const auto dir = golden_root() / model;
    const auto folder = io::load_sd_model(dir.string());
    const auto unet_map = io::unet_name_map(folder.unet.config);
    expect_same_tensors(unet_map.to_diffusers(unet_map.to_ldm(folder.unet.weights, "unet"), "unet"), folder.unet.weights, "unet");
    const auto vae_map = io::vae_name_map(folder.vae.config);
    expect_same_tensors(vae_map.to_diffusers(vae_map.to_ldm(folder.vae.weights, "vae"), "vae"), folder.vae.weights, "vae");
  }
}

// Older diffusers folders hold .bin pickles (diffusion_pytorch_model.bin, and
// transformers' pytorch_model.bin for the text encoder).
TEST(Checkpoint, DiffusersFolderWithBinPicklesLoads) {
  CN_REQUIRE_GOLDEN();
  namespace fs = std::filesystem;
  const auto golden = golden_root() / "mini-sd15";
  const auto tmp = fs::temp_directory_path() / "cn_checkpoint_bin";
  fs::remove_all(tmp);
  fs::copy(golden, tmp, fs::copy_options::recursive);
  for (const auto& [component, stem, bin] : {std::tuple{"unet", "diffusion_pytorch_model", "diffusion_pytorch_model.bin"},
                                             {"vae", "diffusion_pytorch_model", "diffusion_pytorch_model.bin"},
                                             {"text_encoder", "model", "pytorch_model.bin"}}) {
    const auto st = tmp / component / (std::string(stem) + ".safetensors");
    cn::testing::write_torch_checkpoint(tmp / component / bin, io::load_safetensors(st.string()));
    fs::remove(st);
  }
  const auto from_bin = io::load_sd_model(tmp.string()), reference = io::load_sd_model(golden.string());
  EXPECT_NE(from_bin.unet.source.find(".bin"), std::string::npos) << from_bin.unet.source;
  EXPECT_NE(from_bin.text_encoder.source.find("pytorch_model.bin"), std::string::npos) << from_bin.text_encoder.source;
  expect_same_tensors(from_bin.unet.weights, reference.unet.weights, "unet");
  expect_same_tensors(from_bin.vae.weights, reference.vae.weights, "vae");
  expect_same_tensors(from_bin.text_encoder.weights, reference.text_encoder.weights, "text encoder");
  fs::remove_all(tmp);
}

TEST(Checkpoint, BadInputIsRefusedClearly) {
  CN_REQUIRE_GOLDEN();
  const auto tmp = std::filesystem::temp_directory_path() / "cn_checkpoint_test";
  std::filesystem::create_directories(tmp);
  auto weights = io::load_safetensors((golden_root() / "mini-sd15/ldm/sd15_mini.safetensors").string());
  weights.erase("model.diffusion_model.out.2.weight");
  io::save_safetensors((tmp / "missing.safetensors").string(), weights, {});
  try {
    io::load_sd_model((tmp / "missing.safetensors").string());
    FAIL() << "accepted a file without out.2.weight";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("out.2.weight"), std::string::npos) << e.what();
  }
  io::save_safetensors((tmp / "random.safetensors").string(), {{"some.random.name", torch::zeros({2})}}, {});
  EXPECT_THROW(io::load_sd_model((tmp / "random.safetensors").string()), Error);
  EXPECT_THROW(io::load_controlnet((tmp / "random.safetensors").string()), Error);
  try {
    io::load_sd_model((golden_root() / "mini-sd15/ldm/control_sd15_mini.safetensors").string());
    FAIL() << "accepted a ControlNet as a model";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("ControlNet"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(tmp);
}

// LDM training checkpoints carry EMA copies of the UNet as model_ema.<name
// without dots>: --ema loads them instead of the raw weights, and info sees them.
TEST(Checkpoint, EmaWeightsAreUsedWhenAsked) {
  CN_REQUIRE_GOLDEN();
  const auto file = golden_root() / "mini-sd15/ldm/sd15_mini.safetensors";
  auto weights = io::read_tensor_file(file.string());
  io::TensorMap with_ema = weights;
  for (const auto& [name, t] : weights) {
    if (name.rfind("model.diffusion_model.", 0) != 0) continue;
    std::string flat = name.substr(std::string("model.").size());
    flat.erase(std::remove(flat.begin(), flat.end(), '.'), flat.end());
    with_ema.emplace("model_ema." + flat, t + 1);  // distinguishable from the raw weights
  }
  const auto tmp = std::filesystem::temp_directory_path() / "cn_ema_test.safetensors";
  io::save_safetensors(tmp.string(), with_ema, {});

  const auto raw = io::load_sd_model(file.string());
  const auto plain = io::load_sd_model(tmp.string());
  const auto ema = io::load_sd_model(tmp.string(), true);
  EXPECT_FALSE(raw.has_ema);
  EXPECT_TRUE(plain.has_ema);
  expect_same_tensors(plain.unet.weights, raw.unet.weights, "unet without --ema");
  io::TensorMap shifted;
  for (const auto& [name, t] : raw.unet.weights) shifted.emplace(name, t + 1);
  expect_same_tensors(ema.unet.weights, shifted, "unet with --ema");
  expect_same_tensors(ema.vae.weights, raw.vae.weights, "vae with --ema");
  EXPECT_THROW(io::load_sd_model(file.string(), true), Error) << "--ema on a file without EMA weights must say so";
  std::filesystem::remove(tmp);
}
