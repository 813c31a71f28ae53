#pragma once
// The CLIP text transformer (Hugging Face CLIPTextModel names), which turns
// token ids into the cross-attention context of the UNet.
#include <torch/torch.h>

#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "nn/bf16_fallbacks.h"

namespace cn::text {

struct ClipTextConfig {
  int64_t vocab_size = 49408;
  int64_t hidden_size = 768;
  int64_t intermediate_size = 3072;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 12;
  int64_t max_position_embeddings = 77;
  std::string hidden_act = "quick_gelu";  // or "gelu" (exact erf, OpenCLIP / SD2)
  double layer_norm_eps = 1e-5;
  // Output size of CLIPTextModelWithProjection; CLIPTextModel has no
  // projection, the field is only carried through (0: absent from config.json).
  int64_t projection_dim = 0;

  static ClipTextConfig from_json(const nlohmann::json& config);
  nlohmann::json to_json() const;
};

struct ClipTextOutput {
  std::vector<torch::Tensor> hidden_states;  // [0] embeddings, [i] after layer i
  torch::Tensor last_hidden_state;           // final_layer_norm(hidden_states.back())
  torch::Tensor pooled;                      // last_hidden_state at the first EOS token
};

class ClipTextModelImpl : public torch::nn::Module {
 public:
  explicit ClipTextModelImpl(const ClipTextConfig& config);
  const ClipTextConfig& config() const { return config_; }

  // Strict loading of Hugging Face weights; the int64 buffer
  // text_model.embeddings.position_ids that older transformers versions saved
  // is accepted and ignored (positions are always 0..T-1).
  void load_weights(const io::TensorMap& weights, const std::string& what);

  // ids [B, T] int64 (T <= max_position_embeddings), on any device.
  ClipTextOutput forward(const torch::Tensor& ids);
  // The SD conditioning: final_layer_norm of the output of layer
  // L - skip_last_layers (0: the last layer = last_hidden_state; SD2 and
  // A1111 "CLIP skip 2" = 1). Layers after that one are not run.
  torch::Tensor encode(const torch::Tensor& ids, int64_t skip_last_layers = 0);

 private:
  // hidden_states[0..layers]: the embeddings and the outputs of the first `layers` layers.
  std::vector<torch::Tensor> hidden_states(const torch::Tensor& ids, int64_t layers);

  ClipTextConfig config_;
  torch::nn::Embedding token_embedding{nullptr}, position_embedding{nullptr};
  torch::nn::ModuleList layers{nullptr};
  cn::nn::LayerNorm final_layer_norm{nullptr};
};
TORCH_MODULE(ClipTextModel);

}  // namespace cn::text
