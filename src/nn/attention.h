#pragma once
// Scaled dot-product attention shared by the UNet transformers, the VAE's
// mid-block and the CLIP text encoder.
#include <torch/torch.h>

namespace cn::nn {

// Multi-head attention on [B, N, C] queries and [B, M, C] keys/values, returning
// [B, N, C]; C is split into `heads` heads and scores are scaled by head_dim^-0.5.
//
// Heads and query tokens are processed in blocks of a few megabytes: a 64x64
// latent has 4096 tokens, and the full 4096x4096 score matrices of all heads
// would cost hundreds of MB per layer. `upcast` computes
// scores and softmax in float32 for half-precision inputs (SD2's
// upcast_attention). `mask`, if given, is added to the scores and must
// broadcast to [B * heads, N, M] (e.g. a [N, M] causal mask of -inf above the
// diagonal).
torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                        int64_t heads, bool upcast = false, const torch::Tensor& mask = {});

// The score block computed at once: `heads` whole matrices when one fits the
// budget, else `rows` query rows of one head's matrix. Exposed so tests can
// check the slicing.
struct AttentionBlock {
  int64_t heads, rows;
};
AttentionBlock attention_block(int64_t batch_heads, int64_t queries, int64_t keys);

// Overrides the score-block budget in elements (0 restores the default); for
// tests and benchmarks.
void set_attention_slice_budget(int64_t elements);

}  // namespace cn::nn
