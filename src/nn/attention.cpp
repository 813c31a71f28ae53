#include "nn/attention.h"

#include <atomic>

namespace cn::nn {
namespace {

// 4M float32 elements (16 MB) per score block: large enough that small inputs
// go in one slice, small enough that 512x512 SD never holds the full matrix.
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

int64_t attention_slice_rows(int64_t batch_heads, int64_t queries, int64_t keys) {
  const int64_t per_row = std::max<int64_t>(1, batch_heads * keys);
  return std::clamp<int64_t>(slice_budget.load() / per_row, 1, queries);
}

torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                        int64_t heads, bool upcast, const torch::Tensor& mask) {
  TORCH_CHECK(q.dim() == 3 && k.dim() == 3 && v.dim() == 3, "attention expects [B, N, C] inputs");
  TORCH_CHECK(q.size(2) % heads == 0, "attention: ", q.size(2), " channels do not split into ", heads, " heads");
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(2) / heads));
  const bool widen = upcast && q.scalar_type() != torch::kFloat && q.scalar_type() != torch::kDouble;
  auto qh = split_heads(q, heads), kh = split_heads(k, heads), vh = split_heads(v, heads);
  if (widen) qh = qh.to(torch::kFloat), kh = kh.to(torch::kFloat);
  const auto kt = kh.transpose(1, 2);
  const int64_t n = qh.size(1);
  const int64_t rows = attention_slice_rows(qh.size(0), n, kh.size(1));

  // bmm then scale (not baddbmm over an uninitialised tensor: LibTorch 1.13's
  // CPU kernel can read that memory even with beta = 0).
  auto attend = [&](const torch::Tensor& q_rows, const torch::Tensor& mask_rows) {
    auto scores = torch::bmm(q_rows, kt).mul_(scale);
    if (mask_rows.defined()) scores.add_(mask_rows);
    auto probs = scores.softmax(-1);
    return torch::bmm(probs.to(vh.scalar_type()), vh);
  };
  auto mask_slice = [&](int64_t start, int64_t len) {
    if (!mask.defined() || mask.size(-2) == 1) return mask;
    return mask.narrow(-2, start, len);
  };

  if (rows >= n) return merge_heads(attend(qh, mask), heads);
  std::vector<torch::Tensor> slices;
  for (int64_t start = 0; start < n; start += rows) {
    const int64_t len = std::min(rows, n - start);
    slices.push_back(attend(qh.narrow(1, start, len), mask_slice(start, len)));
  }
  auto out = torch::cat(slices, 1);
  return merge_heads(out, heads);
}

}  // namespace cn::nn
