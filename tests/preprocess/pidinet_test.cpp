// PiDiNet soft edges against the annotator (golden/preprocess/pidinet): the
// shipped table5_pidinet.pth (zip and legacy formats, equal to the recipe)
// run within the README's raw tolerance, the maps end-to-end within its uint8
// tolerance (the three-level safe map: see expect_safe_map_close), and the
// post-processing of the saved output bit-exact.
#include <gtest/gtest.h>
#include <unistd.h>

#include "preprocess/edges.h"
#include "preprocess/pidinet.h"
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

fs::path shipped(const std::string& file) { return cn::testing::golden_root() / "preprocess" / "weights" / file; }

// Names of the network's outputs in the fixtures, in forward()'s order.
const char* const kOutputs[] = {"sigmoid_e1", "sigmoid_e2", "sigmoid_e3", "sigmoid_e4", "sigmoid_fused"};

// The safe map quantizes the fused output to three levels, so a raw drift the
// README allows (1e-4) moves a pixel a whole level where the raw value sits on
// a level boundary. The end-to-end safe map must equal the annotator's except
// at such pixels: ones whose level changes within the raw tolerance of the
// reference output (the bit-exact post-processing is checked apart).
void expect_safe_map_close(const torch::Tensor& fused, const torch::Tensor& reference_fused, const cv::Mat& expected,
                           const std::string& what) {
  constexpr double kRawTolerance = 1e-4;
  const cv::Mat actual = preprocess::pidinet_edge_map(fused, true);
  const cv::Mat low = preprocess::pidinet_edge_map(reference_fused - kRawTolerance, true);
  const cv::Mat high = preprocess::pidinet_edge_map(reference_fused + kRawTolerance, true);
  ASSERT_EQ(actual.size(), expected.size()) << what;
  int64_t differing = 0, unexplained = 0;
  for (int y = 0; y < expected.rows; ++y)
    for (int x = 0; x < expected.cols; ++x) {
      if (actual.at<uint8_t>(y, x) == expected.at<uint8_t>(y, x)) continue;
      ++differing;
      unexplained += low.at<uint8_t>(y, x) == high.at<uint8_t>(y, x);
    }
  std::cout << "[parity] " << what << " pixels on another level " << differing << ", not on a level boundary "
            << unexplained << "\n";
  EXPECT_EQ(unexplained, 0) << what;
  EXPECT_LE(double(differing), 0.005 * double(expected.total())) << what;
}

}  // namespace

TEST(PiDiNet, ShippedCheckpointsInBothFormatsAreTheRecipe) {
  CN_REQUIRE_GOLDEN();
  const auto recipe = cn::testing::recipe_weights(cn::testing::recipe_path("pidinet"));
  for (const auto* file : {"table5_pidinet.pth", "table5_pidinet.legacy.pth"}) {
    const auto state = preprocess::pidinet_state_dict(shipped(file));
    ASSERT_EQ(state.size(), recipe.size()) << file;
    for (const auto& [key, tensor] : recipe) {
      const auto module_key = key.substr(std::string("module.").size());
      ASSERT_TRUE(state.count(module_key)) << file << ": " << module_key;
      EXPECT_TRUE(torch::equal(state.at(module_key), tensor)) << file << ": " << module_key;
    }
    preprocess::load_pidinet(state, file);  // strict: every tensor, exact shapes
  }
}

TEST(PiDiNet, PostProcessingOfSavedOutputIsExact) {
  CN_REQUIRE_GOLDEN();
  const auto dir = cn::testing::preprocess_case_dir("pidinet");
  const auto names = cn::testing::preprocess_case_inputs(cn::testing::preprocess_manifest("pidinet"));
  for (const auto& name : names) {
    const auto fused = io::load_safetensors((dir / (name + "_raw.safetensors")).string()).at("sigmoid_fused");
    EXPECT_EQ(differing_pixels(preprocess::pidinet_edge_map(fused, false), read_png(dir / (name + "_out.png"))), 0) << name;
    EXPECT_EQ(differing_pixels(preprocess::pidinet_edge_map(fused, true), read_png(dir / (name + "_out_safe.png"))), 0)
        << name;
  }
  EXPECT_GE(names.size(), 1u);
}

