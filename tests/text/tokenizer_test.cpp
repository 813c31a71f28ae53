#include <gtest/gtest.h>

#include <fstream>
#include <future>

#include "controlnet/error.h"
#include "support/golden.h"
#include "text/tokenizer.h"

using namespace cn;
using cn::testing::golden_root;

namespace {

nlohmann::json tokenizer_manifest() {
  std::ifstream in(golden_root() / "tokenizer" / "manifest.json");
  return nlohmann::json::parse(in);
}

text::ClipTokenizer golden_tokenizer() {
  return text::ClipTokenizer::from_folder((golden_root() / "tokenizer").string());
}

std::vector<std::string> golden_prompts(const nlohmann::json& manifest) {
  std::vector<std::string> prompts;
  for (const auto& p : manifest.at("prompts")) prompts.push_back(p.at("prompt"));
  return prompts;
}

}  // namespace

TEST(Tokenizer, MatchesReferenceIds) {
  CN_REQUIRE_GOLDEN();
  const auto manifest = tokenizer_manifest();
  const auto tokenizer = golden_tokenizer();
  const auto& params = manifest.at("params");
  EXPECT_EQ(tokenizer.bos_id(), params.at("bos_id").get<int64_t>());
  EXPECT_EQ(tokenizer.eos_id(), params.at("eos_id").get<int64_t>());
  EXPECT_EQ(tokenizer.vocab_size(), params.at("vocab_size").get<int64_t>());

  auto ids = io::SafetensorsFile::open((golden_root() / "tokenizer" / "ids.safetensors").string());
  const auto prompts = golden_prompts(manifest);
  ASSERT_FALSE(prompts.empty());
  const auto sd15 = tokenizer.sd_input_ids(prompts, params.at("pad_id_sd15").get<int64_t>());
  const auto sd2 = tokenizer.sd_input_ids(prompts, params.at("pad_id_sd2").get<int64_t>());
  EXPECT_TRUE(sd15.equal(ids->tensor("input_ids_sd15")));
  EXPECT_TRUE(sd2.equal(ids->tensor("input_ids_sd2")));
  const auto lengths = ids->tensor("lengths");
  const auto mask = ids->tensor("attention_mask");
  for (size_t i = 0; i < prompts.size(); ++i) {
    const auto& p = manifest["prompts"][i];
    SCOPED_TRACE("prompt " + std::to_string(i) + ": " + prompts[i]);
    EXPECT_EQ(text::normalize_prompt(prompts[i]), p.at("normalized").get<std::string>());
    EXPECT_EQ(tokenizer.bpe_tokens(prompts[i]), p.at("bpe_tokens").get<std::vector<std::string>>());
    auto encoded = tokenizer.encode(prompts[i]);
    encoded.insert(encoded.begin(), tokenizer.bos_id());
    encoded.push_back(tokenizer.eos_id());
    EXPECT_EQ(encoded, p.at("ids_untruncated").get<std::vector<int64_t>>());
    // Tokens kept after truncation: BOS + at most 75 + EOS; the rest is padding.
    const auto kept = std::min<int64_t>(encoded.size(), text::ClipTokenizer::kContextLength);
    EXPECT_EQ(kept, lengths[i].item<int64_t>());
    EXPECT_TRUE(mask[i].eq(torch::arange(text::ClipTokenizer::kContextLength).lt(kept)).all().item<bool>());
  }
}

// Every golden prompt split into chunks: each chunk is BOS + up to 75 ids +
// EOS + padding, the chunks' ids put together are the whole prompt, and a
// prompt that fits is one chunk equal to its sd_input_ids row.
TEST(Tokenizer, ChunksCoverWholePrompts) {
  CN_REQUIRE_GOLDEN();
  const auto manifest = tokenizer_manifest();
  const auto tokenizer = golden_tokenizer();
  const int64_t pad = manifest.at("params").at("pad_id_sd2");
  const int64_t per_chunk = text::ClipTokenizer::kContextLength - 2;
  bool saw_long_prompt = false;
  for (const auto& prompt : golden_prompts(manifest)) {
    SCOPED_TRACE(prompt);
    const auto ids = tokenizer.encode(prompt);
    const auto chunks = tokenizer.sd_input_id_chunks(prompt, pad);
    const int64_t expected_chunks = std::max<int64_t>(1, (int64_t(ids.size()) + per_chunk - 1) / per_chunk);
    ASSERT_EQ(chunks.sizes(), torch::IntArrayRef({expected_chunks, text::ClipTokenizer::kContextLength}));
    saw_long_prompt = saw_long_prompt || expected_chunks > 1;
    std::vector<int64_t> joined;
    for (int64_t c = 0; c < expected_chunks; ++c) {
      const int64_t n = std::min<int64_t>(per_chunk, ids.size() - c * per_chunk);
      const auto row = chunks[c];
      EXPECT_EQ(row[0].item<int64_t>(), tokenizer.bos_id());
      EXPECT_EQ(row[n + 1].item<int64_t>(), tokenizer.eos_id());
      EXPECT_TRUE(row.narrow(0, n + 2, row.size(0) - n - 2).eq(pad).all().item<bool>());
      const auto body = row.narrow(0, 1, n).contiguous();
      joined.insert(joined.end(), body.data_ptr<int64_t>(), body.data_ptr<int64_t>() + n);
    }
    EXPECT_EQ(joined, ids);
    if (expected_chunks == 1) EXPECT_TRUE(chunks[0].equal(tokenizer.sd_input_ids({prompt}, pad)[0]));
  }
  EXPECT_TRUE(saw_long_prompt) << "the golden prompts should include one longer than 75 tokens";

  std::string cats;
  for (int i = 0; i < 160; ++i) cats += "cat ";
  EXPECT_EQ(tokenizer.sd_input_id_chunks(cats, pad).size(0), 3);  // 75 + 75 + 10 tokens
}

