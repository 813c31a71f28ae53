// Normal-BAE (NNET) against the annotator's outputs (golden/preprocess/
// normalbae): the network with the recipe's random weights within the README's
// 1e-4 relative tolerance, the map of the saved prediction bit-exact.
#include <gtest/gtest.h>
#include <unistd.h>

#include <opencv2/imgproc.hpp>

#include "controlnet/error.h"
#include "preprocess/normalbae.h"
#include "preprocess/preprocess.h"
#include "support/preprocess_fixtures.h"
#include "support/recipe.h"

using namespace cn;
namespace fs = std::filesystem;

namespace {

using cn::testing::differing_pixels;
using cn::testing::read_png;

// The recipe's checkpoint (file keys with DataParallel's "module."), built once.
class NormalBae : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (cn::testing::golden_root().empty()) return;
    checkpoint_ = new io::TensorMap(cn::testing::recipe_weights(cn::testing::recipe_path("normalbae")));
  }
  static void TearDownTestSuite() {
    delete checkpoint_;
    checkpoint_ = nullptr;
  }
  static io::TensorMap* checkpoint_;
};
io::TensorMap* NormalBae::checkpoint_ = nullptr;

}  // namespace

TEST_F(NormalBae, NetworkAndMapMatchTheAnnotator) {
  CN_REQUIRE_GOLDEN();
  const auto dir = cn::testing::preprocess_case_dir("normalbae");
  const auto manifest = cn::testing::preprocess_manifest("normalbae");
  auto model = preprocess::load_normal_bae(*checkpoint_, "normalbae recipe");
  int cases = 0;
  for (const auto& [file, meta] : manifest.at("files").items()) {
    const std::string suffix = "_input.png";
    if (file.size() <= suffix.size() || file.compare(file.size() - suffix.size(), suffix.size(), suffix) != 0) continue;
    const std::string name = file.substr(0, file.size() - suffix.size());
    ++cases;
    const auto raw = io::load_safetensors((dir / (name + "_raw.safetensors")).string());
    const auto expected_map = read_png(dir / (name + "_out.png"));

    // The map of the saved prediction: bit-exact.
    EXPECT_EQ(differing_pixels(preprocess::normal_bae_map(raw.at("out_res1_xyz")), expected_map), 0) << name;

    const auto input = read_png(dir / file);
    const auto net_input = preprocess::normal_bae_input(input);
    cn::testing::expect_raw_close(net_input, raw.at("net_input"), name + " net_input");
    torch::NoGradGuard no_grad;
    const auto out = model->forward(net_input);
    cn::testing::expect_raw_close(out.res8, raw.at("out_res8"), name + " out_res8");
    cn::testing::expect_raw_close(out.res4, raw.at("out_res4"), name + " out_res4");
    cn::testing::expect_raw_close(out.res1.slice(1, 0, 3), raw.at("out_res1_xyz"), name + " out_res1_xyz");
    cn::testing::expect_u8_map_close(preprocess::normal_bae_map(out.res1), expected_map, name + " map");
  }
  EXPECT_GE(cases, 1);
}

TEST_F(NormalBae, RefusesIncompleteCheckpoints) {
  CN_REQUIRE_GOLDEN();
  auto incomplete = *checkpoint_;
  ASSERT_EQ(incomplete.erase("module.decoder.out_conv_res1.6.bias"), 1u);
  try {
    preprocess::load_normal_bae(incomplete, "incomplete");
    ADD_FAILURE() << "loaded a checkpoint without decoder.out_conv_res1.6.bias";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("decoder.out_conv_res1.6.bias"), std::string::npos) << e.what();
  }
}

// The registered detector finds scannet.pt by its official name (here a
// safetensors copy of the recipe's in a temporary folder, in the official
// {'model': sd} container with DataParallel names, flattened: "model.module.").
TEST_F(NormalBae, DetectorRunsTheCheckpointFromTheAnnotatorFolder) {
  CN_REQUIRE_GOLDEN();
  EXPECT_EQ(preprocess::find_detector("normal_bae").checkpoint, "scannet.pt");
  const auto annotator_dir = fs::temp_directory_path() / ("cn-normalbae-test-" + std::to_string(::getpid()));
  fs::create_directories(annotator_dir);
  io::TensorMap container;
  for (const auto& [key, tensor] : *checkpoint_) container["model." + key] = tensor;
  io::save_safetensors((annotator_dir / "scannet.safetensors").string(), container);

  const auto dir = cn::testing::preprocess_case_dir("normalbae");
  const auto input = read_png(dir / "shapes_input.png");
  preprocess::DetectOptions options;
  options.resolution = std::min(input.rows, input.cols);
  options.annotator_dir = annotator_dir.string();
  const auto map = preprocess::detect("normal_bae", input, options);
  fs::remove_all(annotator_dir);
  cn::testing::expect_u8_map_close(map, read_png(dir / "shapes_out.png"), "detect normal_bae");
}
