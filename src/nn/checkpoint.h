#pragma once
// Gradient checkpointing (LibTorch has no torch.utils.checkpoint): a segment
// runs without keeping its activations, and backward runs it again with
// gradients enabled to backpropagate through the recomputation. Trades one
// more forward pass of the segment for its activation memory.
#include <torch/torch.h>

#include <functional>
#include <vector>

namespace cn::nn {

using Segment = std::function<std::vector<torch::Tensor>(const std::vector<torch::Tensor>&)>;

// segment(inputs), differentiable with respect to `inputs` and `parameters`
// (the tensors the segment reads besides its inputs, e.g. a module's
// parameters). The segment must be deterministic: it runs twice.
std::vector<torch::Tensor> checkpoint(const Segment& segment, const std::vector<torch::Tensor>& inputs,
                                      const std::vector<torch::Tensor>& parameters);

}  // namespace cn::nn
