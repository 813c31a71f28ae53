#pragma once
// Prompt -> text conditioning, as Stable Diffusion pipelines do it: CLIP BPE
// tokens padded to 77, the text encoder's last (or an earlier) layer after the
// final layer norm. Prompts longer than 75 tokens are encoded in 75-token chunks
// (each with BOS/EOS, padded to 77) and concatenated along the sequence, as
// A1111 does; the prompt and the negative prompt are padded with empty chunks
// to the same length so they batch together.
#include <torch/torch.h>

#include <string>

#include "io/checkpoint.h"
#include "pipeline/denoise.h"
#include "text/clip.h"
#include "text/tokenizer.h"

namespace cn::pipeline {

class PromptEncoder {
 public:
  PromptEncoder(const io::SdModel& model, torch::ScalarType dtype, const torch::Device& device);

  // [chunks, 77] token ids of a prompt.
  torch::Tensor token_chunks(const std::string& prompt) const;
  // [1, 77 * max(chunks, min_chunks), C]; `extra_skip` layers are skipped on
  // top of the model's own (SD2 LDM files use the penultimate layer).
  torch::Tensor encode(const std::string& prompt, int64_t extra_skip, int64_t min_chunks = 1);
  // Conditioning for `batch` copies of the prompt, with the negative prompt
  // when `guidance` is on.
  PromptEmbeddings encode(const std::string& prompt, const std::string& negative, bool guidance, int64_t extra_skip,
                          int64_t batch);

 private:
  text::ClipTokenizer tokenizer_;
  text::ClipTextModel model_{nullptr};
  int64_t pad_id_;
  torch::Device device_;
};

}  // namespace cn::pipeline
