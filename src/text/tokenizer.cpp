#include "text/tokenizer.h"

#include <unicode/locid.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "controlnet/error.h"
#include "util/paths.h"

namespace cn::text {
namespace {

namespace fs = std::filesystem;

const std::string kSpecial[] = {"<|startoftext|>", "<|endoftext|>"};

std::string utf8(UChar32 c) {
  std::string out;
  icu::UnicodeString(c).toUTF8String(out);
  return out;
}

// HTML character references (&amp;, &#39;, &#x27;, and the common named ones),
// applied twice as the reference does.
std::string unescape_html(const std::string& s) {
  static const std::map<std::string, std::string> named = {
      {"amp", "&"}, {"lt", "<"}, {"gt", ">"}, {"quot", "\""}, {"apos", "'"}, {"nbsp", "\xC2\xA0"}};
  std::string out;
  for (size_t i = 0; i < s.size();) {
    if (s[i] == '&') {
      const size_t end = s.find(';', i);
      if (end != std::string::npos && end - i <= 10) {
        const std::string ref = s.substr(i + 1, end - i - 1);
        if (auto it = named.find(ref); it != named.end()) {
          out += it->second;
          i = end + 1;
          continue;
        }
        if (ref.size() > 1 && ref[0] == '#') {
          const bool hex = ref[1] == 'x' || ref[1] == 'X';
          char* stop = nullptr;
          const long code = std::strtol(ref.c_str() + (hex ? 2 : 1), &stop, hex ? 16 : 10);
          if (stop && *stop == 0 && code > 0 && code <= 0x10FFFF) {
            out += utf8(static_cast<UChar32>(code));
            i = end + 1;
            continue;
          }
        }
      }
    }
    out += s[i++];
  }
  return out;
}

// ftfy's remove_control_chars set (C0 controls except tab/newline/form feed/CR,
// DEL, deprecated format characters, interlinear annotations, BOM, tags).
bool is_removed_control(UChar32 c) {
  return (c <= 0x08) || c == 0x0B || (c >= 0x0E && c <= 0x1F) || c == 0x7F || (c >= 0x206A && c <= 0x206F) ||
         c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFC) || (c >= 0xE0000 && c <= 0xE007F) ||
         (c >= 0x1D173 && c <= 0x1D17A);
}

bool is_letter(UChar32 c) { return (U_GET_GC_MASK(c) & U_GC_L_MASK) != 0; }
bool is_number(UChar32 c) { return (U_GET_GC_MASK(c) & U_GC_N_MASK) != 0; }
bool is_space(UChar32 c) { return u_isUWhiteSpace(c) || (c >= 0x1C && c <= 0x1F); }

std::vector<UChar32> code_points(const std::string& s) {
  auto u = icu::UnicodeString::fromUTF8(s);
  std::vector<UChar32> out;
  for (int32_t i = 0; i < u.length();) {
    const UChar32 c = u.char32At(i);
    out.push_back(c);
    i += U16_LENGTH(c);
  }
  return out;
}

}  // namespace

std::string normalize_prompt(const std::string& text) {
  UErrorCode status = U_ZERO_ERROR;
  const auto* nfkc = icu::Normalizer2::getNFKCInstance(status);
  const auto* nfc = icu::Normalizer2::getNFCInstance(status);
  if (U_FAILURE(status)) throw Error("ICU normalisers unavailable");

  icu::UnicodeString fixed;
  for (UChar32 c : code_points(unescape_html(unescape_html(text)))) {
    if (is_removed_control(c)) continue;
    if (c == 0x02BC || (c >= 0x2018 && c <= 0x201B)) c = '\'';  // curly single quotes
    if (c >= 0x201C && c <= 0x201F) c = '"';                    // curly double quotes
    const bool width_form = c == 0x3000 || (c >= 0xFF01 && c <= 0xFFEE);
    const bool ligature = c >= 0xFB00 && c <= 0xFB06;
    if (width_form || ligature) {
      fixed += nfkc->normalize(icu::UnicodeString(c), status);  // full/half width and ligatures
    } else {
      fixed += c;
    }
  }
  fixed = nfc->normalize(fixed, status);
  fixed.toLower(icu::Locale::getRoot());
  std::string utf;
  fixed.toUTF8String(utf);

  // Collapse whitespace runs to one space and trim.
  std::string out;
  bool pending_space = false;
  for (UChar32 c : code_points(utf)) {
    if (is_space(c)) {
      pending_space = !out.empty();
      continue;
    }
    if (pending_space) out += ' ';
    pending_space = false;
    out += utf8(c);
  }
  return out;
}

ClipTokenizer ClipTokenizer::from_folder(const std::string& dir) {
  ClipTokenizer t;
  const auto vocab_path = fs::path(dir) / "vocab.json", merges_path = fs::path(dir) / "merges.txt";
  std::ifstream vocab_in(vocab_path), merges_in(merges_path);
  if (!vocab_in) throw Error("tokenizer: cannot open " + vocab_path.string());
  if (!merges_in) throw Error("tokenizer: cannot open " + merges_path.string());
  try {
    const auto vocab = nlohmann::json::parse(vocab_in);
    for (const auto& [token, id] : vocab.items()) t.vocab_[token] = id.get<int64_t>();
  } catch (const nlohmann::json::exception& e) {
    throw Error("tokenizer: " + vocab_path.string() + ": " + e.what());
  }
  std::string line;
  int64_t rank = 0;
  while (std::getline(merges_in, line)) {
    if (line.empty() || line.rfind("#version", 0) == 0) continue;
    const auto space = line.find(' ');
    if (space == std::string::npos) throw Error("tokenizer: malformed merge in " + merges_path.string() + ": " + line);
    t.merge_ranks_[{line.substr(0, space), line.substr(space + 1)}] = rank++;
  }
  // GPT-2's reversible byte -> unicode map: printable bytes map to themselves,
  // the others to U+0100 onwards in byte order.
  t.byte_symbols_.resize(256);
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    t.byte_symbols_[b] = utf8(printable ? b : next++);
  }
  for (const auto& special : kSpecial)
    if (!t.vocab_.count(special)) throw Error("tokenizer: " + vocab_path.string() + " lacks " + special);
  t.bos_ = t.vocab_.at(kSpecial[0]);
  t.eos_ = t.vocab_.at(kSpecial[1]);
  return t;
}

