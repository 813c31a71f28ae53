#include "text/clip.h"

#include <nlohmann/json.hpp>

#include "controlnet/error.h"
#include "nn/attention.h"
#include "nn/weights.h"

namespace cn::text {
namespace {

cn::nn::LayerNorm layer_norm(const ClipTextConfig& c) {
  return cn::nn::LayerNorm(torch::nn::LayerNormOptions({c.hidden_size}).eps(c.layer_norm_eps));
}

// Pre-LN block: x += attn(LN1(x)) with a causal mask; x += fc2(act(fc1(LN2(x)))).
class ClipLayerImpl : public torch::nn::Module {
 public:
  explicit ClipLayerImpl(const ClipTextConfig& c) : heads_(c.num_attention_heads), quick_gelu_(c.hidden_act == "quick_gelu") {
    auto attn = register_module("self_attn", std::make_shared<torch::nn::Module>());
    const int64_t w = c.hidden_size;
    q_proj = attn->register_module("q_proj", torch::nn::Linear(w, w));
    k_proj = attn->register_module("k_proj", torch::nn::Linear(w, w));
    v_proj = attn->register_module("v_proj", torch::nn::Linear(w, w));
    out_proj = attn->register_module("out_proj", torch::nn::Linear(w, w));
    layer_norm1 = register_module("layer_norm1", layer_norm(c));
    auto mlp = register_module("mlp", std::make_shared<torch::nn::Module>());
    fc1 = mlp->register_module("fc1", torch::nn::Linear(w, c.intermediate_size));
    fc2 = mlp->register_module("fc2", torch::nn::Linear(c.intermediate_size, w));
    layer_norm2 = register_module("layer_norm2", layer_norm(c));
  }

  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& causal_mask) {
    auto h = layer_norm1(x);
    auto a = nn::attention(q_proj(h), k_proj(h), v_proj(h), heads_, false, causal_mask);
    auto y = x + out_proj(a);
    auto m = fc1(layer_norm2(y));
    m = quick_gelu_ ? m * torch::sigmoid(1.702 * m) : torch::gelu(m);
    return y + fc2(m);
  }

 private:
  int64_t heads_;
  bool quick_gelu_;
  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, out_proj{nullptr}, fc1{nullptr}, fc2{nullptr};
  cn::nn::LayerNorm layer_norm1{nullptr}, layer_norm2{nullptr};
};
TORCH_MODULE(ClipLayer);

}  // namespace

ClipTextConfig ClipTextConfig::from_json(const nlohmann::json& j) {
  ClipTextConfig c;
  try {
    c.vocab_size = j.value("vocab_size", c.vocab_size);
    c.hidden_size = j.value("hidden_size", c.hidden_size);
    c.intermediate_size = j.value("intermediate_size", c.intermediate_size);
    c.num_hidden_layers = j.value("num_hidden_layers", c.num_hidden_layers);
    c.num_attention_heads = j.value("num_attention_heads", c.num_attention_heads);
    c.max_position_embeddings = j.value("max_position_embeddings", c.max_position_embeddings);
    c.hidden_act = j.value("hidden_act", c.hidden_act);
    c.layer_norm_eps = j.value("layer_norm_eps", c.layer_norm_eps);
    c.projection_dim = j.value("projection_dim", c.projection_dim);
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("text encoder config: ") + e.what());
  }
  if (c.hidden_act != "quick_gelu" && c.hidden_act != "gelu")
    throw Error("text encoder config: unsupported \"hidden_act\": " + c.hidden_act);
  if (c.num_attention_heads <= 0 || c.hidden_size % c.num_attention_heads != 0)
    throw Error("text encoder config: hidden_size does not split into num_attention_heads");
  return c;
}

