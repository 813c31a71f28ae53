#include "nn/weights.h"

#include <algorithm>
#include <sstream>

#include "controlnet/error.h"

namespace cn::nn {

io::TensorMap state_dict(const torch::nn::Module& module) {
  io::TensorMap out;
  for (const auto& p : module.named_parameters(/*recurse=*/true)) out.emplace(p.key(), p.value());
  for (const auto& b : module.named_buffers(/*recurse=*/true)) out.emplace(b.key(), b.value());
  return out;
}

void load_weights(torch::nn::Module& module, const io::TensorMap& weights, const std::string& what,
                  const std::vector<std::string>& ignore_extra) {
  auto slots = state_dict(module);
  std::vector<std::string> missing, mismatched, extra;
  for (const auto& [name, slot] : slots) {
    auto it = weights.find(name);
    if (it == weights.end()) {
      missing.push_back(name);
    } else if (it->second.sizes() != slot.sizes()) {
      std::ostringstream s;
      s << name << " (file " << it->second.sizes() << ", model " << slot.sizes() << ")";
      mismatched.push_back(s.str());
    }
  }
  for (const auto& [name, t] : weights)
    if (!slots.count(name) && std::find(ignore_extra.begin(), ignore_extra.end(), name) == ignore_extra.end())
      extra.push_back(name);
  if (!missing.empty() || !mismatched.empty() || !extra.empty()) {
    std::ostringstream s;
    s << what << ": weights do not fit the model";
    auto list = [&](const char* label, const std::vector<std::string>& names) {
      if (names.empty()) return;
      s << "\n  " << label << " (" << names.size() << "):";
      for (size_t i = 0; i < names.size() && i < 8; ++i) s << " " << names[i];
      if (names.size() > 8) s << " ...";
    };
    list("missing tensors", missing);
    list("shape mismatches", mismatched);
    list("unexpected tensors", extra);
    throw cn::Error(s.str());
  }
  torch::NoGradGuard no_grad;
  for (auto& [name, slot] : slots) slot.copy_(weights.at(name));
}

}  // namespace cn::nn
