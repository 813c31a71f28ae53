// The random-weight recipe generator used by the network preprocessor tests
// reproduces the fixtures' own check values (first 8 values of every tensor).
#include <gtest/gtest.h>

#include "io/pickle.h"
#include "support/golden.h"
#include "support/recipe.h"

using namespace cn;
namespace fs = std::filesystem;

TEST(Recipe, ReproducesTheCheckValuesOfEveryRecipe) {
  CN_REQUIRE_GOLDEN();
  const auto weights_dir = cn::testing::golden_root() / "preprocess" / "weights";
  const auto check = io::load_safetensors((weights_dir / "recipe_check.safetensors").string());
  int recipes = 0;
  int64_t compared = 0;
  for (const auto& entry : fs::directory_iterator(weights_dir)) {
    const std::string file = entry.path().filename().string();
    const std::string suffix = ".recipe.json";
    if (file.size() <= suffix.size() || file.compare(file.size() - suffix.size(), suffix.size(), suffix) != 0) continue;
    const std::string tag = file.substr(0, file.size() - suffix.size());
    ++recipes;
    for (const auto& [key, tensor] : cn::testing::recipe_weights(entry.path())) {
      const auto it = check.find(tag + ":" + key);
      ASSERT_NE(it, check.end()) << tag << ":" << key << " missing from recipe_check";
      const auto expected = it->second.flatten();
      const auto actual = tensor.flatten().slice(0, 0, expected.numel());
      ASSERT_EQ(actual.scalar_type(), expected.scalar_type()) << tag << ":" << key;
      ASSERT_TRUE(torch::equal(actual, expected)) << tag << ":" << key;
      compared += expected.numel();
    }
  }
  EXPECT_GE(recipes, 10);
  EXPECT_GT(compared, 0);
}

TEST(Recipe, MatchesTheShippedPidinetCheckpoint) {
  CN_REQUIRE_GOLDEN();
  const auto weights_dir = cn::testing::golden_root() / "preprocess" / "weights";
  const auto shipped = io::load_torch_checkpoint((weights_dir / "table5_pidinet.pth").string());
  const auto made = cn::testing::recipe_weights(cn::testing::recipe_path("pidinet"));
  ASSERT_EQ(shipped.size(), made.size());
  for (const auto& [key, tensor] : made) {
    auto it = shipped.find(key);
    if (it == shipped.end()) it = shipped.find("state_dict." + key);
    ASSERT_NE(it, shipped.end()) << key;
    EXPECT_TRUE(torch::equal(it->second, tensor)) << key;
  }
}
