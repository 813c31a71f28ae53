#pragma once
// Builds a model from a diffusers component folder (config.json + weights),
// the layout the golden reference models are stored in.
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "nn/weights.h"

namespace cn::testing {

inline nlohmann::json read_json_file(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path.string());
  return nlohmann::json::parse(in);
}

// Module holder type M, config type C (with C::from_json).
template <typename M, typename C>
M load_diffusers_component(const std::filesystem::path& dir, const char* weights_file = "diffusion_pytorch_model.safetensors") {
  M model(C::from_json(read_json_file(dir / "config.json")));
  nn::load_weights(*model, io::load_safetensors((dir / weights_file).string()), (dir / weights_file).string());
  model->eval();
  return model;
}

}  // namespace cn::testing
