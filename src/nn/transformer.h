#pragma once
// The spatial transformer of the SD UNet (diffusers Transformer2DModel with
// BasicTransformerBlock), parameter names as diffusers saves them.
#include <torch/torch.h>

#include "nn/bf16_fallbacks.h"

namespace cn::nn {

// Multi-head attention with to_q/to_k/to_v (no bias) and to_out.0 (bias).
class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(int64_t query_dim, int64_t context_dim, int64_t heads, int64_t head_dim, bool upcast);
  // Self-attention when `context` is undefined.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context = {});

 private:
  int64_t heads_;
  bool upcast_;
  torch::nn::Linear to_q{nullptr}, to_k{nullptr}, to_v{nullptr};
  torch::nn::ModuleList to_out{nullptr};
};
TORCH_MODULE(Attention);

// GEGLU feed-forward: net.0.proj (dim -> 2 * inner), hidden * gelu(gate), net.2.
class FeedForwardImpl : public torch::nn::Module {
 public:
  FeedForwardImpl(int64_t dim, int64_t inner_dim);
  torch::Tensor forward(const torch::Tensor& x);

 private:
  torch::nn::Linear proj{nullptr}, out{nullptr};
};
TORCH_MODULE(FeedForward);

// Pre-LN self-attention, cross-attention and feed-forward, each residual.
class BasicTransformerBlockImpl : public torch::nn::Module {
 public:
  BasicTransformerBlockImpl(int64_t dim, int64_t heads, int64_t head_dim, int64_t context_dim, bool upcast);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context);

 private:
  LayerNorm norm1{nullptr}, norm2{nullptr}, norm3{nullptr};
  Attention attn1{nullptr}, attn2{nullptr};
  FeedForward ff{nullptr};
};
TORCH_MODULE(BasicTransformerBlock);

struct Transformer2DOptions {
  int64_t channels;
  int64_t heads;
  int64_t context_dim;
  int64_t layers = 1;
  bool linear_projection = false;  // SD2: proj_in/proj_out are Linear, SD1: 1x1 conv
  bool upcast_attention = false;
  int64_t groups = 32;
};

// GroupNorm -> proj_in -> transformer blocks over the H*W tokens -> proj_out, + input.
class Transformer2DImpl : public torch::nn::Module {
 public:
  explicit Transformer2DImpl(const Transformer2DOptions& options);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context);

 private:
  Transformer2DOptions options_;
  torch::nn::GroupNorm norm{nullptr};
  torch::nn::AnyModule proj_in, proj_out;
  torch::nn::ModuleList transformer_blocks{nullptr};
};
TORCH_MODULE(Transformer2D);

}  // namespace cn::nn
