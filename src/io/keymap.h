#pragma once
// LDM (CompVis / Stability / lllyasviel) <-> diffusers: the name
// correspondences as one table per network, applied in either direction by
// one mechanism, and the architecture read off an LDM file's tensors.
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/checkpoint.h"

namespace cn::io {

// A name correspondence: `ldm` prefix <-> `diffusers` prefix, with renames of
// the part after the prefix (e.g. in_layers.0 -> norm1).
struct Rename {
  std::string ldm, diffusers;
  bool conv_as_linear = false;  // LDM 1x1 conv [C, C, 1, 1] <-> diffusers Linear [C, C]
};
struct PrefixPair {
  std::string ldm, diffusers;
  const std::vector<Rename>* inner = nullptr;
};

class NameMap {
 public:
  explicit NameMap(std::vector<PrefixPair> pairs) : pairs_(std::move(pairs)) {}
  // Renames (and reshapes) every tensor; a name outside the map is an error naming it.
  TensorMap to_diffusers(const TensorMap& ldm, const std::string& source) const;
  TensorMap to_ldm(const TensorMap& diffusers, const std::string& source) const;

 private:
  TensorMap convert(const TensorMap& in, bool to_diffusers, const std::string& source) const;
  std::vector<PrefixPair> pairs_;
};

// The tables, for an architecture given as a diffusers config.
NameMap unet_name_map(const nlohmann::json& unet_config);
NameMap controlnet_name_map(const nlohmann::json& controlnet_config);
NameMap vae_name_map(const nlohmann::json& vae_config);

// A text encoder (diffusers names) in the LDM single-file layout: SD1 under
// cond_stage_model.transformer, SD2 (`openclip`) with OpenCLIP names under
// cond_stage_model.model plus zero placeholders for what SD2 never reads
// (OpenCLIP's last block, text_projection, logit_scale).
TensorMap text_encoder_to_ldm(const Component& text, bool openclip);

// Any tensor file: safetensors, or a PyTorch .pth/.ckpt/.pt (zip or legacy)
// through the restricted unpickler (Lightning checkpoints: their state_dict).
TensorMap read_tensor_file(const std::string& path);

// SD's training schedule as a diffusers scheduler config.
nlohmann::json default_scheduler_config(const std::string& prediction_type);

SdModel load_ldm_checkpoint(const std::string& path, bool use_ema);
Component load_ldm_vae(const std::string& path);
Component load_ldm_controlnet(const std::string& path);

}  // namespace cn::io
