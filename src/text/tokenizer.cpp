#include "text/tokenizer.h"

#include <unicode/locid.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>

#include "controlnet/error.h"
#include "util/paths.h"

namespace cn::text {

struct ClipTokenizer::BpeCache {
  std::mutex mutex;
  std::unordered_map<std::string, std::vector<std::string>> words;
};

namespace {

namespace fs = std::filesystem;

const std::string kStartOfText = "<|startoftext|>";
const std::string kEndOfText = "<|endoftext|>";

// A word cache larger than this is a sign of unbounded distinct input (a
// server); past it, words are still tokenized but no longer remembered.
constexpr size_t kMaxCachedWords = 100000;

std::string utf8(UChar32 c) {
  std::string out;
  icu::UnicodeString(c).toUTF8String(out);
  return out;
}

std::vector<UChar32> code_points(const std::string& s) {
  const auto u = icu::UnicodeString::fromUTF8(s);
  std::vector<UChar32> out;
  for (int32_t i = 0; i < u.length(); i += U16_LENGTH(out.back())) out.push_back(u.char32At(i));
  return out;
}

// One pass of HTML character-reference decoding: numeric references and the
// named ones that occur in prompts. Python's html.unescape knows all ~2200
// HTML5 names and some forms without ';'; those others stay as written.
std::string unescape_html(const std::string& s) {
  static const std::map<std::string, std::string> named = {
      {"amp", "&"},          {"lt", "<"},           {"gt", ">"},           {"quot", "\""},
      {"apos", "'"},         {"nbsp", "\u00A0"},    {"hellip", "\u2026"},  {"mdash", "\u2014"},
      {"ndash", "\u2013"},   {"lsquo", "\u2018"},   {"rsquo", "\u2019"},   {"ldquo", "\u201C"},
      {"rdquo", "\u201D"},   {"copy", "\u00A9"},    {"reg", "\u00AE"},     {"trade", "\u2122"},
      {"times", "\u00D7"},   {"deg", "\u00B0"}};
  std::string out;
  for (size_t i = 0; i < s.size();) {
    const size_t end = s[i] == '&' ? s.find(';', i) : std::string::npos;
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
    out += s[i++];
  }
  return out;
}

// ANSI terminal escapes (ESC [ digits-and-semicolons letter), as ftfy's
// remove_terminal_escapes.
std::string remove_terminal_escapes(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    if (s[i] == '\x1b' && i + 1 < s.size() && s[i + 1] == '[') {
      size_t j = i + 2;
      while (j < s.size() && (std::isdigit(static_cast<unsigned char>(s[j])) || s[j] == ';')) ++j;
      if (j < s.size() && std::isalpha(static_cast<unsigned char>(s[j]))) {
        i = j + 1;
        continue;
      }
    }
    out += s[i++];
  }
  return out;
}

// ftfy's fix_c1_controls: a C1 control (U+0080..U+009F) in a prompt is a
// windows-1252 byte decoded as Latin-1; bytes windows-1252 leaves undefined stay.
UChar32 c1_control_as_windows_1252(UChar32 c) {
  const char byte = static_cast<char>(c);
  const icu::UnicodeString decoded(&byte, 1, "windows-1252");
  const UChar32 d = decoded.length() == 1 ? decoded.char32At(0) : c;
  return (d == 0xFFFD || d == 0x1A) ? c : d;
}

// ftfy's remove_control_chars set (C0 controls except tab/newline/form feed/CR,
// DEL, deprecated format characters, interlinear annotations, BOM, tags,
// musical formatting).
bool is_removed_control(UChar32 c) {
  return (c <= 0x08) || c == 0x0B || (c >= 0x0E && c <= 0x1F) || c == 0x7F || (c >= 0x206A && c <= 0x206F) ||
         c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFC) || (c >= 0xE0000 && c <= 0xE007F) ||
         (c >= 0x1D173 && c <= 0x1D17A);
}

// ftfy's fix_latin_ligatures set: Latin ligatures (IJ, ŉ, DŽ..nj, DZ..dz, ff..st).
bool is_latin_ligature(UChar32 c) {
  return c == 0x0132 || c == 0x0133 || c == 0x0149 || (c >= 0x01C7 && c <= 0x01CC) || (c >= 0x01F1 && c <= 0x01F3) ||
         (c >= 0xFB00 && c <= 0xFB06);
}

// ftfy's fix_character_width set: the ideographic space and the halfwidth and
// fullwidth forms block.
bool is_width_form(UChar32 c) { return c == 0x3000 || (c >= 0xFF01 && c <= 0xFFEF); }

bool is_letter(UChar32 c) { return (U_GET_GC_MASK(c) & U_GC_L_MASK) != 0; }
bool is_number(UChar32 c) { return (U_GET_GC_MASK(c) & U_GC_N_MASK) != 0; }
// Python's \s: White_Space plus the information separators U+001C..U+001F.
bool is_space(UChar32 c) { return u_isUWhiteSpace(c) || (c >= 0x1C && c <= 0x1F); }

