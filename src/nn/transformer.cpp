#include "nn/transformer.h"

#include "nn/attention.h"

namespace cn::nn {

namespace F = torch::nn::functional;

AttentionImpl::AttentionImpl(int64_t query_dim, int64_t context_dim, int64_t heads, int64_t head_dim, bool upcast)
    : heads_(heads), upcast_(upcast) {
  const int64_t inner = heads * head_dim;
  to_q = register_module("to_q", torch::nn::Linear(torch::nn::LinearOptions(query_dim, inner).bias(false)));
  to_k = register_module("to_k", torch::nn::Linear(torch::nn::LinearOptions(context_dim, inner).bias(false)));
  to_v = register_module("to_v", torch::nn::Linear(torch::nn::LinearOptions(context_dim, inner).bias(false)));
  to_out = register_module("to_out", torch::nn::ModuleList(torch::nn::Linear(inner, query_dim)));
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& context) {
  const auto& kv = context.defined() ? context : x;
  auto out = attention(to_q(x), to_k(kv), to_v(kv), heads_, upcast_);
  return to_out[0]->as<torch::nn::Linear>()->forward(out);
}

FeedForwardImpl::FeedForwardImpl(int64_t dim, int64_t inner_dim) {
  // diffusers nests these as net.0.proj and net.2 (net.1 is a parameterless dropout).
  auto net = register_module("net", std::make_shared<torch::nn::Module>());
  auto geglu = net->register_module("0", std::make_shared<torch::nn::Module>());
  proj = geglu->register_module("proj", torch::nn::Linear(dim, 2 * inner_dim));
  out = net->register_module("2", torch::nn::Linear(inner_dim, dim));
}

torch::Tensor FeedForwardImpl::forward(const torch::Tensor& x) {
  auto chunks = proj(x).chunk(2, -1);
  return out(chunks[0] * torch::gelu(chunks[1]));
}

BasicTransformerBlockImpl::BasicTransformerBlockImpl(int64_t dim, int64_t heads, int64_t head_dim,
                                                     int64_t context_dim, bool upcast) {
  auto layer_norm = [&](const char* name) {
    return register_module(name, LayerNorm(torch::nn::LayerNormOptions({dim}).eps(1e-5)));
  };
  norm1 = layer_norm("norm1");
  attn1 = register_module("attn1", Attention(dim, dim, heads, head_dim, upcast));
  norm2 = layer_norm("norm2");
  attn2 = register_module("attn2", Attention(dim, context_dim, heads, head_dim, upcast));
  norm3 = layer_norm("norm3");
  ff = register_module("ff", FeedForward(dim, 4 * dim));
}

torch::Tensor BasicTransformerBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& context) {
  auto h = x + attn1(norm1(x));
  h = h + attn2(norm2(h), context);
  return h + ff(norm3(h));
}

Transformer2DImpl::Transformer2DImpl(const Transformer2DOptions& o) : options_(o) {
  const int64_t c = o.channels;
  norm = register_module("norm", torch::nn::GroupNorm(torch::nn::GroupNormOptions(o.groups, c).eps(1e-6)));
  if (o.linear_projection) {
    proj_in = torch::nn::AnyModule(torch::nn::Linear(c, c));
    proj_out = torch::nn::AnyModule(torch::nn::Linear(c, c));
  } else {
    proj_in = torch::nn::AnyModule(torch::nn::Conv2d(torch::nn::Conv2dOptions(c, c, 1)));
    proj_out = torch::nn::AnyModule(torch::nn::Conv2d(torch::nn::Conv2dOptions(c, c, 1)));
  }
  register_module("proj_in", proj_in.ptr());
  transformer_blocks = register_module("transformer_blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < o.layers; ++i)
    transformer_blocks->push_back(BasicTransformerBlock(c, o.heads, c / o.heads, o.context_dim, o.upcast_attention));
  register_module("proj_out", proj_out.ptr());
}

torch::Tensor Transformer2DImpl::forward(const torch::Tensor& x, const torch::Tensor& context) {
  const auto b = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  auto to_tokens = [&](const torch::Tensor& t) { return t.permute({0, 2, 3, 1}).reshape({b, h * w, c}); };
  auto to_image = [&](const torch::Tensor& t) { return t.reshape({b, h, w, c}).permute({0, 3, 1, 2}); };
  auto hidden = norm(x);
  // Linear projection acts on tokens, the 1x1 conv on the image: same maths, different weight shapes.
  hidden = options_.linear_projection ? proj_in.forward(to_tokens(hidden)) : to_tokens(proj_in.forward(hidden));
  for (const auto& block : *transformer_blocks) hidden = block->as<BasicTransformerBlock>()->forward(hidden, context);
  hidden = options_.linear_projection ? to_image(proj_out.forward(hidden)) : proj_out.forward(to_image(hidden).contiguous(x.suggest_memory_format()));
  return hidden + x;
}

}  // namespace cn::nn
