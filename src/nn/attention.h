#pragma once
// Scaled dot-product attention shared by the UNet transformers, the VAE's
// mid-block and the CLIP text encoder.
#include <torch/torch.h>

namespace cn::nn {

// Multi-head attention on [B, N, C] queries and [B, M, C] keys/values, returning
// [B, N, C]; C is split into `heads` heads and scores are scaled by head_dim^-0.5.
//
// The query tokens are processed in slices so the score block never exceeds a
// few megabytes: a 64x64 latent has 4096 tokens, and the full 4096x4096 score
// matrix per head would cost hundreds of MB per layer. `upcast` computes
// scores and softmax in float32 for half-precision inputs (SD2's
// upcast_attention). `mask`, if given, is added to the scores and must
// broadcast to [B * heads, N, M] (e.g. a [N, M] causal mask of -inf above the
// diagonal).
torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                        int64_t heads, bool upcast = false, const torch::Tensor& mask = {});

// Number of query rows per slice for a score block of `keys` columns over
// `batch_heads` matrices; exposed so tests can force several slices.
int64_t attention_slice_rows(int64_t batch_heads, int64_t queries, int64_t keys);

// Overrides the score-block budget in elements (0 restores the default); for tests.
void set_attention_slice_budget(int64_t elements);

}  // namespace cn::nn
