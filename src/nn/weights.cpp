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

void set_memory_format(torch::nn::Module& module, torch::MemoryFormat format) {
  torch::NoGradGuard no_grad;
  for (auto& p : module.parameters(/*recurse=*/true)) {
    if (p.dim() != 4 || p.is_contiguous(format)) continue;
    const bool owns_storage = p.storage_offset() == 0 && p.is_non_overlapping_and_dense() &&
                              p.storage().nbytes() == size_t(p.numel()) * p.element_size();
    if (!owns_storage) {
      p.set_data(p.contiguous(format));
      continue;
    }
    // Relaid in its own storage through a copy of this one tensor: a new
    // storage per tensor would hold the whole model twice at the peak (the
    // allocator keeps what is freed).
    const auto values = p.clone();
    const auto strides = format == torch::MemoryFormat::ChannelsLast
                             ? c10::get_channels_last_strides_2d(p.sizes())
                             : std::vector<int64_t>{p.size(1) * p.size(2) * p.size(3), p.size(2) * p.size(3), p.size(3), 1};
    p.set_data(torch::empty({0}, p.options()).set_(p.storage(), 0, p.sizes(), strides).copy_(values));
  }
}

}  // namespace cn::nn