// The ftfy subset beyond what the golden prompts exercise; the expected texts
// are what OpenAI's basic_clean + whitespace_clean + lower() give.
TEST(Tokenizer, NormalisesLikeFtfy) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"&amp;amp;", "&"},                                  // ftfy unescapes to a fixed point, then twice more
      {"<b>&amp;amp;amp;</b>", "<b>&amp;</b>"},            // text with '<' looks like HTML to ftfy: only the two later passes
      {"&#8220;quoted&#8221; &ldquo;x&rdquo;", "\"quoted\" \"x\""},
      {"\xEF\xAC\x81ne \xC4\xB2ssel", "fine ijssel"},       // Latin ligatures
      {"\xEF\xBC\xA1\xEF\xBC\xA2\xE3\x80\x80\xEF\xBC\x91", "ab 1"},  // full-width and ideographic space
      {"\x1b[1;31mred\x1b[0m", "red"},                     // terminal escapes
      {"\xC2\x93hi\xC2\x94 \xC2\x80", "\"hi\" \xE2\x82\xAC"},  // C1 controls read as windows-1252
      {"a\xC2\xA0\xE2\x80\x83z\r\n", "a z"},                // NBSP, em space, CRLF are whitespace
      {"e\xCC\x81", "\xC3\xA9"},                            // NFC
      {"\xCE\xA3\xCE\x91\xCE\xA3", "\xCF\x83\xCE\xB1\xCF\x82"},  // final sigma, as Python's lower()
      {"zero\xE2\x80\x8Bwidth\xEF\xBB\xBF", "zero\xE2\x80\x8Bwidth"},  // ZWSP stays, BOM goes
  };
  for (const auto& [raw, normalized] : cases) EXPECT_EQ(text::normalize_prompt(raw), normalized) << raw;
}

TEST(Tokenizer, ConcurrentEncodingAgrees) {
  const auto& tokenizer = text::ClipTokenizer::bundled();
  const std::string prompt = "a watercolor painting of a lighthouse at dusk, highly detailed";
  std::vector<std::future<std::vector<int64_t>>> runs;
  for (int i = 0; i < 4; ++i)
    runs.push_back(std::async(std::launch::async, [&] {
      std::vector<int64_t> last;
      for (int k = 0; k < 50; ++k) last = tokenizer.encode(prompt + " v" + std::to_string(k % 7));
      return last;
    }));
  const auto expected = tokenizer.encode(prompt + " v" + std::to_string(49 % 7));
  for (auto& r : runs) EXPECT_EQ(r.get(), expected);
}

TEST(Tokenizer, BundledVocabularyIsTheStandardOne) {
  const auto& bundled = text::ClipTokenizer::bundled();
  EXPECT_EQ(bundled.encode("a photo of a cat"), (std::vector<int64_t>{320, 1125, 539, 320, 2368}));
  CN_REQUIRE_GOLDEN();
  const auto prompts = golden_prompts(tokenizer_manifest());
  EXPECT_TRUE(bundled.sd_input_ids(prompts, 0).equal(golden_tokenizer().sd_input_ids(prompts, 0)));
}

TEST(Tokenizer, MissingFilesAreNamed) {
  try {
    text::ClipTokenizer::from_folder("/nonexistent/tokenizer");
    FAIL() << "expected cn::Error";
  } catch (const cn::Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/tokenizer/vocab.json"), std::string::npos) << e.what();
  }
}
