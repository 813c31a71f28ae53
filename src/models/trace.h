#pragma once
#include <torch/torch.h>

#include <map>
#include <string>

namespace cn::models {

// Intermediate activations under the reference's debug names
// ("intermediate.down_blocks.0", "encoder_out", ...), filled when a forward is
// given one; tests compare them with the manifests' debug tensors.
using Trace = std::map<std::string, torch::Tensor>;

}  // namespace cn::models
