#pragma once
// Loading Stable Diffusion and ControlNet checkpoints in every layout people
// download: diffusers folders and LDM/CompVis single files (SD 1.x/2.x,
// ControlNet 1.0 with a full SD inside, ControlNet 1.1). Whatever the layout,
// the result is diffusers-named weights plus a diffusers config.json, which
// the models are built from.
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace cn::io {

// One network: its diffusers config and weights with diffusers names.
struct Component {
  nlohmann::json config;
  TensorMap weights;
  std::string source;  // file (and part) the weights came from, for messages
};

struct SdModel {
  Component unet, vae, text_encoder;
  std::string tokenizer_dir;              // empty: the bundled CLIP vocabulary
  int64_t text_pad_id = 49407;            // SD1 pads with <|endoftext|>, SD2 with "!" (0)
  nlohmann::json scheduler_config;        // diffusers scheduler config (SD defaults when unknown)
  std::string family;                     // "SD1.x" / "SD2.x"
  std::string layout;                     // "diffusers" / "ldm"
  std::vector<std::string> inferred;      // what was read off the tensors, for `info`
  bool has_ema = false;
};

// A diffusers folder or an LDM single file (.safetensors / .ckpt / .pth).
SdModel load_sd_model(const std::string& path, bool use_ema = false);
// Only the VAE: a diffusers vae folder or file, or an LDM VAE file (e.g. vae-ft-mse).
Component load_vae(const std::string& path);
// A ControlNet: diffusers folder or single file, or an LDM file with
// control_model.* keys (1.1, or 1.0 with a full SD alongside).
Component load_controlnet(const std::string& path);

// The pad token id of a Hugging Face tokenizer folder (special_tokens_map.json;
// <|endoftext|> when unspecified).
int64_t tokenizer_pad_id(const std::string& tokenizer_dir);

// Reads a JSON file, with errors naming it.
nlohmann::json read_json(const std::string& path);

}  // namespace cn::io
