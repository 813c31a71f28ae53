#include "nn/attention.h"

#include <atomic>

namespace cn::nn {
namespace {

// Elements per score block: 4M (16 MB in float32) keeps 512x512 SD from
// ever holding the full matrices. Smaller blocks sized for L2 were slower
// (bench_sd15-controlnet --attention-budgets, bf16 512: 256K 12-20 % and 64K
// 45 % slower per step; 1M to 16M alike within the machine's noise): the
// matmuls over 40-wide heads and the per-block dispatch cost more than the
// cache saves.
constexpr int64_t kDefaultBudget = int64_t{1} << 22;
std::atomic<int64_t> slice_budget{kDefaultBudget};

// [B, N, H*D] -> [B*H, N, D]
torch::Tensor split_heads(const torch::Tensor& x, int64_t heads) {
  const auto b = x.size(0), n = x.size(1), c = x.size(2);
  return x.reshape({b, n, heads, c / heads}).permute({0, 2, 1, 3}).reshape({b * heads, n, c / heads});
}

// [B*H, N, D] -> [B, N, H*D]
torch::Tensor merge_heads(const torch::Tensor& x, int64_t heads) {
  const auto bh = x.size(0), n = x.size(1), d = x.size(2);
  return x.reshape({bh / heads, heads, n, d}).permute({0, 2, 1, 3}).reshape({bh / heads, n, heads * d});
}

}  // namespace

void set_attention_slice_budget(int64_t elements) {
  slice_budget = elements > 0 ? elements : kDefaultBudget;
}

AttentionBlock attention_block(int64_t batch_heads, int64_t queries, int64_t keys) {
  const int64_t budget = slice_budget.load(), per_matrix = std::max<int64_t>(1, queries * keys);
  // Whole matrices while they fit (fewer, larger matmuls), else row slices
  // of one head's matrix.
  if (per_matrix <= budget) return {std::clamp<int64_t>(budget / per_matrix, 1, batch_heads), queries};
  return {1, std::clamp<int64_t>(budget / std::max<int64_t>(1, keys), 1, queries)};
}

torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                        int64_t heads, bool upcast, const torch::Tensor& mask) {
  TORCH_CHECK(q.dim() == 3 && k.dim() == 3 && v.dim() == 3, "attention expects [B, N, C] inputs");
  TORCH_CHECK(q.size(2) % heads == 0, "attention: ", q.size(2), " channels do not split into ", heads, " heads");
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(2) / heads));
  const bool widen = upcast && q.scalar_type() != torch::kFloat && q.scalar_type() != torch::kDouble;
  auto qh = split_heads(q, heads), kh = split_heads(k, heads), vh = split_heads(v, heads);
  if (widen) qh = qh.to(torch::kFloat), kh = kh.to(torch::kFloat);
  // The scale goes on the queries (N x D values) rather than the scores
  // (N x M), and bmm rather than baddbmm: LibTorch 1.13's CPU baddbmm can
  // read an uninitialised output even with beta = 0.
  qh = qh * scale;
  const auto kt = kh.transpose(1, 2);
  const int64_t bh = qh.size(0), n = qh.size(1);
  const auto block = attention_block(bh, n, kh.size(1));

  auto attend = [&](int64_t head, int64_t heads_len, int64_t row, int64_t rows_len) {
    auto scores = torch::bmm(qh.narrow(0, head, heads_len).narrow(1, row, rows_len), kt.narrow(0, head, heads_len));
    if (mask.defined()) {
      auto m = mask;
      if (m.dim() == 3 && m.size(0) > 1) m = m.narrow(0, head, heads_len);
      if (m.size(-2) > 1) m = m.narrow(-2, row, rows_len);
      scores.add_(m);
    }
    // In place when nothing needs the scores for backward: writing the
    // probabilities over the scores rather than into a fresh block made
    // LibTorch's bf16 softmax 1.7x faster here (identical values).
    if (scores.requires_grad())
      scores = scores.softmax(-1);
    else
      at::_softmax_out(scores, scores, -1, /*half_to_float=*/false);
    return torch::bmm(scores.to(vh.scalar_type()), vh.narrow(0, head, heads_len));
  };

  if (block.heads >= bh && block.rows >= n) return merge_heads(attend(0, bh, 0, n), heads);
  auto out = torch::empty({bh, n, vh.size(2)}, vh.options());
  for (int64_t head = 0; head < bh; head += block.heads) {
    const int64_t heads_len = std::min(block.heads, bh - head);
    for (int64_t row = 0; row < n; row += block.rows) {
      const int64_t rows_len = std::min(block.rows, n - row);
      out.narrow(0, head, heads_len).narrow(1, row, rows_len).copy_(attend(head, heads_len, row, rows_len));
    }
  }
  return merge_heads(out, heads);
}

}  // namespace cn::nn
