// HED soft edges against the annotator (golden/preprocess/hed): the network
// with the recipe's random weights within the README's raw tolerance, the
// maps end-to-end within its uint8 tolerance, and the post-processing of the
// saved projections bit-exact.
#include <gtest/gtest.h>
#include <unistd.h>

#include "preprocess/edges.h"
#include "preprocess/hed.h"
#include "preprocess/preprocess.h"
#include "support/preprocess_fixtures.h"
#include "support/recipe.h"

using namespace cn;
namespace fs = std::filesystem;

namespace {

using cn::testing::differing_pixels;
using cn::testing::expect_raw_close;
using cn::testing::expect_u8_map_close;
using cn::testing::read_png;

std::vector<torch::Tensor> saved_projections(const io::TensorMap& raw) {
  std::vector<torch::Tensor> projections;
  for (int k = 1; k <= 5; ++k) projections.push_back(raw.at("projection" + std::to_string(k)));
  return projections;
}

// The recipe's ControlNetHED.pth state dict (F16, module keys), built once.
class Hed : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (cn::testing::golden_root().empty()) return;
    checkpoint_ = new io::TensorMap(cn::testing::recipe_weights(cn::testing::recipe_path("hed")));
  }
  static void TearDownTestSuite() {
    delete checkpoint_;
    checkpoint_ = nullptr;
  }
  static io::TensorMap* checkpoint_;
};
io::TensorMap* Hed::checkpoint_ = nullptr;

}  // namespace

TEST_F(Hed, PostProcessingOfSavedProjectionsIsExact) {
  CN_REQUIRE_GOLDEN();
  const auto dir = cn::testing::preprocess_case_dir("hed");
  const auto names = cn::testing::preprocess_case_inputs(cn::testing::preprocess_manifest("hed"));
  for (const auto& name : names) {
    const auto raw = io::load_safetensors((dir / (name + "_raw.safetensors")).string());
    const auto expected = read_png(dir / (name + "_out.png"));
    const auto size = expected.size();
    EXPECT_EQ(differing_pixels(preprocess::hed_edge_map(saved_projections(raw), size, false), expected), 0) << name;
    EXPECT_EQ(differing_pixels(preprocess::hed_edge_map(saved_projections(raw), size, true),
                               read_png(dir / (name + "_out_safe.png"))),
              0)
        << name;
    EXPECT_EQ(differing_pixels(preprocess::fake_scribble(expected, size).map, read_png(dir / (name + "_scribble.png"))), 0)
        << name;
  }
  EXPECT_GE(names.size(), 1u);
}

TEST_F(Hed, NetworkAndMapsMatchTheAnnotator) {
  CN_REQUIRE_GOLDEN();
  const auto dir = cn::testing::preprocess_case_dir("hed");
  const auto names = cn::testing::preprocess_case_inputs(cn::testing::preprocess_manifest("hed"));
  auto model = preprocess::load_hed(*checkpoint_, "hed recipe");
  torch::NoGradGuard no_grad;
  for (const auto& name : names) {
    const auto input = read_png(dir / (name + "_input.png"));
    const auto raw = io::load_safetensors((dir / (name + "_raw.safetensors")).string());
    const auto projections = model->forward(preprocess::hed_input(input));
    const auto expected = saved_projections(raw);
    ASSERT_EQ(projections.size(), expected.size());
    for (size_t k = 0; k < projections.size(); ++k)
      expect_raw_close(projections[k], expected[k], "hed " + name + " projection" + std::to_string(k + 1));

    const auto out = preprocess::hed_edge_map(projections, input.size(), false);
    expect_u8_map_close(out, read_png(dir / (name + "_out.png")), "hed " + name + " out");
    expect_u8_map_close(preprocess::hed_edge_map(projections, input.size(), true),
                        read_png(dir / (name + "_out_safe.png")), "hed " + name + " out_safe");
    expect_u8_map_close(preprocess::fake_scribble(out, input.size()).map, read_png(dir / (name + "_scribble.png")),
                        "hed " + name + " scribble");
  }
  EXPECT_GE(names.size(), 1u);
}

// The registered detectors find ControlNetHED.pth by its official name (here
// a safetensors copy of the recipe's in a temporary folder) and name the
// download when it is missing.
TEST_F(Hed, DetectorsRunTheCheckpointFromTheAnnotatorFolder) {
  CN_REQUIRE_GOLDEN();
  for (const auto* name : {"softedge_hed", "softedge_hedsafe", "scribble_hed"})
    EXPECT_EQ(preprocess::find_detector(name).checkpoint, "ControlNetHED.pth") << name;
  const auto annotator_dir = fs::temp_directory_path() / ("cn-hed-test-" + std::to_string(::getpid()));
  fs::create_directories(annotator_dir);
  io::save_safetensors((annotator_dir / "ControlNetHED.safetensors").string(), *checkpoint_);

  const auto dir = cn::testing::preprocess_case_dir("hed");
  const auto input = read_png(dir / "shapes_input.png");
  preprocess::DetectOptions options;
  options.resolution = std::min(input.rows, input.cols);
  options.annotator_dir = annotator_dir.string();
  const auto hed = preprocess::detect("softedge_hed", input, options);
  const auto safe = preprocess::detect("softedge_hedsafe", input, options);
  const auto scribble = preprocess::detect("scribble_hed", input, options);
  fs::remove_all(annotator_dir);
  expect_u8_map_close(hed, preprocess::hwc3(read_png(dir / "shapes_out.png")), "detect softedge_hed");
  expect_u8_map_close(safe, preprocess::hwc3(read_png(dir / "shapes_out_safe.png")), "detect softedge_hedsafe");
  expect_u8_map_close(scribble, read_png(dir / "shapes_scribble.png"), "detect scribble_hed");

  options.annotator_dir = annotator_dir.string();
  try {
    preprocess::detect("softedge_hed", input, options);
    ADD_FAILURE() << "ran without ControlNetHED.pth";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("lllyasviel/Annotators/resolve/main/ControlNetHED.pth"), std::string::npos)
        << e.what();
  }
}

TEST(HedInput, CroppedViewsGiveTheirPixels) {
  cv::Mat image(40, 50, CV_8UC3);
  cv::randu(image, 0, 256);
  const cv::Mat crop = image(cv::Rect(3, 5, 30, 20));
  ASSERT_FALSE(crop.isContinuous());
  EXPECT_TRUE(torch::equal(preprocess::hed_input(crop), preprocess::hed_input(crop.clone())));
}
