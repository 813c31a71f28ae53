// M-LSD decoding and drawing against annotator/mlsd pred_lines + MLSDdetector
// (golden/preprocess mlsd_decode_crafted): exact for every threshold pair.
#include <gtest/gtest.h>

#include <algorithm>

#include "io/safetensors.h"
#include "preprocess/mlsd.h"
#include "support/preprocess_fixtures.h"

using namespace cn;

TEST(Mlsd, DecodeAndDrawCraftedMapExactly) {
  CN_REQUIRE_GOLDEN();
  const auto dir = cn::testing::preprocess_case_dir("mlsd_decode_crafted");
  const auto manifest = cn::testing::preprocess_manifest("mlsd_decode_crafted");
  const auto tpmap = io::load_safetensors((dir / "tpmap.safetensors").string()).at("tpmap");
  const int height = manifest.at("params").at("H").get<int>();
  const int width = manifest.at("params").at("W").get<int>();
  int cases = 0;
  for (const auto& row : manifest.at("table")) {
    ++cases;
    const auto thr_v = row.at("thr_v").get<double>(), thr_d = row.at("thr_d").get<double>();
    auto lines = preprocess::mlsd_decode_lines(tpmap, thr_v, thr_d);
    ASSERT_EQ(int(lines.size()), row.at("n_lines").get<int>()) << row.dump();

    // The top-k order among equal scores is implementation-defined: compare sorted.
    std::string png = row.at("png").get<std::string>();
    const std::string stem = "lines" + png.substr(3, png.size() - 7);
    const auto expected = io::load_safetensors((dir / (stem + ".safetensors")).string()).at("lines_sorted");
    std::sort(lines.begin(), lines.end());
    auto actual = torch::empty({int64_t(lines.size()), 4}, torch::kFloat64);
    for (size_t i = 0; i < lines.size(); ++i)
      for (int j = 0; j < 4; ++j) actual[i][j] = lines[i][j];
    EXPECT_EQ(cn::testing::max_abs_diff(actual, expected), 0.0) << row.dump();

    const auto map = preprocess::mlsd_draw_lines(lines, height, width);
    const auto expected_map = cn::testing::read_png(dir / png);
    EXPECT_EQ(cn::testing::differing_pixels(map, expected_map), 0) << row.dump();
  }
  EXPECT_EQ(cases, 4);
}

// Step 4 of the fixtures' README: the annotator's saved random-network tp map
// through our decoder gives its lines and maps exactly.
TEST(Mlsd, DecodeSavedNetworkOutputExactly) {
  CN_REQUIRE_GOLDEN();
  const auto dir = cn::testing::preprocess_case_dir("mlsd");
  const auto raw = io::load_safetensors((dir / "photo_room_raw.safetensors").string());
  int cases = 0;
  for (const std::string thresholds : {"0.1_0.1", "0.3_4.0"}) {
    ++cases;
    const auto split = thresholds.find('_');
    const double thr_v = std::stod(thresholds.substr(0, split)), thr_d = std::stod(thresholds.substr(split + 1));
    auto lines = preprocess::mlsd_decode_lines(raw.at("tpmap"), thr_v, thr_d);
    const auto& expected = raw.at("lines_thr" + thresholds);
    ASSERT_EQ(int64_t(lines.size()), expected.size(0)) << thresholds;
    // Compare as sorted rows: the top-k order among equal scores is implementation-defined.
    std::vector<preprocess::MlsdLine> expected_lines(lines.size());
    for (size_t i = 0; i < lines.size(); ++i)
      for (int j = 0; j < 4; ++j) expected_lines[i][size_t(j)] = expected[int64_t(i)][j].item<double>();
    const auto map = preprocess::mlsd_draw_lines(lines, 256, 320);
    std::sort(lines.begin(), lines.end());
    std::sort(expected_lines.begin(), expected_lines.end());
    EXPECT_EQ(lines, expected_lines) << thresholds;
    const auto expected_map = cn::testing::read_png(dir / ("photo_room_out_thr" + thresholds + ".png"));
    EXPECT_EQ(cn::testing::differing_pixels(map, expected_map), 0) << thresholds;
  }
  EXPECT_EQ(cases, 2);
}
