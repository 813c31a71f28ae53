#include "nn/checkpoint.h"

#include <torch/csrc/autograd/function.h>

namespace cn::nn {
namespace {

using torch::autograd::variable_list;

// The backward node of a checkpointed segment (what a custom
// torch::autograd::Function builds, written out: Function<T>::apply does not
// see tensors inside a std::vector argument). Its next edges are the inputs'
// and parameters', so the engine routes the gradients it returns into
// upstream nodes and into the parameters' .grad as for any other op.
struct CheckpointBackward : torch::autograd::Node {
  Segment segment;
  std::vector<torch::Tensor> inputs, parameters;  // inputs as they came (no outputs kept: no cycle)

  std::string name() const override { return "CheckpointBackward"; }

  variable_list apply(variable_list&& grad_outputs) override {
    std::vector<torch::Tensor> fresh_inputs, targets;
    std::vector<size_t> target_of;  // edge index -> position in targets (SIZE_MAX: none)
    for (const auto& x : inputs) {
      fresh_inputs.push_back(x.detach().requires_grad_(x.requires_grad()));
      target_of.push_back(x.requires_grad() ? targets.size() : SIZE_MAX);
      if (x.requires_grad()) targets.push_back(fresh_inputs.back());
    }
    for (const auto& p : parameters) {
      target_of.push_back(p.requires_grad() ? targets.size() : SIZE_MAX);
      if (p.requires_grad()) targets.push_back(p);
    }
    variable_list outputs;
    {
      torch::AutoGradMode enable(true);
      outputs = segment(fresh_inputs);
    }
    variable_list roots, root_grads;
    for (size_t i = 0; i < outputs.size(); ++i)
      if (grad_outputs[i].defined() && outputs[i].requires_grad())
        roots.push_back(outputs[i]), root_grads.push_back(grad_outputs[i]);
    variable_list grads(target_of.size());
    if (roots.empty() || targets.empty()) return grads;
    const auto target_grads = torch::autograd::grad(roots, targets, root_grads, /*retain_graph=*/false,
                                                    /*create_graph=*/false, /*allow_unused=*/true);
    for (size_t i = 0; i < target_of.size(); ++i)
      if (target_of[i] != SIZE_MAX) grads[i] = target_grads[target_of[i]];
    return grads;
  }
};

}  // namespace

std::vector<torch::Tensor> checkpoint(const Segment& segment, const std::vector<torch::Tensor>& inputs,
                                      const std::vector<torch::Tensor>& parameters) {
  auto needs_grad = [](const std::vector<torch::Tensor>& ts) {
    return std::any_of(ts.begin(), ts.end(), [](const torch::Tensor& t) { return t.requires_grad(); });
  };
  if (!torch::GradMode::is_enabled() || !(needs_grad(inputs) || needs_grad(parameters))) return segment(inputs);
  std::vector<torch::Tensor> outputs;
  {
    torch::NoGradGuard no_grad;  // nothing of the segment is kept
    outputs = segment(inputs);
  }
  auto node = std::shared_ptr<CheckpointBackward>(new CheckpointBackward(), torch::autograd::deleteNode);
  node->segment = segment;
  node->inputs = inputs;
  node->parameters = parameters;
  std::vector<torch::Tensor> edges_of = inputs;
  edges_of.insert(edges_of.end(), parameters.begin(), parameters.end());
  node->set_next_edges(torch::autograd::collect_next_edges(edges_of));
  for (auto& out : outputs)
    if (out.is_floating_point()) torch::autograd::create_gradient_edge(out, node);
  return outputs;
}

}  // namespace cn::nn
