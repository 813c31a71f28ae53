// Model-free preprocessors against golden/preprocess (exact cases).
#include <gtest/gtest.h>

#include "io/safetensors.h"
#include "preprocess/ade20k.h"
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

}  // namespace
