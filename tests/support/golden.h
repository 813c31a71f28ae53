#pragma once
// Access to the reference fixtures in ../shared/golden (or $CONTROLNET_GOLDEN_DIR).
//
// Tests enumerate cases from the manifests they find, never from a list written
// here, so a second fixture set with other seeds and sizes runs unchanged.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "support/golden_dir.h"

namespace cn::testing {

namespace fs = std::filesystem;

// Skips the current test when the fixtures are absent.
#define CN_REQUIRE_GOLDEN()                                                      \
  do {                                                                           \
    if (::cn::testing::golden_root().empty())                                    \
      GTEST_SKIP() << ::cn::testing::golden_missing_message();                   \
  } while (0)

// One fixture case: a folder with manifest.json and its data file.
class GoldenCase {
 public:
  explicit GoldenCase(fs::path dir);
  // A case described by a section of a larger manifest (scheduler trajectories):
  // `manifest` has "file" and "tensors"; `name` is used in reports.
  GoldenCase(fs::path dir, nlohmann::json manifest, std::string name);

  const fs::path& dir() const { return dir_; }
  std::string name() const;  // path relative to the golden root
  const nlohmann::json& manifest() const { return manifest_; }
  const nlohmann::json& params() const { return manifest_.at("params"); }

  bool has(const std::string& tensor) const;
  torch::Tensor get(const std::string& tensor) const;
  double atol(const std::string& tensor) const;
  std::string role(const std::string& tensor) const;
  // Tensor names of the manifest with this role ("input", "output", "debug").
  std::vector<std::string> names(const std::string& role) const;
  // A model path named in the manifest's "models", resolved against the case folder.
  fs::path model(const std::string& key) const;

 private:
  fs::path dir_;
  nlohmann::json manifest_;
  std::string name_;
  std::shared_ptr<io::SafetensorsFile> data_;
};

// Every case under the golden root whose folder is `<model>/cases/<kind>` or
// begins with `<kind>` (kind "e2e_" selects all end-to-end runs). Empty when the
// fixtures are absent.
std::vector<GoldenCase> golden_cases(const std::string& kind);

// max |actual - expected|, both compared in float64.
double max_abs_diff(const torch::Tensor& actual, const torch::Tensor& expected);

// Expects `actual` to match the golden tensor within its own suggested_atol;
// returns the max-abs error (and records it for the parity report).
double expect_golden(const GoldenCase& c, const std::string& tensor, const torch::Tensor& actual);

}  // namespace cn::testing
