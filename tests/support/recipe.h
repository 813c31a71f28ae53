#pragma once
// Random-weight annotator checkpoints defined by golden/preprocess/weights/
// <tag>.recipe.json: every value is a hash of (seed, key, index), so the
// fixtures need not ship the large files. See golden/preprocess/README.md.
#include <filesystem>
#include <string>

#include "io/safetensors.h"

namespace cn::testing {

// The recipe's tensors under their file keys, in their file dtypes.
io::TensorMap recipe_weights(const std::filesystem::path& recipe_json);

// golden/preprocess/weights/<tag>.recipe.json
std::filesystem::path recipe_path(const std::string& tag);

}  // namespace cn::testing
