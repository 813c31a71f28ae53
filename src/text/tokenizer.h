#pragma once
// The CLIP BPE tokenizer as Stable Diffusion uses it (OpenAI simple_tokenizer
// = Hugging Face CLIPTokenizer), reading vocab.json + merges.txt.
#include <torch/torch.h>

#include <map>
#include <string>
#include <unordered_map>
#include <vector>

namespace cn::text {

class ClipTokenizer {
 public:
  static constexpr int64_t kContextLength = 77;
  // Ids of <|startoftext|> and <|endoftext|> in the standard CLIP vocabulary;
  // a tokenizer reads its own from its vocab.json (bos_id(), eos_id()).
  static constexpr int64_t kBos = 49406;
  static constexpr int64_t kEos = 49407;

  // A Hugging Face tokenizer folder (vocab.json, merges.txt).
  static ClipTokenizer from_folder(const std::string& dir);
  // The standard CLIP vocabulary shipped in models/clip-tokenizer (LDM
  // checkpoints carry no tokenizer); CONTROLNET_MODELS_DIR overrides the location.
  static const ClipTokenizer& bundled();

  int64_t bos_id() const { return bos_; }
  int64_t eos_id() const { return eos_; }
  int64_t vocab_size() const { return static_cast<int64_t>(vocab_.size()); }

  // BPE ids of `text`, without BOS/EOS.
  std::vector<int64_t> encode(const std::string& text) const;
  // The BPE symbols (vocabulary strings) of `text`, for diagnostics and tests.
  std::vector<std::string> bpe_tokens(const std::string& text) const;

  // [B, 77]: BOS, the first 75 ids, EOS, then `pad_id` (49407 for SD1, 0 for SD2).
  torch::Tensor sd_input_ids(const std::vector<std::string>& prompts, int64_t pad_id) const;
  // A prompt of any length as [chunks, 77]: consecutive 75-token pieces, each
  // with BOS/EOS and padding, as A1111 encodes long prompts (the encoded chunks
  // are concatenated along the sequence). An empty prompt is one chunk.
  torch::Tensor sd_input_id_chunks(const std::string& prompt, int64_t pad_id) const;

 private:
  std::vector<std::string> split_words(const std::string& normalized) const;
  std::vector<std::string> bpe(const std::string& word) const;

  std::unordered_map<std::string, int64_t> vocab_;
  int64_t bos_ = kBos, eos_ = kEos;
  std::map<std::pair<std::string, std::string>, int64_t> merge_ranks_;
  std::vector<std::string> byte_symbols_;  // GPT-2 byte -> printable unicode (UTF-8)
  mutable std::unordered_map<std::string, std::vector<std::string>> cache_;
};

// The text normalisation applied before splitting: the subset of ftfy.fix_text
// that matters for prompts (HTML entities, curly quotes, full-width forms,
// Latin ligatures, control characters, NFC), then whitespace collapsed,
// trimmed and lower-cased. ftfy's mojibake repair is not reproduced.
std::string normalize_prompt(const std::string& text);

}  // namespace cn::text