nlohmann::json ClipTextConfig::to_json() const {
  nlohmann::json j = {{"architectures", {"CLIPTextModel"}},
          {"model_type", "clip_text_model"},
          {"vocab_size", vocab_size},
          {"hidden_size", hidden_size},
          {"intermediate_size", intermediate_size},
          {"num_hidden_layers", num_hidden_layers},
          {"num_attention_heads", num_attention_heads},
          {"max_position_embeddings", max_position_embeddings},
          {"hidden_act", hidden_act},
          {"layer_norm_eps", layer_norm_eps}};
  if (projection_dim > 0) j["projection_dim"] = projection_dim;
  return j;
}

ClipTextModelImpl::ClipTextModelImpl(const ClipTextConfig& c) : config_(c) {
  auto text_model = register_module("text_model", std::make_shared<torch::nn::Module>());
  auto embeddings = text_model->register_module("embeddings", std::make_shared<torch::nn::Module>());
  token_embedding = embeddings->register_module("token_embedding", torch::nn::Embedding(c.vocab_size, c.hidden_size));
  position_embedding =
      embeddings->register_module("position_embedding", torch::nn::Embedding(c.max_position_embeddings, c.hidden_size));
  auto encoder = text_model->register_module("encoder", std::make_shared<torch::nn::Module>());
  layers = encoder->register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) layers->push_back(ClipLayer(c));
  final_layer_norm = text_model->register_module("final_layer_norm", layer_norm(c));
}

void ClipTextModelImpl::load_weights(const io::TensorMap& weights, const std::string& what) {
  nn::load_weights(*this, weights, what, {"text_model.embeddings.position_ids"});
}

std::vector<torch::Tensor> ClipTextModelImpl::hidden_states(const torch::Tensor& ids, int64_t layers_to_run) {
  if (ids.dim() != 2 || ids.scalar_type() != torch::kLong)
    throw Error("text encoder: token ids must be a [batch, tokens] int64 tensor");
  const int64_t t = ids.size(1);
  if (t > config_.max_position_embeddings)
    throw Error("text encoder: " + std::to_string(t) + " tokens exceed the context of " +
                std::to_string(config_.max_position_embeddings));
  const auto device = token_embedding->weight.device();
  const auto positions = torch::arange(t, torch::TensorOptions().dtype(torch::kLong).device(device));
  auto x = token_embedding(ids.to(device)) + position_embedding(positions).unsqueeze(0);
  // Causal: token i attends to tokens 0..i. Padding is not masked (SD never
  // passes an attention mask), so padded positions see the whole prompt.
  const auto causal = torch::full({t, t}, -std::numeric_limits<float>::infinity(), x.options()).triu(1);
  std::vector<torch::Tensor> states{x};
  for (int64_t i = 0; i < layers_to_run; ++i) states.push_back(layers[i]->as<ClipLayer>()->forward(states.back(), causal));
  return states;
}

ClipTextOutput ClipTextModelImpl::forward(const torch::Tensor& ids) {
  ClipTextOutput out;
  out.hidden_states = hidden_states(ids, config_.num_hidden_layers);
  out.last_hidden_state = final_layer_norm(out.hidden_states.back());
  // HF's pooler: the state at the first occurrence of the largest id, which is
  // the EOS token (49407) in the CLIP vocabulary whether padding is EOS or 0.
  const auto eos = ids.to(out.last_hidden_state.device()).argmax(-1);
  out.pooled = out.last_hidden_state.index({torch::arange(ids.size(0), eos.options()), eos});
  return out;
}

torch::Tensor ClipTextModelImpl::encode(const torch::Tensor& ids, int64_t skip_last_layers) {
  if (skip_last_layers < 0 || skip_last_layers >= config_.num_hidden_layers)
    throw Error("text encoder: clip skip " + std::to_string(skip_last_layers) + " must leave at least one of the " +
                std::to_string(config_.num_hidden_layers) + " layers");
  return final_layer_norm(hidden_states(ids, config_.num_hidden_layers - skip_last_layers).back());
}

}  // namespace cn::text
