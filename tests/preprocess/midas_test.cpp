// MiDaS DPT-Hybrid depth and the maps made from it, against the annotators'
// outputs (golden/preprocess/midas, midas_normal_from_depth_v10): the network
// with the recipe's random weights within the README's MiDaS tolerance, the
// post-processing of saved raw depths bit-exact.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <opencv2/imgproc.hpp>

#include "controlnet/error.h"
#include "preprocess/midas.h"
#include "preprocess/preprocess.h"
#include "support/preprocess_fixtures.h"
#include "support/recipe.h"

using namespace cn;
namespace fs = std::filesystem;

namespace {

using cn::testing::differing_pixels;
using cn::testing::read_png;

torch::Tensor saved_depth(const fs::path& file) {
  return io::load_safetensors(file.string()).at("depth").to(torch::kFloat32);
}

// The recipe's checkpoint (490 MB of float32), built once for the suite.
class Midas : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (cn::testing::golden_root().empty()) return;
    checkpoint_ = new io::TensorMap(cn::testing::recipe_weights(cn::testing::recipe_path("midas_dpt_hybrid")));
  }
  static void TearDownTestSuite() {
    delete checkpoint_;
    checkpoint_ = nullptr;
  }
  static io::TensorMap* checkpoint_;
};
io::TensorMap* Midas::checkpoint_ = nullptr;

}  // namespace

TEST(MidasNormalV10, FromGivenDepthIsExact) {
  CN_REQUIRE_GOLDEN();
  const auto dir = cn::testing::preprocess_case_dir("midas_normal_from_depth_v10");
  const auto manifest = cn::testing::preprocess_manifest("midas_normal_from_depth_v10");
  int compared = 0;
  for (const auto& row : manifest.at("table")) {
    const std::string depth_file = row.at("depth");
    const double bg_th = row.at("bg_th"), a = row.at("a");
    const auto depth = saved_depth(dir / depth_file);
    for (const auto& [file, meta] : manifest.at("files").items()) {
      if (meta.value("depth", "") != depth_file) continue;
      const auto expected = read_png(dir / file);
      const bool normal = meta.at("channels") == "RGB";
      const auto actual = normal ? preprocess::midas_normal_map_v10(depth, a, bg_th) : preprocess::midas_depth_map(depth);
      EXPECT_EQ(differing_pixels(actual, expected), 0) << file;
      ++compared;
    }
  }
  EXPECT_EQ(compared, 2 * int(manifest.at("table").size()));
}

TEST_F(Midas, NetworkAndMapsMatchTheAnnotator) {
  CN_REQUIRE_GOLDEN();
  const auto dir = cn::testing::preprocess_case_dir("midas");
  const auto manifest = cn::testing::preprocess_manifest("midas");
  const double a = manifest.at("params").at("v10_normal").at("a");
  const double bg_th = manifest.at("params").at("v10_normal").at("bg_th");
  auto model = preprocess::load_dpt_hybrid(*checkpoint_, "midas_dpt_hybrid recipe");
  int cases = 0;
  for (const auto& [file, meta] : manifest.at("files").items()) {
    const std::string suffix = "_input.png";
    if (file.size() <= suffix.size() || file.compare(file.size() - suffix.size(), suffix.size(), suffix) != 0) continue;
    const std::string name = file.substr(0, file.size() - suffix.size());
    ++cases;
    const auto reference = saved_depth(dir / (name + "_raw.safetensors"))[0];
    const auto expected_depth = read_png(dir / (name + "_depth.png"));
    std::string normal_file;
    for (const auto& [other, other_meta] : manifest.at("files").items())
      if (other.rfind(name + "_normal_v10_bg", 0) == 0) normal_file = other;
    ASSERT_FALSE(normal_file.empty()) << name;
    const auto expected_normal = read_png(dir / normal_file);

    // Post-processing of the saved raw depth: bit-exact.
    EXPECT_EQ(differing_pixels(preprocess::midas_depth_map(reference), expected_depth), 0) << name;
    EXPECT_EQ(differing_pixels(preprocess::midas_normal_map_v10(reference, a, bg_th), expected_normal), 0) << name;

    // The network: raw depth within 1e-3 * max(1, max |ref|), maps within the uint8 tolerance.
    const auto depth = preprocess::midas_raw_depth(model, read_png(dir / file));
    cn::testing::expect_raw_close(depth, reference, "midas " + name + " raw depth", 1e-3);
    cn::testing::expect_u8_map_close(preprocess::midas_depth_map(depth), expected_depth, name + " depth map");
    cn::testing::expect_u8_map_close(preprocess::midas_normal_map_v10(depth, a, bg_th), expected_normal, name + " normal map");
  }
  EXPECT_GE(cases, 1);
}

