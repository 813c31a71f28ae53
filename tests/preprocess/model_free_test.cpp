// Model-free preprocessors against golden/preprocess (exact cases).
#include <gtest/gtest.h>

#include "io/safetensors.h"
#include "preprocess/ade20k.h"
#include "preprocess/numpy_random.h"
#include "preprocess/shuffle.h"
#include "support/preprocess_fixtures.h"

using namespace cn;

namespace {

using cn::testing::differing_pixels;
using cn::testing::read_png;

TEST(Ade20kPalette, PaletteEqualsTheAnnotators) {
  CN_REQUIRE_GOLDEN();
  const auto dir = cn::testing::preprocess_case_dir("ade20k_palette");
  const auto tensors = io::load_safetensors((dir / "palette.safetensors").string());
  const auto expected = tensors.at("ade_palette_rgb").contiguous();
  ASSERT_EQ(expected.size(0), preprocess::kAde20kClasses);
  const auto* ref = expected.data_ptr<uint8_t>();
  const auto& palette = preprocess::ade20k_palette();
  for (int i = 0; i < preprocess::kAde20kClasses; ++i)
    for (int c = 0; c < 3; ++c) EXPECT_EQ(palette[i][c], ref[i * 3 + c]) << "label " << i << " channel " << c;
}

TEST(Ade20kPalette, ColouredLabelsEqualTheAnnotators) {
  CN_REQUIRE_GOLDEN();
  const auto dir = cn::testing::preprocess_case_dir("ade20k_palette");
  const cv::Mat labels = read_png(dir / "labels.png");
  const cv::Mat expected = read_png(dir / "colored.png");
  const cv::Mat colored = preprocess::colorize_ade20k(labels);
  EXPECT_EQ(differing_pixels(colored, expected), 0);
}

class ContentShuffle : public ::testing::TestWithParam<std::string> {};

TEST_P(ContentShuffle, DrawsFlowAndOutputEqualTheAnnotators) {
  CN_REQUIRE_GOLDEN();
  const auto dir = cn::testing::preprocess_case_dir(GetParam());
  const auto params = cn::testing::preprocess_manifest(GetParam()).at("params");
  const int h = params.at("h"), w = params.at("w"), f = params.at("f");
  const auto tensors = io::load_safetensors((dir / "noise.safetensors").string());

  preprocess::NumpyRandomState rng(params.at("seed").get<uint32_t>());
  for (const char* name : {"noise_x_uniform", "noise_y_uniform"}) {
    const auto expected = tensors.at(name).contiguous();
    const auto draws = rng.uniform(0.0, 1.0, size_t(expected.numel()));
    const auto* ref = expected.data_ptr<double>();
    for (size_t i = 0; i < draws.size(); ++i) ASSERT_EQ(draws[i], ref[i]) << name << " draw " << i;
  }

  const cv::Mat input = read_png(dir / "input.png");
  preprocess::NumpyRandomState flow_rng(params.at("seed").get<uint32_t>());
  const cv::Mat flow = preprocess::shuffle_flow(h, w, input.rows, input.cols, f, flow_rng);
  const auto expected_flow = tensors.at("flow").contiguous();
  ASSERT_EQ(expected_flow.numel(), int64_t(flow.total()) * 2);
  const cv::Mat ref_flow(h, w, CV_32FC2, expected_flow.data_ptr<float>());
  cv::Mat diff;
  cv::absdiff(flow, ref_flow, diff);
  double max_diff = 0;
  cv::minMaxLoc(diff.reshape(1), nullptr, &max_diff);
  std::cout << "[parity] " << GetParam() << " flow max_abs=" << max_diff << "\n";
  EXPECT_EQ(max_diff, 0.0);

  const cv::Mat output = preprocess::content_shuffle(input, h, w, params.at("seed").get<uint32_t>(), f);
  EXPECT_EQ(differing_pixels(output, read_png(dir / "output.png")), 0);
}

INSTANTIATE_TEST_SUITE_P(Golden, ContentShuffle, ::testing::Values("shuffle_shapes", "shuffle_photo"));

}  // namespace