const ClipTokenizer& ClipTokenizer::bundled() {
  static const ClipTokenizer shared = from_folder((fs::path(util::models_dir()) / "clip-tokenizer").string());
  return shared;
}

std::vector<std::string> ClipTokenizer::split_words(const std::string& normalized) const {
  const auto cps = code_points(normalized);
  std::vector<std::string> words;
  auto starts_with = [&](size_t i, const std::string& s) {
    const auto want = code_points(s);
    if (i + want.size() > cps.size()) return false;
    return std::equal(want.begin(), want.end(), cps.begin() + i);
  };
  static const char* contractions[] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
  for (size_t i = 0; i < cps.size();) {
    std::string word;
    size_t len = 0;
    for (const auto& special : kSpecial)
      if (!len && starts_with(i, special)) len = special.size();
    for (const char* c : contractions)
      if (!len && starts_with(i, c)) len = std::strlen(c);
    if (!len) {
      const UChar32 c = cps[i];
      if (is_space(c)) {
        ++i;
        continue;
      }
      len = 1;
      if (is_letter(c)) {
        while (i + len < cps.size() && is_letter(cps[i + len])) ++len;
      } else if (!is_number(c)) {
        auto other = [&](UChar32 x) { return !is_space(x) && !is_letter(x) && !is_number(x); };
        while (i + len < cps.size() && other(cps[i + len])) ++len;
      }
    }
    for (size_t k = 0; k < len; ++k) word += utf8(cps[i + k]);
    words.push_back(word);
    i += len;
  }
  return words;
}

std::vector<std::string> ClipTokenizer::bpe(const std::string& word) const {
  if (auto it = cache_.find(word); it != cache_.end()) return it->second;
  std::vector<std::string> symbols;
  for (unsigned char b : word) symbols.push_back(byte_symbols_[b]);
  symbols.back() += "</w>";
  while (symbols.size() > 1) {
    int64_t best_rank = -1;
    std::pair<std::string, std::string> best;
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      auto it = merge_ranks_.find({symbols[i], symbols[i + 1]});
      if (it != merge_ranks_.end() && (best_rank < 0 || it->second < best_rank)) {
        best_rank = it->second;
        best = it->first;
      }
    }
    if (best_rank < 0) break;
    std::vector<std::string> merged;
    for (size_t i = 0; i < symbols.size(); ++i) {
      if (i + 1 < symbols.size() && symbols[i] == best.first && symbols[i + 1] == best.second) {
        merged.push_back(best.first + best.second);
        ++i;
      } else {
        merged.push_back(symbols[i]);
      }
    }
    symbols = std::move(merged);
  }
  if (cache_.size() < 100000) cache_[word] = symbols;
  return symbols;
}

std::vector<std::string> ClipTokenizer::bpe_tokens(const std::string& text) const {
  std::vector<std::string> out;
  for (const auto& word : split_words(normalize_prompt(text))) {
    if (word == kSpecial[0] || word == kSpecial[1]) {  // special tokens are not split
      out.push_back(word);
      continue;
    }
    for (auto& s : bpe(word)) out.push_back(std::move(s));
  }
  return out;
}

std::vector<int64_t> ClipTokenizer::encode(const std::string& text) const {
  std::vector<int64_t> ids;
  for (const auto& token : bpe_tokens(text)) {
    auto it = vocab_.find(token);
    if (it == vocab_.end()) throw Error("tokenizer: symbol '" + token + "' is not in the vocabulary");
    ids.push_back(it->second);
  }
  return ids;
}

torch::Tensor ClipTokenizer::sd_input_ids(const std::vector<std::string>& prompts, int64_t pad_id) const {
  auto out = torch::full({int64_t(prompts.size()), kContextLength}, pad_id, torch::kLong);
  for (size_t p = 0; p < prompts.size(); ++p) {
    auto ids = encode(prompts[p]);
    ids.resize(std::min<size_t>(ids.size(), kContextLength - 2));
    out[p][0] = bos_;
    for (size_t i = 0; i < ids.size(); ++i) out[p][i + 1] = ids[i];
    out[p][ids.size() + 1] = eos_;
  }
  return out;
}

torch::Tensor ClipTokenizer::sd_input_id_chunks(const std::string& prompt, int64_t pad_id) const {
  const auto ids = encode(prompt);
  const int64_t per_chunk = kContextLength - 2;
  const int64_t chunks = std::max<int64_t>(1, (int64_t(ids.size()) + per_chunk - 1) / per_chunk);
  auto out = torch::full({chunks, kContextLength}, pad_id, torch::kLong);
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t begin = c * per_chunk, end = std::min<int64_t>(begin + per_chunk, ids.size());
    out[c][0] = bos_;
    for (int64_t i = begin; i < end; ++i) out[c][i - begin + 1] = ids[i];
    out[c][std::max<int64_t>(end - begin, 0) + 1] = eos_;
  }
  return out;
}

}  // namespace cn::text