// One round of the ftfy fixes below on one line, in ftfy's order.
std::string fix_line_once(const std::string& line, bool unescape) {
  UErrorCode status = U_ZERO_ERROR;
  const auto* nfkc = icu::Normalizer2::getNFKCInstance(status);
  const auto* nfc = icu::Normalizer2::getNFCInstance(status);
  if (U_FAILURE(status)) throw Error("tokenizer: ICU normalisers unavailable");
  icu::UnicodeString fixed;
  for (UChar32 c : code_points(remove_terminal_escapes(unescape ? unescape_html(line) : line))) {
    if (c >= 0x80 && c <= 0x9F) c = c1_control_as_windows_1252(c);
    if (is_latin_ligature(c) || is_width_form(c)) {
      fixed += nfkc->normalize(icu::UnicodeString(c), status);
      continue;
    }
    if (c == 0x02BC || (c >= 0x2018 && c <= 0x201B)) c = '\'';
    if (c >= 0x201C && c <= 0x201F) c = '"';
    if (!is_removed_control(c)) fixed += c;
  }
  fixed = nfc->normalize(fixed, status);
  if (U_FAILURE(status)) throw Error("tokenizer: Unicode normalisation failed");
  std::string out;
  fixed.toUTF8String(out);
  return out;
}

// The subset of ftfy.fix_text (ftfy 6, default settings) that changes prompts.
// Like ftfy, it works line by line and repeats its fixes until nothing changes
// (a full-width "＆ａｍｐ；" becomes "&amp;" and then "&"). The fixes: HTML
// character references (not from the first line containing '<' on, which
// ftfy takes for HTML), ANSI terminal escapes, C1 controls read as
// windows-1252, Latin ligatures and full/half-width forms through NFKC, curly
// quotes to straight ones, control characters removed, NFC. Line-break
// unification does not matter here (all whitespace collapses later). Not
// reproduced: mojibake repair (fix_encoding, restore_byte_a0,
// decode_inconsistent_utf8...), which needs ftfy's encoding heuristics.
std::string fix_text_subset(const std::string& text) {
  std::string out;
  bool unescape = true;
  for (size_t begin = 0; begin < text.size();) {
    const size_t end = std::min(text.find('\n', begin), text.size() - 1) + 1;
    std::string line = text.substr(begin, end - begin);
    unescape = unescape && line.find('<') == std::string::npos;
    for (int round = 0; round < 16; ++round) {
      auto next = fix_line_once(line, unescape);
      if (next == line) break;
      line = std::move(next);
    }
    out += line;
    begin = end;
  }
  return out;
}

// The word pattern of OpenAI's tokenizer, tried in order at each position:
// <|startoftext|> | <|endoftext|> | 's|'t|'re|'ve|'m|'ll|'d | \p{L}+ | \p{N} |
// [^\s\p{L}\p{N}]+ (whitespace between words is skipped).
std::vector<std::string> split_words(const std::string& normalized) {
  static const std::vector<std::vector<UChar32>> literals = [] {
    std::vector<std::vector<UChar32>> out;
    for (const char* s : {"<|startoftext|>", "<|endoftext|>", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d"})
      out.push_back(code_points(s));
    return out;
  }();
  const auto cps = code_points(normalized);
  auto other = [](UChar32 x) { return !is_space(x) && !is_letter(x) && !is_number(x); };
  std::vector<std::string> words;
  for (size_t i = 0; i < cps.size();) {
    size_t len = 0;
    for (const auto& literal : literals) {
      if (i + literal.size() <= cps.size() && std::equal(literal.begin(), literal.end(), cps.begin() + i)) {
        len = literal.size();
        break;
      }
    }
    if (!len) {
      if (is_space(cps[i])) {
        ++i;
        continue;
      }
      len = 1;
      if (is_letter(cps[i])) {
        while (i + len < cps.size() && is_letter(cps[i + len])) ++len;
      } else if (!is_number(cps[i])) {
        while (i + len < cps.size() && other(cps[i + len])) ++len;
      }
    }
    std::string word;
    for (size_t k = 0; k < len; ++k) word += utf8(cps[i + k]);
    words.push_back(std::move(word));
    i += len;
  }
  return words;
}

}  // namespace

std::string normalize_prompt(const std::string& text) {
  // OpenAI's basic_clean + whitespace_clean + lower().
  const auto cleaned = unescape_html(unescape_html(fix_text_subset(text)));
  auto lowered = icu::UnicodeString::fromUTF8(cleaned);
  lowered.toLower(icu::Locale::getRoot());
  std::string lower;
  lowered.toUTF8String(lower);
  std::string out;
  bool pending_space = false;
  for (UChar32 c : code_points(lower)) {
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
  return from_files((fs::path(dir) / "vocab.json").string(), (fs::path(dir) / "merges.txt").string());
}

ClipTokenizer ClipTokenizer::from_files(const std::string& vocab_json, const std::string& merges_txt) {
  ClipTokenizer t;
  std::ifstream vocab_in(vocab_json), merges_in(merges_txt);
  if (!vocab_in) throw Error("tokenizer: cannot open " + vocab_json);
  if (!merges_in) throw Error("tokenizer: cannot open " + merges_txt);
  try {
    const auto vocab = nlohmann::json::parse(vocab_in);
    for (const auto& [token, id] : vocab.items()) t.vocab_[token] = id.get<int64_t>();
  } catch (const nlohmann::json::exception& e) {
    throw Error("tokenizer: " + vocab_json + ": " + e.what());
  }
  std::string line;
  int64_t rank = 0;
  while (std::getline(merges_in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line.rfind("#version", 0) == 0) continue;
    const auto space = line.find(' ');
    if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos)
      throw Error("tokenizer: malformed merge in " + merges_txt + ": " + line);
    t.merge_ranks_[line] = rank++;
  }
  // GPT-2's reversible byte -> unicode map: printable bytes map to themselves,
  // the others to U+0100 onwards in byte order.
  t.byte_symbols_.resize(256);
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    t.byte_symbols_[b] = utf8(printable ? b : next++);
  }
  for (const auto& special : {kStartOfText, kEndOfText})
    if (!t.vocab_.count(special)) throw Error("tokenizer: " + vocab_json + " lacks " + special);
  t.bos_ = t.vocab_.at(kStartOfText);
  t.eos_ = t.vocab_.at(kEndOfText);
  t.cache_ = std::make_shared<BpeCache>();
  return t;
}

