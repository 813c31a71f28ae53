// `controlnet info FILE|FOLDER`: what a checkpoint holds and what was inferred from it.
#include <filesystem>
#include <iostream>
#include <map>

#include "commands.h"
#include "controlnet/error.h"
#include "io/checkpoint.h"
#include "io/keymap.h"

namespace cn::cli {
namespace {

bool has_prefix(const io::TensorMap& t, const std::string& prefix) {
  auto it = t.lower_bound(prefix);
  return it != t.end() && it->first.rfind(prefix, 0) == 0;
}

void print_tensors(const io::TensorMap& t) {
  std::map<std::string, int64_t> by_dtype;
  int64_t params = 0;
  for (const auto& [_, v] : t) {
    params += v.numel();
    by_dtype[std::string(c10::toString(v.scalar_type()))] += v.numel();
  }
  std::cout << "tensors:    " << t.size() << "\nparameters: " << params << "\n";
  for (const auto& [dtype, n] : by_dtype) std::cout << "dtype:      " << dtype << " (" << n << " values)\n";
}

}  // namespace

void add_info_command(CLI::App& app) {
  static std::string path;
  auto* cmd = add_command(app, "info", "Describe a checkpoint: format, family, dtype, parameters, metadata, EMA", [] {
    namespace fs = std::filesystem;
    std::cout << "path:       " << path << "\n";
    if (fs::is_directory(path)) {
      if (fs::exists(fs::path(path) / "unet" / "config.json")) {
        const auto m = io::load_sd_model(path);
        std::cout << "format:     diffusers model folder\nfamily:     " << m.family << "\n";
        for (const auto& f : m.inferred) std::cout << "  " << f << "\n";
      } else {
        const auto c = io::load_controlnet(path);
        std::cout << "format:     diffusers ControlNet folder\n";
        print_tensors(c.weights);
      }
      return 0;
    }
    const auto tensors = io::read_tensor_file(path);
    const bool safetensors = fs::path(path).extension() == ".safetensors";
    std::cout << "format:     " << (safetensors ? "safetensors" : "PyTorch checkpoint (pickle)") << "\n";
    print_tensors(tensors);
    if (safetensors) {
      const auto file = io::SafetensorsFile::open(path);
      for (const auto& [k, v] : file->metadata()) std::cout << "metadata:   " << k << " = " << v << "\n";
    }
    const bool sd = has_prefix(tensors, "model.diffusion_model."), control = has_prefix(tensors, "control_model.");
    if (control) {
      std::cout << "kind:       ControlNet " << (sd ? "1.0 (with a full Stable Diffusion inside)" : "1.1 (ControlNet only)") << "\n";
      const auto c = io::load_controlnet(path);
      std::cout << "  hint channels " << c.config["conditioning_embedding_out_channels"].dump() << ", block channels "
                << c.config["block_out_channels"].dump() << ", context " << c.config["cross_attention_dim"] << "\n";
    }
    if (sd) {
      const auto m = io::load_sd_model(path);
      std::cout << "kind:       Stable Diffusion (LDM single file)\nEMA:        " << (m.has_ema ? "yes (use --ema)" : "no") << "\n";
      for (const auto& f : m.inferred) std::cout << "  " << f << "\n";
    }
    if (!sd && !control) {
      if (has_prefix(tensors, "controlnet_mid_block")) std::cout << "kind:       ControlNet (diffusers names)\n";
      else if (has_prefix(tensors, "encoder.down.") || has_prefix(tensors, "first_stage_model.")) std::cout << "kind:       VAE (LDM names)\n";
      else std::cout << "kind:       unknown (not a Stable Diffusion, ControlNet or VAE layout)\n";
    }
    return 0;
  });
  cmd->add_option("file", path, "Checkpoint file or diffusers folder")->required()->check(CLI::ExistingPath);
}

}  // namespace cn::cli
