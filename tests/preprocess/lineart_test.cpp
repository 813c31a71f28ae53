// Line art (fine and coarse Generator) against the 1.1 annotator's outputs
// (golden/preprocess/lineart), on random-weight checkpoints from the recipes.
#include <gtest/gtest.h>

#include <unistd.h>

#include "controlnet/error.h"
#include "preprocess/edges.h"
#include "preprocess/lineart.h"
#include "preprocess/preprocess.h"
#include "support/preprocess_fixtures.h"
#include "support/recipe.h"

using namespace cn;
namespace fs = std::filesystem;

namespace {

struct Variant {
  const char* name;    // file infix in the case: fine / coarse
  const char* recipe;  // weights/<recipe>.recipe.json
  const char* file;    // official checkpoint name
  const char* detector;
};
const Variant kVariants[] = {{"fine", "lineart", "sk_model.pth", "lineart_realistic"},
                             {"coarse", "lineart_coarse", "sk_model2.pth", "lineart_coarse"}};

cv::Mat raw_as_mat(const torch::Tensor& line) {
  const auto plane = line[0][0].contiguous();
  return cv::Mat(int(plane.size(0)), int(plane.size(1)), CV_32F, plane.data_ptr<float>()).clone();
}

}  // namespace

TEST(Lineart, NetworksAndMapsMatchTheAnnotator) {
  CN_REQUIRE_GOLDEN();
  const auto dir = cn::testing::preprocess_case_dir("lineart");
  const auto inputs = cn::testing::preprocess_case_inputs(cn::testing::preprocess_manifest("lineart"));
  ASSERT_FALSE(inputs.empty());
  torch::NoGradGuard no_grad;
  for (const auto& v : kVariants) {
    auto model = preprocess::load_lineart(cn::testing::recipe_weights(cn::testing::recipe_path(v.recipe)), v.recipe);
    for (const auto& input : inputs) {
      const std::string what = input + " " + v.name;
      SCOPED_TRACE(what);
      const auto rgb = cn::testing::read_png(dir / (input + "_input.png"));
      const auto expected_raw =
          io::load_safetensors((dir / (input + "_" + v.name + "_raw.safetensors")).string()).at("line");
      const auto x = torch::from_blob(rgb.clone().data, {1, rgb.rows, rgb.cols, 3}, torch::kUInt8)
                         .to(torch::kFloat32)
                         .div(255.0)
                         .permute({0, 3, 1, 2})
                         .contiguous();
      cn::testing::expect_raw_close(model->forward(x), expected_raw, what + " raw");
      const auto expected_map = cn::testing::read_png(dir / (input + "_" + v.name + "_out.png"));
      cn::testing::expect_u8_map_close(preprocess::lineart_map(model, rgb), expected_map, what + " map");
      // The post-processing alone, on the reference's own network output: exact.
      EXPECT_EQ(cn::testing::differing_pixels(preprocess::unit_to_u8(raw_as_mat(expected_raw)), expected_map), 0);
    }
  }
}

// The detectors find the official files (here recipe copies as safetensors)
// and return the control image: the annotator's map inverted.
TEST(Lineart, DetectorsGiveTheInvertedMapFromTheAnnotatorFolder) {
  CN_REQUIRE_GOLDEN();
  const auto dir = cn::testing::preprocess_case_dir("lineart");
  const auto annotators = fs::temp_directory_path() / ("cn-lineart-test-" + std::to_string(::getpid()));
  fs::create_directories(annotators);
  const auto rgb = cn::testing::read_png(dir / "shapes_input.png");
  preprocess::DetectOptions options;
  options.resolution = std::min(rgb.rows, rgb.cols);
  options.annotator_dir = annotators.string();
  for (const auto& v : kVariants) {
    SCOPED_TRACE(v.detector);
    EXPECT_EQ(preprocess::find_detector(v.detector).checkpoint, v.file);
    EXPECT_THROW(preprocess::detect(v.detector, rgb, options), Error);  // not there yet: the download message
    io::save_safetensors((annotators / (fs::path(v.file).stem().string() + ".safetensors")).string(),
                         cn::testing::recipe_weights(cn::testing::recipe_path(v.recipe)));
    cv::Mat control = preprocess::detect(v.detector, rgb, options), channel;
    cv::extractChannel(control, channel, 0);
    const cv::Mat expected = 255 - cn::testing::read_png(dir / (std::string("shapes_") + v.name + "_out.png"));
    cn::testing::expect_u8_map_close(channel, expected, std::string("detect ") + v.detector);
  }
  fs::remove_all(annotators);
}
