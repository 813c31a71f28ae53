#include "support/golden_dir.h"

#include <cstdlib>

namespace cn::testing {

namespace fs = std::filesystem;

namespace {
fs::path configured_root() {
  if (const char* env = std::getenv("CONTROLNET_GOLDEN_DIR"); env && *env) return env;
  return CONTROLNET_DEFAULT_GOLDEN_DIR;
}
}  // namespace

fs::path golden_root() {
  auto root = configured_root();
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return {};
  return fs::canonical(root, ec);
}

std::string golden_missing_message() {
  return "golden fixtures not found at '" + configured_root().string() +
         "' (set CONTROLNET_GOLDEN_DIR or place shared/golden beside the checkout); skipping";
}

}  // namespace cn::testing
