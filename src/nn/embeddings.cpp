#include "nn/embeddings.h"

#include <cmath>

namespace cn::nn {

torch::Tensor timestep_embedding(const torch::Tensor& timesteps, int64_t batch, int64_t channels,
                                 bool flip_sin_to_cos, double freq_shift) {
  auto t = timesteps.to(torch::kFloat).reshape({-1});
  if (t.size(0) == 1 && batch > 1) t = t.expand({batch});
  TORCH_CHECK(t.size(0) == batch, "timesteps: expected 1 or ", batch, " values, got ", t.size(0));
  const int64_t half = channels / 2;
  auto exponent = torch::arange(half, t.options()).mul(-std::log(10000.0)).div(half - freq_shift);
  auto args = t.unsqueeze(1) * exponent.exp().unsqueeze(0);
  auto emb = flip_sin_to_cos ? torch::cat({args.cos(), args.sin()}, 1) : torch::cat({args.sin(), args.cos()}, 1);
  if (channels % 2 == 1) emb = torch::nn::functional::pad(emb, torch::nn::functional::PadFuncOptions({0, 1}));
  return emb;
}

TimestepEmbeddingImpl::TimestepEmbeddingImpl(int64_t in_channels, int64_t embed_dim)
    : linear_1(register_module("linear_1", torch::nn::Linear(in_channels, embed_dim))),
      linear_2(register_module("linear_2", torch::nn::Linear(embed_dim, embed_dim))) {}

torch::Tensor TimestepEmbeddingImpl::forward(const torch::Tensor& x) {
  return linear_2(torch::silu(linear_1(x)));
}

}  // namespace cn::nn
