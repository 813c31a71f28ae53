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

// Stores every 4-D parameter (the convolution kernels) in `format`. With
// channels-last kernels a convolution gives channels-last output whatever its
// input's layout, so the whole network then runs channels-last: oneDNN takes
// the activations without reordering them around each convolution, and the
// transformers' token view of an image is free. Weights loaded afterwards
// keep the layout (they are copied into the slots).
void set_memory_format(torch::nn::Module& module, torch::MemoryFormat format);

}  // namespace cn::nn
