// `controlnet convert` (between the LDM and diffusers layouts, and dtypes) and
// `controlnet add-control` (a fresh ControlNet from an SD checkpoint).
#include <filesystem>
#include <fstream>
#include <iostream>

#include "commands.h"
#include "controlnet/error.h"
#include "io/checkpoint.h"
#include "io/keymap.h"
#include "models/controlnet.h"
#include "models/vae.h"
#include "nn/weights.h"
#include "util/dtype.h"

namespace cn::cli {
namespace {

namespace fs = std::filesystem;

// Floating tensors to `dtype` (empty name: kept); integer buffers are kept.
io::TensorMap cast(io::TensorMap t, const std::string& dtype) {
  if (dtype.empty()) return t;
  const auto to = parse_dtype(dtype);
  for (auto& [_, v] : t)
    if (v.is_floating_point()) v = v.to(to).contiguous();
  return t;
}

io::TensorMap with_prefix(const io::TensorMap& t, const std::string& prefix) {
  io::TensorMap out;
  for (const auto& [name, v] : t) out.emplace(prefix + name, v);
  return out;
}

void write_json(const fs::path& path, const nlohmann::json& j) {
  std::ofstream(path.string() + ".tmp") << j.dump(2);
  fs::rename(path.string() + ".tmp", path);
}

void write_component(const fs::path& dir, const std::string& stem, const io::Component& c, const std::string& dtype) {
  fs::create_directories(dir);
  write_json(dir / "config.json", c.config);
  io::save_safetensors((dir / (stem + ".safetensors")).string(), cast(c.weights, dtype), {{"format", "pt"}});
}

bool has_prefix(const io::TensorMap& t, const std::string& prefix) {
  auto it = t.lower_bound(prefix);
  return it != t.end() && it->first.rfind(prefix, 0) == 0;
}

// A ControlNet folder has no unet/; a ControlNet file has control_model.* (or
// diffusers ControlNet) names and no SD UNet.
bool looks_like_controlnet(const std::string& path) {
  if (fs::is_directory(path)) return !fs::exists(fs::path(path) / "unet");
  const auto t = io::read_tensor_file(path);
  return (has_prefix(t, "control_model.") || has_prefix(t, "controlnet_mid_block.")) && !has_prefix(t, "model.diffusion_model.");
}

}  // namespace

void add_convert_command(CLI::App& app) {
  static std::string input, output, layout = "diffusers", dtype;
  static bool controlnet = false;
  auto* cmd = add_command(app, "convert", "Convert an SD model or ControlNet between the LDM and diffusers layouts", [] {
    if (controlnet || looks_like_controlnet(input)) {
      auto c = io::load_controlnet(input);
      if (layout == "diffusers") {
        write_component(output, "diffusion_pytorch_model", c, dtype);
      } else {
        auto ldm = io::controlnet_name_map(c.config).to_ldm(c.weights, input);
        io::save_safetensors(output, cast(with_prefix(ldm, "control_model."), dtype), {{"format", "pt"}});
      }
    } else {
      auto m = io::load_sd_model(input);
      if (layout == "diffusers") {
        const fs::path out(output);
        write_component(out / "unet", "diffusion_pytorch_model", m.unet, dtype);
        write_component(out / "vae", "diffusion_pytorch_model", m.vae, dtype);
        write_component(out / "text_encoder", "model", m.text_encoder, dtype);
        fs::create_directories(out / "scheduler");
        write_json(out / "scheduler" / "scheduler_config.json", m.scheduler_config);
        if (!m.tokenizer_dir.empty()) fs::copy(m.tokenizer_dir, out / "tokenizer", fs::copy_options::recursive | fs::copy_options::overwrite_existing);
        write_json(out / "model_index.json", {{"_class_name", "StableDiffusionPipeline"}, {"converted_by", "controlnet.cpp"}});
      } else {
        const bool openclip = m.family == "SD2.x";
        if (openclip)
          std::cerr << "note: OpenCLIP's last block, text_projection and logit_scale, which SD2 never reads, are "
                       "written as zeros\n";
        io::TensorMap all = with_prefix(io::unet_name_map(m.unet.config).to_ldm(m.unet.weights, input), "model.diffusion_model.");
        for (auto& [k, v] : with_prefix(io::vae_name_map(m.vae.config).to_ldm(m.vae.weights, input), "first_stage_model.")) all.emplace(k, v);
        for (auto& [k, v] : io::text_encoder_to_ldm(m.text_encoder, openclip)) all.emplace(k, v);
        io::save_safetensors(output, cast(all, dtype), {{"format", "pt"}});
      }
    }
    std::cout << "wrote " << output << "\n";
    return 0;
  });
  cmd->add_option("input", input, "Checkpoint file or diffusers folder")->required()->check(CLI::ExistingPath);
  cmd->add_option("output", output, "Output folder (diffusers) or .safetensors file (ldm)")->required();
  cmd->add_option("--layout", layout, "diffusers or ldm")->check(CLI::IsMember({"diffusers", "ldm"}))->capture_default_str();
  cmd->add_option("--dtype", dtype, "fp32, fp16 or bf16 (default: keep)");
  cmd->add_flag("--controlnet", controlnet, "The input is a ControlNet (detected from the keys otherwise)");
}

void add_add_control_command(CLI::App& app) {
  static std::string input, output;
  static uint64_t seed = 0;
  auto* cmd = add_command(app, "add-control", "Create a ControlNet from an SD checkpoint (as tool_add_control)", [] {
    const auto m = io::load_sd_model(input);
    models::UNet2DConditionModel unet(models::UNetConfig::from_json(m.unet.config));
    nn::load_weights(*unet, m.unet.weights, m.unet.source);
    torch::manual_seed(seed);
    const auto vae_factor = models::VaeConfig::from_json(m.vae.config).downsampling_factor();
    models::ControlNetModel net(models::ControlNetConfig::from_unet(unet->config(), vae_factor));
    net->copy_trunk_from(*unet);
    const auto config = net->controlnet_config().to_json();
    auto ldm = io::controlnet_name_map(config).to_ldm(nn::state_dict(*net), input);
    io::save_safetensors(output, with_prefix(ldm, "control_model."), {{"format", "pt"}});
    std::cout << "wrote " << output << " (encoder and middle block copied, zero convolutions zero)\n";
    return 0;
  });
  cmd->add_option("input", input, "SD checkpoint or diffusers folder")->required()->check(CLI::ExistingPath);
  cmd->add_option("output", output, "ControlNet .safetensors (control_model.* names)")->required();
  cmd->add_option("--seed", seed, "Seed of the hint encoder's initialisation")->capture_default_str();
}

}  // namespace cn::cli