const ClipTokenizer& ClipTokenizer::bundled() {
  static const ClipTokenizer shared = from_folder((fs::path(util::models_dir()) / "clip-tokenizer").string());
  return shared;
}

std::vector<std::string> ClipTokenizer::bpe(const std::string& word) const {
  {
    std::lock_guard<std::mutex> lock(cache_->mutex);
    if (auto it = cache_->words.find(word); it != cache_->words.end()) return it->second;
  }
  std::vector<std::string> symbols;
  for (unsigned char b : word) symbols.push_back(byte_symbols_[b]);
  symbols.back() += "</w>";
  // Repeatedly merge every occurrence of the adjacent pair with the lowest rank.
  while (symbols.size() > 1) {
    int64_t best_rank = -1;
    size_t best = 0;
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      auto it = merge_ranks_.find(symbols[i] + ' ' + symbols[i + 1]);
      if (it != merge_ranks_.end() && (best_rank < 0 || it->second < best_rank)) {
        best_rank = it->second;
        best = i;
      }
    }
    if (best_rank < 0) break;
    const std::string left = symbols[best], right = symbols[best + 1];
    std::vector<std::string> merged;
    for (size_t i = 0; i < symbols.size(); ++i) {
      if (i + 1 < symbols.size() && symbols[i] == left && symbols[i + 1] == right) {
        merged.push_back(left + right);
        ++i;
      } else {
        merged.push_back(symbols[i]);
      }
    }
    symbols = std::move(merged);
  }
  std::lock_guard<std::mutex> lock(cache_->mutex);
  if (cache_->words.size() < kMaxCachedWords) cache_->words.emplace(word, symbols);
  return symbols;
}

std::vector<std::string> ClipTokenizer::bpe_tokens(const std::string& text) const {
  std::vector<std::string> out;
  for (const auto& word : split_words(normalize_prompt(text))) {
    if (word == kStartOfText || word == kEndOfText) {  // special tokens are vocabulary entries as written
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

torch::Tensor ClipTokenizer::pack(const std::vector<std::vector<int64_t>>& pieces, int64_t pad_id) const {
  const auto rows = static_cast<int64_t>(pieces.size());
  auto out = torch::full({rows, kContextLength}, pad_id, torch::kLong);
  auto acc = out.accessor<int64_t, 2>();
  for (int64_t r = 0; r < rows; ++r) {
    const auto& piece = pieces[r];
    acc[r][0] = bos_;
    for (size_t i = 0; i < piece.size(); ++i) acc[r][i + 1] = piece[i];
    acc[r][piece.size() + 1] = eos_;
  }
  return out;
}

torch::Tensor ClipTokenizer::sd_input_ids(const std::vector<std::string>& prompts, int64_t pad_id) const {
  std::vector<std::vector<int64_t>> pieces;
  for (const auto& prompt : prompts) {
    auto ids = encode(prompt);
    ids.resize(std::min<size_t>(ids.size(), kContextLength - 2));
    pieces.push_back(std::move(ids));
  }
  return pack(pieces, pad_id);
}

torch::Tensor ClipTokenizer::sd_input_id_chunks(const std::string& prompt, int64_t pad_id) const {
  const auto ids = encode(prompt);
  const size_t per_chunk = kContextLength - 2;
  std::vector<std::vector<int64_t>> pieces;
  for (size_t begin = 0; begin < ids.size() || pieces.empty(); begin += per_chunk)
    pieces.emplace_back(ids.begin() + begin, ids.begin() + std::min(begin + per_chunk, ids.size()));
  return pack(pieces, pad_id);
}

}  // namespace cn::text
