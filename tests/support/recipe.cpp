#include "support/recipe.h"

#include <fstream>
#include <nlohmann/json.hpp>

#include "support/golden_dir.h"

namespace cn::testing {

namespace {

uint64_t fnv1a64(const std::string& text) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : text) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

// splitmix64's finaliser over the key hash advanced by the element index.
double unit_value(uint64_t key_hash, uint64_t index) {
  uint64_t z = key_hash + (index + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return double(z >> 40) / double(1 << 24);
}

torch::ScalarType dtype_of(const std::string& name) {
  if (name == "F32") return torch::kFloat32;
  if (name == "F16") return torch::kFloat16;
  if (name == "I64") return torch::kInt64;
  throw std::runtime_error("recipe dtype " + name);
}

}  // namespace

std::filesystem::path recipe_path(const std::string& tag) {
  return golden_root() / "preprocess" / "weights" / (tag + ".recipe.json");
}

io::TensorMap recipe_weights(const std::filesystem::path& recipe_json) {
  std::ifstream in(recipe_json);
  if (!in) throw std::runtime_error("cannot read " + recipe_json.string());
  const auto recipe = nlohmann::json::parse(in);
  const std::string seed = recipe.at("seed");
  io::TensorMap out;
  for (const auto& t : recipe.at("tensors")) {
    const std::string key = t.at("key");
    const std::string init = t.at("init");
    const auto shape = t.at("shape").get<std::vector<int64_t>>();
    const double offset = t.value("offset", 0.0), scale = t.value("scale", 0.0);
    auto values = torch::empty(shape, torch::kFloat32);
    auto* v = values.data_ptr<float>();
    const uint64_t h = fnv1a64(seed + "/" + key);
    for (int64_t i = 0; i < values.numel(); ++i) {
      if (init == "uniform") v[i] = float(offset + scale * (2.0 * unit_value(h, uint64_t(i)) - 1.0));
      else if (init == "const") v[i] = float(offset);
      else if (init == "zeros") v[i] = 0.0f;
      else throw std::runtime_error("recipe init " + init);
    }
    // float -> half rounds to nearest even, as numpy's astype does.
    out[key] = values.to(dtype_of(t.at("dtype")));
  }
  return out;
}

}  // namespace cn::testing
