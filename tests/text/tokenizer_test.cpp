#include <gtest/gtest.h>

#include <fstream>

#include "support/golden.h"
#include "text/tokenizer.h"

using namespace cn;
using cn::testing::golden_root;

namespace {
nlohmann::json tokenizer_manifest() {
  std::ifstream in(golden_root() / "tokenizer" / "manifest.json");
  return nlohmann::json::parse(in);
}
}  // namespace

TEST(Tokenizer, MatchesReferenceIds) {
  CN_REQUIRE_GOLDEN();
  const auto manifest = tokenizer_manifest();
  const auto tokenizer = text::ClipTokenizer::from_folder((golden_root() / "tokenizer").string());
  auto ids = io::SafetensorsFile::open((golden_root() / "tokenizer" / "ids.safetensors").string());
  std::vector<std::string> prompts;
  for (const auto& p : manifest.at("prompts")) prompts.push_back(p.at("prompt"));
  ASSERT_FALSE(prompts.empty());
  EXPECT_TRUE(tokenizer.sd_input_ids(prompts, 49407).equal(ids->tensor("input_ids_sd15")));
  EXPECT_TRUE(tokenizer.sd_input_ids(prompts, 0).equal(ids->tensor("input_ids_sd2")));
  for (size_t i = 0; i < prompts.size(); ++i) {
    const auto& p = manifest["prompts"][i];
    SCOPED_TRACE("prompt " + std::to_string(i) + ": " + prompts[i]);
    EXPECT_EQ(text::normalize_prompt(prompts[i]), p.at("normalized").get<std::string>());
    EXPECT_EQ(tokenizer.bpe_tokens(prompts[i]), p.at("bpe_tokens").get<std::vector<std::string>>());
    auto untruncated = p.at("ids_untruncated").get<std::vector<int64_t>>();
    auto encoded = tokenizer.encode(prompts[i]);
    encoded.insert(encoded.begin(), text::ClipTokenizer::kBos);
    encoded.push_back(text::ClipTokenizer::kEos);
    EXPECT_EQ(encoded, untruncated);
  }
}

TEST(Tokenizer, LongPromptsSplitIntoChunks) {
  CN_REQUIRE_GOLDEN();
  const auto tokenizer = text::ClipTokenizer::from_folder((golden_root() / "tokenizer").string());
  std::string prompt;
  for (int i = 0; i < 160; ++i) prompt += "cat ";
  auto chunks = tokenizer.sd_input_id_chunks(prompt, 49407);
  ASSERT_EQ(chunks.size(0), 3);  // 75 + 75 + 10 tokens
  const int64_t cat = tokenizer.encode("cat").at(0);
  for (int c = 0; c < 3; ++c) {
    EXPECT_EQ(chunks[c][0].item<int64_t>(), text::ClipTokenizer::kBos);
    const int64_t n = c < 2 ? 75 : 10;
    EXPECT_EQ(chunks[c].narrow(0, 1, n).eq(cat).sum().item<int64_t>(), n);
    EXPECT_EQ(chunks[c][n + 1].item<int64_t>(), text::ClipTokenizer::kEos);
  }
  auto empty = tokenizer.sd_input_id_chunks("", 0);
  ASSERT_EQ(empty.size(0), 1);
  EXPECT_TRUE(empty[0].equal(tokenizer.sd_input_ids({""}, 0)[0]));
}

TEST(Tokenizer, BundledVocabularyIsTheStandardOne) {
  const auto& bundled = text::ClipTokenizer::bundled();
  EXPECT_EQ(bundled.encode("a photo of a cat"), (std::vector<int64_t>{320, 1125, 539, 320, 2368}));
}