TEST_F(Midas, RefusesIncompleteCheckpoints) {
  CN_REQUIRE_GOLDEN();
  auto incomplete = *checkpoint_;
  ASSERT_EQ(incomplete.erase("scratch.output_conv.4.bias"), 1u);
  try {
    preprocess::load_dpt_hybrid(incomplete, "incomplete");
    ADD_FAILURE() << "loaded a checkpoint without scratch.output_conv.4.bias";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("scratch.output_conv.4.bias"), std::string::npos) << e.what();
  }
}

// The registered detectors find the checkpoint by its official name (here a
// safetensors copy of the recipe's in a temporary annotator folder, in the
// {'model': sd, 'optimizer': ...} layout MiDaS' loader also takes, as flattened
// names: "model." + key; an optimizer tensor is ignored) and give the
// annotators' maps for the detect chain at the fixture's resolution.
TEST_F(Midas, DetectorsRunTheCheckpointFromTheAnnotatorFolder) {
  CN_REQUIRE_GOLDEN();
  const auto& depth = preprocess::find_detector("depth_midas");
  const auto& normal = preprocess::find_detector("normal_midas");
  EXPECT_EQ(depth.checkpoint, "dpt_hybrid-midas-501f0c75.pt");
  EXPECT_EQ(normal.checkpoint, depth.checkpoint);
  EXPECT_EQ(normal.default_a, 0.4);

  const auto annotator_dir = fs::temp_directory_path() / ("cn-midas-test-" + std::to_string(::getpid()));
  fs::create_directories(annotator_dir);
  io::TensorMap container{{"optimizer.state.exp_avg", torch::zeros({2})}};
  for (const auto& [key, tensor] : *checkpoint_) container["model." + key] = tensor;
  io::save_safetensors((annotator_dir / "dpt_hybrid-midas-501f0c75.safetensors").string(), container);

  const auto dir = cn::testing::preprocess_case_dir("midas");
  const auto input = read_png(dir / "shapes_input.png");
  preprocess::DetectOptions options;
  options.resolution = std::min(input.rows, input.cols);
  options.annotator_dir = annotator_dir.string();
  const auto depth_map = preprocess::detect("depth_midas", input, options);
  const auto normal_map = preprocess::detect("normal_midas", input, options);
  fs::remove_all(annotator_dir);

  cn::testing::expect_u8_map_close(depth_map, preprocess::hwc3(read_png(dir / "shapes_depth.png")), "detect depth_midas");
  // The detector gives the control image: the annotator's map with its channels reversed, as the 1.0 demo feeds it.
  cv::Mat annotator_order;
  cv::cvtColor(normal_map, annotator_order, cv::COLOR_BGR2RGB);
  cn::testing::expect_u8_map_close(annotator_order, read_png(dir / "shapes_normal_v10_bg0.4.png"), "detect normal_midas");
}

TEST(MidasInput, IsRgbOver127p5MinusOneAlsoForCroppedViews) {
  cv::Mat image(4, 6, CV_8UC3);
  for (int i = 0; i < int(image.total() * 3); ++i) image.data[i] = uint8_t(i * 7);
  const cv::Mat view = image(cv::Rect(1, 1, 4, 2));  // not continuous
  ASSERT_FALSE(view.isContinuous());
  const auto input = preprocess::midas_input(view);
  ASSERT_EQ(input.sizes(), (std::vector<int64_t>{1, 3, 2, 4}));
  EXPECT_TRUE(torch::equal(input, preprocess::midas_input(view.clone())));
  const auto pixel = view.at<cv::Vec3b>(1, 2);
  for (int c = 0; c < 3; ++c) EXPECT_EQ(input[0][c][1][2].item<float>(), float(pixel[c]) / 127.5f - 1.0f) << c;
}
