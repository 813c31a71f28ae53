#include "pipeline/prompt.h"

#include "nn/weights.h"
#include "util/dtype.h"

namespace cn::pipeline {

PromptEncoder::PromptEncoder(const io::SdModel& model, torch::ScalarType dtype, const torch::Device& device)
    : tokenizer_(model.tokenizer_dir.empty() ? text::ClipTokenizer::bundled()
                                             : text::ClipTokenizer::from_folder(model.tokenizer_dir)),
      model_(construct_in(dtype, [config = text::ClipTextConfig::from_json(model.text_encoder.config)] {
        return text::ClipTextModel(config);
      })),
      pad_id_(model.text_pad_id),
      device_(device) {
  model_->to(device, dtype);  // first: file tensors convert straight into their slots
  nn::load_weights(*model_, model.text_encoder.weights, model.text_encoder.source);
  model_->eval();
}

torch::Tensor PromptEncoder::token_chunks(const std::string& prompt) const {
  return tokenizer_.sd_input_id_chunks(prompt, pad_id_);
}

torch::Tensor PromptEncoder::encode(const std::string& prompt, int64_t extra_skip, int64_t min_chunks) {
  torch::NoGradGuard no_grad;
  auto ids = token_chunks(prompt);
  if (ids.size(0) < min_chunks) {
    auto empty = tokenizer_.sd_input_ids({""}, pad_id_);
    ids = torch::cat({ids, empty.expand({min_chunks - ids.size(0), -1})});
  }
  auto hidden = model_->encode(ids.to(device_), extra_skip);  // [chunks, 77, C]
  return hidden.reshape({1, -1, hidden.size(-1)});
}

PromptEmbeddings PromptEncoder::encode(const std::string& prompt, const std::string& negative, bool guidance,
                                       int64_t extra_skip, int64_t batch) {
  const int64_t chunks = std::max(token_chunks(prompt).size(0), guidance ? token_chunks(negative).size(0) : 0);
  PromptEmbeddings out;
  out.cond = encode(prompt, extra_skip, chunks).expand({batch, -1, -1}).contiguous();
  if (guidance) out.uncond = encode(negative, extra_skip, chunks).expand({batch, -1, -1}).contiguous();
  return out;
}

}  // namespace cn::pipeline
