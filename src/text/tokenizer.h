#pragma once
// The CLIP BPE tokenizer as Stable Diffusion uses it (OpenAI simple_tokenizer
// = Hugging Face CLIPTokenizer), reading vocab.json + merges.txt.
#include <torch/torch.h>

#include <memory>
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
  static ClipTokenizer from_files(const std::string& vocab_json, const std::string& merges_txt);
  // The standard CLIP vocabulary shipped in models/clip-tokenizer (LDM
  // checkpoints carry no tokenizer); $CONTROLNET_MODELS_DIR overrides the location.
  static const ClipTokenizer& bundled();

  int64_t bos_id() const { return bos_; }
  int64_t eos_id() const { return eos_; }
  int64_t vocab_size() const { return static_cast<int64_t>(vocab_.size()); }

  // BPE ids of `text`, without BOS/EOS. Safe to call from several threads.
  std::vector<int64_t> encode(const std::string& text) const;
  // The BPE symbols (vocabulary strings) of `text`, for diagnostics and tests.
  std::vector<std::string> bpe_tokens(const std::string& text) const;

  // [B, 77] int64: BOS, the first 75 ids, EOS, then `pad_id` (49407 for SD1,
  // 0 for SD2); longer prompts are truncated as diffusers does.
  torch::Tensor sd_input_ids(const std::vector<std::string>& prompts, int64_t pad_id) const;
  // A prompt of any length as [chunks, 77] int64: consecutive 75-token pieces,
  // each with its own BOS/EOS and padding. This is how A1111 encodes long
  // prompts: every chunk goes through the text encoder on its own and the
  // [chunks, 77, C] states are concatenated along the sequence into
  // [1, 77 * chunks, C] (the UNet's cross-attention takes any context length).
  // Splits are at token boundaries (A1111 also prefers the last comma within
  // 20 tokens; that refinement is not reproduced). An empty prompt is one chunk,
  // equal to sd_input_ids({""}, pad_id).
  torch::Tensor sd_input_id_chunks(const std::string& prompt, int64_t pad_id) const;

 private:
  struct BpeCache;
  ClipTokenizer() = default;

  std::vector<std::string> bpe(const std::string& word) const;
  // Rows of BOS + piece + EOS + padding; every piece holds at most 75 ids.
  torch::Tensor pack(const std::vector<std::vector<int64_t>>& pieces, int64_t pad_id) const;

  std::unordered_map<std::string, int64_t> vocab_;
  int64_t bos_ = kBos, eos_ = kEos;
  // "left right" -> rank (symbols never contain a space: bytes are remapped).
  std::unordered_map<std::string, int64_t> merge_ranks_;
  std::vector<std::string> byte_symbols_;  // GPT-2 byte -> printable unicode (UTF-8)
  // Shared by copies (same vocabulary) and locked, so encode() stays const and
  // thread-safe.
  std::shared_ptr<BpeCache> cache_;
};

// The text normalisation applied before splitting into words: a subset of
// ftfy.fix_text (see tokenizer.cpp for exactly which), HTML unescaping twice,
// whitespace runs collapsed to one space, trimmed, lower-cased.
std::string normalize_prompt(const std::string& text);

}  // namespace cn::text
