#pragma once
// Sinusoidal timestep embedding and its MLP, as diffusers and LDM define them.
#include <torch/torch.h>

namespace cn::nn {

// [B] (or 0-dim, broadcast to `batch`) timesteps, integer or fractional, to a
// [B, channels] float32 embedding: cat(cos, sin) when flip_sin_to_cos, with
// frequencies exp(-ln(10000) * i / (half - freq_shift)). Always float32, as the
// reference computes it; callers cast to the model dtype.
torch::Tensor timestep_embedding(const torch::Tensor& timesteps, int64_t batch, int64_t channels,
                                 bool flip_sin_to_cos, double freq_shift);

// linear_1 -> SiLU -> linear_2.
class TimestepEmbeddingImpl : public torch::nn::Module {
 public:
  TimestepEmbeddingImpl(int64_t in_channels, int64_t embed_dim);
  torch::Tensor forward(const torch::Tensor& x);

 private:
  torch::nn::Linear linear_1{nullptr}, linear_2{nullptr};
};
TORCH_MODULE(TimestepEmbedding);

}  // namespace cn::nn
