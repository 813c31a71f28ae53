#include "io/checkpoint.h"

#include <filesystem>
#include <fstream>

#include "controlnet/error.h"
#include "io/keymap.h"

namespace cn::io {
namespace {

namespace fs = std::filesystem;

bool path_exists(const fs::path& p) {
  std::error_code ec;
  return fs::exists(p, ec);
}

// The weights file of a diffusers component folder: safetensors in full or
// half precision, else the older .bin pickles (read by the restricted
// unpickler). `stems`: the names the component's library saves under
// (transformers' text encoders: model.safetensors but pytorch_model.bin).
fs::path component_weights(const fs::path& dir, const std::vector<std::string>& stems) {
  for (const char* suffix : {".safetensors", ".fp16.safetensors", ".bin", ".fp16.bin"})
    for (const auto& stem : stems)
      if (path_exists(dir / (stem + suffix))) return dir / (stem + suffix);
  throw Error("no weights in " + dir.string() + " (expected " + stems.front() + ".safetensors)");
}

Component diffusers_component(const fs::path& dir, const std::vector<std::string>& stems) {
  Component c;
  c.config = read_json((dir / "config.json").string());
  const auto weights = component_weights(dir, stems);
  c.weights = read_tensor_file(weights.string());
  c.source = weights.string();
  return c;
}

// SD1 and SD2 differ in the text tower: CLIP ViT-L (quick_gelu, 768) vs
// OpenCLIP ViT-H (gelu, 1024). The activation tells them apart at any width.
std::string family_of(const nlohmann::json& text_config) {
  return text_config.value("hidden_act", "quick_gelu") == "gelu" ? "SD2.x" : "SD1.x";
}

SdModel load_diffusers_folder(const fs::path& dir) {
  SdModel m;
  m.layout = "diffusers";
  m.unet = diffusers_component(dir / "unet", {"diffusion_pytorch_model"});
  m.vae = diffusers_component(dir / "vae", {"diffusion_pytorch_model"});
  m.text_encoder = diffusers_component(dir / "text_encoder", {"model", "pytorch_model"});
  // Older transformers saved the position_ids buffer; it is arange(77), not a weight.
  m.text_encoder.weights.erase("text_model.embeddings.position_ids");
  if (path_exists(dir / "tokenizer" / "vocab.json")) {
    m.tokenizer_dir = (dir / "tokenizer").string();
    m.text_pad_id = tokenizer_pad_id((dir / "tokenizer").string());
  }
  m.family = family_of(m.text_encoder.config);
  if (m.tokenizer_dir.empty()) m.text_pad_id = m.family == "SD2.x" ? 0 : 49407;
  const auto scheduler = dir / "scheduler" / "scheduler_config.json";
  m.scheduler_config = path_exists(scheduler) ? read_json(scheduler.string()) : default_scheduler_config("epsilon");
  m.inferred.push_back("diffusers folder " + dir.string());
  return m;
}

}  // namespace

// SD1 pads with <|endoftext|>, SD2 with "!" (id 0 in the CLIP vocabulary).
int64_t tokenizer_pad_id(const std::string& dir) {
  const fs::path tokenizer_dir(dir);
  const auto map_path = tokenizer_dir / "special_tokens_map.json";
  const auto map = path_exists(map_path) ? read_json(map_path.string()) : nlohmann::json::object();
  std::string token = "<|endoftext|>";
  if (map.contains("pad_token")) {
    const auto& pad = map["pad_token"];
    token = pad.is_object() ? pad.value("content", token) : pad.get<std::string>();
  }
  const auto vocab = read_json((tokenizer_dir / "vocab.json").string());
  if (!vocab.contains(token)) throw Error(map_path.string() + ": pad token '" + token + "' is not in vocab.json");
  return vocab[token].get<int64_t>();
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error("cannot open " + path);
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw Error(path + ": invalid JSON: " + e.what());
  }
}

SdModel load_sd_model(const std::string& path, bool use_ema) {
  if (path.empty()) throw Error("no model given");
  if (!path_exists(path)) throw Error("model not found: " + path);
  if (fs::is_directory(path)) {
    if (!path_exists(fs::path(path) / "unet" / "config.json"))
      throw Error(path + " is a folder but not a diffusers model (no unet/config.json)");
    return load_diffusers_folder(path);
  }
  return load_ldm_checkpoint(path, use_ema);
}

Component load_vae(const std::string& path) {
  if (!path_exists(path)) throw Error("VAE not found: " + path);
  if (fs::is_directory(path)) return diffusers_component(path, {"diffusion_pytorch_model"});
  return load_ldm_vae(path);
}

Component load_controlnet(const std::string& path) {
  if (!path_exists(path)) throw Error("ControlNet not found: " + path);
  if (fs::is_directory(path)) {
    if (!path_exists(fs::path(path) / "config.json"))
      throw Error(path + " is a folder but not a diffusers ControlNet (no config.json)");
    return diffusers_component(path, {"diffusion_pytorch_model"});
  }
  return load_ldm_controlnet(path);
}

}  // namespace cn::io
