// Soft-edge helpers against annotator/util.py and the 1.1 scribble demo
// (golden/preprocess util_nms, util_safe_step, scribble_from_soft_edge): exact.
#include <gtest/gtest.h>

#include <opencv2/imgproc.hpp>

#include "preprocess/edges.h"
#include "support/preprocess_fixtures.h"

using namespace cn;
namespace fs = std::filesystem;

namespace {

using cn::testing::differing_pixels;
using cn::testing::read_png;

// A 1-D float tensor as a 1 x n cv::Mat of the same depth (a copy).
cv::Mat row_of(const torch::Tensor& t) {
  const auto c = t.contiguous();
  const int depth = c.scalar_type() == torch::kFloat64 ? CV_64F : c.scalar_type() == torch::kFloat32 ? CV_32F : CV_8U;
  return cv::Mat(1, int(c.numel()), depth, c.data_ptr()).clone();
}

// Pixels with any channel on (the manifests' "on_pixels" of RGB scribbles).
int on_pixels(const cv::Mat& map) {
  std::vector<cv::Mat> channels;
  cv::split(map, channels);
  cv::Mat any = channels[0];
  for (const auto& c : channels) any = cv::max(any, c);
  return cv::countNonZero(any);
}

}  // namespace

TEST(Edges, NmsMatchesTheAnnotator) {
  CN_REQUIRE_GOLDEN();
  const auto dir = cn::testing::preprocess_case_dir("util_nms");
  const auto manifest = cn::testing::preprocess_manifest("util_nms");
  int cases = 0;
  for (const auto& row : manifest.at("table")) {
    ++cases;
    const auto input = read_png(dir / row.at("input").get<std::string>());
    const auto expected = read_png(dir / row.at("output").get<std::string>());
    const auto actual = preprocess::nms(input, row.at("t").get<double>(), row.at("s").get<double>());
    EXPECT_EQ(differing_pixels(actual, expected), 0) << row.dump();
    EXPECT_EQ(cv::countNonZero(actual.reshape(1)), row.at("on_pixels").get<int>()) << row.dump();
  }
  EXPECT_GE(cases, 1);
}

TEST(Edges, SafeStepMatchesTheAnnotator) {
  CN_REQUIRE_GOLDEN();
  const auto dir = cn::testing::preprocess_case_dir("util_safe_step");
  const auto data = io::load_safetensors((dir / "safe_step.safetensors").string());
  int cases = 0;
  for (const auto& [name, expected] : data) {
    // y_step<k>_from_<f64|f32>
    if (name.rfind("y_step", 0) != 0) continue;
    ++cases;
    const int step = std::stoi(name.substr(6));
    const auto source = "x_" + name.substr(name.rfind('_') + 1);
    const auto actual = preprocess::safe_step(row_of(data.at(source)), step);
    ASSERT_EQ(actual.type(), CV_32F) << name;
    cv::Mat diff;
    cv::absdiff(actual, row_of(expected), diff);
    EXPECT_EQ(cv::countNonZero(diff), 0) << name;
  }
  EXPECT_EQ(cases, 6);

  const auto u8 = io::load_safetensors((dir / "safe_step_u8.safetensors").string());
  const auto map = preprocess::unit_to_u8(preprocess::safe_step(row_of(u8.at("x_f64"))));
  EXPECT_EQ(differing_pixels(map, row_of(u8.at("u8"))), 0);
}

TEST(Edges, FakeScribbleMatchesTheDemoAtEveryStage) {
  CN_REQUIRE_GOLDEN();
  const auto dir = cn::testing::preprocess_case_dir("scribble_from_soft_edge");
  const auto manifest = cn::testing::preprocess_manifest("scribble_from_soft_edge");
  const auto soft_edge = read_png(dir / "soft_edge_in.png");
  int cases = 0;
  for (const auto& row : manifest.at("table")) {
    ++cases;
    const int h = row.at("H"), w = row.at("W");
    const auto prefix = "s_" + std::to_string(h) + "x" + std::to_string(w) + "_";
    const auto s = preprocess::fake_scribble(soft_edge, {w, h});
    EXPECT_EQ(differing_pixels(s.resized, read_png(dir / (prefix + "1_resized.png"))), 0) << prefix;
    EXPECT_EQ(differing_pixels(s.suppressed, read_png(dir / (prefix + "2_nms.png"))), 0) << prefix;
    EXPECT_EQ(differing_pixels(s.blurred, read_png(dir / (prefix + "3_blur.png"))), 0) << prefix;
    EXPECT_EQ(differing_pixels(s.map, read_png(dir / (prefix + "4_final.png"))), 0) << prefix;
    EXPECT_EQ(on_pixels(s.map), row.at("on_pixels").get<int>()) << prefix;
  }
  EXPECT_GE(cases, 1);
}