TEST(PiDiNet, NetworkAndMapsMatchTheAnnotator) {
  CN_REQUIRE_GOLDEN();
  const auto dir = cn::testing::preprocess_case_dir("pidinet");
  const auto names = cn::testing::preprocess_case_inputs(cn::testing::preprocess_manifest("pidinet"));
  auto model = preprocess::pidinet_from_file(shipped("table5_pidinet.pth"));
  torch::NoGradGuard no_grad;
  for (const auto& name : names) {
    const auto input = read_png(dir / (name + "_input.png"));
    const auto raw = io::load_safetensors((dir / (name + "_raw.safetensors")).string());
    const auto outputs = model->forward(preprocess::pidinet_input(input));
    ASSERT_EQ(outputs.size(), std::size(kOutputs));
    int compared = 0;
    for (size_t k = 0; k < outputs.size(); ++k)
      if (raw.count(kOutputs[k])) {
        ++compared;
        expect_raw_close(outputs[k], raw.at(kOutputs[k]), "pidinet " + name + " " + kOutputs[k]);
      }
    EXPECT_GE(compared, 1) << name;
    expect_u8_map_close(preprocess::pidinet_edge_map(outputs.back(), false), read_png(dir / (name + "_out.png")),
                        "pidinet " + name + " out");
    expect_safe_map_close(outputs.back(), raw.at("sigmoid_fused"), read_png(dir / (name + "_out_safe.png")),
                          "pidinet " + name + " out_safe");
  }
  EXPECT_GE(names.size(), 1u);
}

// The registered detectors find table5_pidinet.pth by its official name (the
// shipped file copied to a temporary annotator folder).
TEST(PiDiNet, DetectorsRunTheCheckpointFromTheAnnotatorFolder) {
  CN_REQUIRE_GOLDEN();
  for (const auto* name : {"softedge_pidinet", "softedge_pidisafe", "scribble_pidinet"})
    EXPECT_EQ(preprocess::find_detector(name).checkpoint, "table5_pidinet.pth") << name;
  const auto annotator_dir = fs::temp_directory_path() / ("cn-pidinet-test-" + std::to_string(::getpid()));
  fs::create_directories(annotator_dir);
  fs::copy_file(shipped("table5_pidinet.pth"), annotator_dir / "table5_pidinet.pth");

  const auto dir = cn::testing::preprocess_case_dir("pidinet");
  const auto input = read_png(dir / "shapes_input.png");
  preprocess::DetectOptions options;
  options.resolution = std::min(input.rows, input.cols);
  options.annotator_dir = annotator_dir.string();
  const auto edges = preprocess::detect("softedge_pidinet", input, options);
  const auto safe = preprocess::detect("softedge_pidisafe", input, options);
  const auto scribble = preprocess::detect("scribble_pidinet", input, options);
  options.dtype = torch::kBFloat16;
  const auto edges_bf16 = preprocess::detect("softedge_pidinet", input, options);
  fs::remove_all(annotator_dir);
  const auto expected = read_png(dir / "shapes_out.png");
  expect_u8_map_close(edges, preprocess::hwc3(expected), "detect softedge_pidinet");
  expect_u8_map_close(safe, preprocess::hwc3(read_png(dir / "shapes_out_safe.png")), "detect softedge_pidisafe");
  // The scribble of the annotator's own map (the fixtures have none for PiDiNet).
  expect_u8_map_close(scribble, preprocess::fake_scribble(expected, expected.size()).map, "detect scribble_pidinet");
  // bf16 is not the reference: close, not equal (8 mantissa bits through 30
  // layers; measured: a mean difference of 1.1 levels of 255). Equal maps
  // would mean the dtype never reached the network.
  ASSERT_EQ(edges_bf16.size(), edges.size());
  cv::Mat difference;
  cv::absdiff(edges_bf16, edges, difference);
  const double mean = cv::mean(difference)[0];
  EXPECT_LT(mean, 4.0) << "bf16 vs fp32 soft edges";
  EXPECT_GT(mean, 0.0) << "the bf16 run computed in float32";
  std::cout << "[ figures  ] softedge_pidinet bf16 vs fp32: mean difference " << mean << " of 255\n";
}

TEST(PiDiNetInput, IsBgrOver255AndTakesCroppedViews) {
  cv::Mat image(40, 50, CV_8UC3);
  cv::randu(image, 0, 256);
  const cv::Mat crop = image(cv::Rect(3, 5, 30, 20));
  ASSERT_FALSE(crop.isContinuous());
  const auto input = preprocess::pidinet_input(crop);
  EXPECT_TRUE(torch::equal(input, preprocess::pidinet_input(crop.clone())));
  const auto pixel = crop.at<cv::Vec3b>(7, 11);
  for (int c = 0; c < 3; ++c) EXPECT_EQ(input[0][c][7][11].item<float>(), float(pixel[2 - c]) / 255.0f) << c;
}
