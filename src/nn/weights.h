#pragma once
// Loading a state dict (names as the module's named_parameters/buffers) into a
// torch::nn::Module, strictly: every parameter must be given with its exact
// shape and nothing may be left over, or one error lists what is wrong.
#include <torch/torch.h>

#include <string>

#include "io/safetensors.h"

namespace cn::nn {

// Copies `weights` into `module`'s parameters and buffers, converting to the
// module's dtype. `what` names the source in errors (file and component).
// Tensors named in `ignore_extra` (exact names) may be present without a slot.
void load_weights(torch::nn::Module& module, const io::TensorMap& weights, const std::string& what,
                  const std::vector<std::string>& ignore_extra = {});

// The module's parameters and buffers by name, as a TensorMap (views, no copy).
io::TensorMap state_dict(const torch::nn::Module& module);

}  // namespace cn::nn
