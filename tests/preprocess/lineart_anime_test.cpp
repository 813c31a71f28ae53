// Anime line art (Anime2Sketch UnetGenerator) against the 1.1 annotator's
// outputs (golden/preprocess/lineart_anime), on the recipe's random-weight
// netG.pth written in the official layout (torch zip, "module." names): the
// resized network input exact, the tanh output within the README's raw
// tolerance, the map end-to-end within its uint8 tolerance and the
// post-processing of the saved output bit-exact.
#include <gtest/gtest.h>

#include "controlnet/error.h"
#include "preprocess/lineart_anime.h"
#include "preprocess/preprocess.h"
#include "support/preprocess_fixtures.h"
#include "support/recipe.h"
#include "support/torch_zip.h"

using namespace cn;
namespace fs = std::filesystem;

namespace {

using cn::testing::differing_pixels;
using cn::testing::read_png;

// An annotator folder holding the recipe's netG.pth, written once (54 M values).
class LineartAnime : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (cn::testing::golden_root().empty()) return;
    annotator_dir_ = new fs::path(fs::temp_directory_path() / "cn-lineart-anime-test");
    fs::create_directories(*annotator_dir_);
    cn::testing::write_torch_checkpoint(*annotator_dir_ / "netG.pth",
                                        cn::testing::recipe_weights(cn::testing::recipe_path("lineart_anime")));
  }
  static void TearDownTestSuite() {
    if (annotator_dir_) fs::remove_all(*annotator_dir_);
    delete annotator_dir_;
    annotator_dir_ = nullptr;
  }
  static fs::path* annotator_dir_;
};
fs::path* LineartAnime::annotator_dir_ = nullptr;

// The detector inputs with a saved network output ("shapes", "photo_room"; not the saved net inputs).
std::vector<std::string> case_names() {
  const auto manifest = cn::testing::preprocess_manifest("lineart_anime");
  std::vector<std::string> names;
  for (const auto& name : cn::testing::preprocess_case_inputs(manifest))
    if (manifest.at("files").contains(name + "_raw.safetensors")) names.push_back(name);
  return names;
}

torch::Tensor saved_output(const fs::path& dir, const std::string& name) {
  return io::load_safetensors((dir / (name + "_raw.safetensors")).string()).at("tanh_out");
}

}  // namespace

TEST_F(LineartAnime, PostProcessingOfTheSavedOutputIsExact) {
  CN_REQUIRE_GOLDEN();
  const auto dir = cn::testing::preprocess_case_dir("lineart_anime");
  const auto names = case_names();
  for (const auto& name : names) {
    const auto expected = read_png(dir / (name + "_out.png"));
    EXPECT_EQ(differing_pixels(preprocess::lineart_anime_map(saved_output(dir, name), expected.size()), expected), 0)
        << name;
  }
  EXPECT_GE(names.size(), 1u);
}

TEST_F(LineartAnime, NetworkAndMapsMatchTheAnnotator) {
  CN_REQUIRE_GOLDEN();
  const auto dir = cn::testing::preprocess_case_dir("lineart_anime");
  const auto names = case_names();
  auto model = preprocess::lineart_anime_from_file(*annotator_dir_ / "netG.pth");
  torch::NoGradGuard no_grad;
  for (const auto& name : names) {
    SCOPED_TRACE(name);
    const auto input = read_png(dir / (name + "_input.png"));
    const auto net_input = read_png(dir / (name + "_net_input.png"));
    EXPECT_EQ(differing_pixels(preprocess::lineart_anime_resize(input), net_input), 0);

    const auto out = model->forward(preprocess::lineart_anime_input(net_input));
    cn::testing::expect_raw_close(out, saved_output(dir, name), "lineart_anime " + name + " tanh_out");
    cn::testing::expect_u8_map_close(preprocess::lineart_anime_map(out, input.size()),
                                     read_png(dir / (name + "_out.png")), "lineart_anime " + name + " map");
  }
  EXPECT_GE(names.size(), 1u);
}

TEST(LineartAnimeNetwork, RefusesSidesThatAreNotMultiplesOf256) {
  preprocess::AnimeUnetGenerator model;
  torch::NoGradGuard no_grad;
  EXPECT_THROW(model->forward(torch::zeros({1, 3, 256, 320})), Error);
}

// The detector finds netG.pth by its official name and returns the control
// image (the annotator's map inverted, as the 1.1 demo feeds the model); it
// names the download when the file is missing.
TEST_F(LineartAnime, DetectorGivesTheInvertedMapFromTheAnnotatorFolder) {
  CN_REQUIRE_GOLDEN();
  EXPECT_EQ(preprocess::find_detector("lineart_anime").checkpoint, "netG.pth");
  const auto dir = cn::testing::preprocess_case_dir("lineart_anime");
  const auto input = read_png(dir / "shapes_input.png");
  preprocess::DetectOptions options;
  options.resolution = std::min(input.rows, input.cols);
  options.annotator_dir = annotator_dir_->string();
  const cv::Mat expected = 255 - read_png(dir / "shapes_out.png");
  cn::testing::expect_u8_map_close(preprocess::detect("lineart_anime", input, options), preprocess::hwc3(expected),
                                   "detect lineart_anime");

  const auto empty_dir = fs::temp_directory_path() / "cn-lineart-anime-empty";
  fs::create_directories(empty_dir);
  options.annotator_dir = empty_dir.string();
  try {
    preprocess::detect("lineart_anime", input, options);
    ADD_FAILURE() << "ran without netG.pth";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("lllyasviel/Annotators/resolve/main/netG.pth"), std::string::npos) << e.what();
  }
  fs::remove_all(empty_dir);
}
