#pragma once
// Where the reference fixtures are: ../shared/golden beside the checkout, or
// $CONTROLNET_GOLDEN_DIR. Shared by the tests and the benchmarks that use the
// fixtures' models.
#include <filesystem>
#include <string>

namespace cn::testing {

// The golden root, or an empty path when it does not exist.
std::filesystem::path golden_root();
// Why golden tests are skipped (names the directories looked at).
std::string golden_missing_message();

}  // namespace cn::testing
