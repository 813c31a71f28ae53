// Model-free preprocessors against the ControlNet 1.1 annotators' outputs
// (golden/preprocess): exact, pixel for pixel.
#include <gtest/gtest.h>

#include <fstream>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <regex>

#include "controlnet/error.h"
#include "preprocess/preprocess.h"
#include "support/preprocess_fixtures.h"

using namespace cn;
namespace fs = std::filesystem;

namespace {

using cn::testing::differing_pixels;
using cn::testing::read_png;

fs::path case_dir(const std::string& name) { return cn::testing::preprocess_case_dir(name); }
nlohmann::json manifest(const std::string& name) { return cn::testing::preprocess_manifest(name); }

}  // namespace

TEST(Preprocess, Hwc3) {
  CN_REQUIRE_GOLDEN();
  const auto dir = case_dir("util_hwc3");
  EXPECT_EQ(differing_pixels(preprocess::hwc3(read_png(dir / "gray_in.png")), read_png(dir / "gray_out.png")), 0);
  EXPECT_EQ(differing_pixels(preprocess::hwc3(read_png(dir / "rgba_in.png")), read_png(dir / "rgba_out.png")), 0);
  // Every colour x alpha pair: R=G=B=row, A=column.
  cv::Mat table(256, 256, CV_8UC4);
  for (int r = 0; r < 256; ++r)
    for (int c = 0; c < 256; ++c) table.at<cv::Vec4b>(r, c) = cv::Vec4b(r, r, r, c);
  cv::Mat composited;  // R = G = B, so the table stores one channel
  cv::extractChannel(preprocess::hwc3(table), composited, 0);
  EXPECT_EQ(differing_pixels(composited, read_png(dir / "rgba_table_out.png")), 0);
}

TEST(Preprocess, ResizeImage) {
  CN_REQUIRE_GOLDEN();
  int checked = 0;
  const auto files = manifest("util_resize_image").at("files");
  for (const auto& [file, meta] : files.items()) {
    if (!meta.contains("resolution")) continue;
    SCOPED_TRACE(file);
    auto input = read_png(case_dir("util_resize_image") / meta.at("input").get<std::string>());
    EXPECT_EQ(differing_pixels(preprocess::resize_image(input, meta.at("resolution")), read_png(case_dir("util_resize_image") / file)), 0);
    ++checked;
  }
  EXPECT_GE(checked, 5);
}

TEST(Preprocess, CannyMatchesOpenCvOnRgb) {
  CN_REQUIRE_GOLDEN();
  const std::regex name(R"(c\d+_out_(\d+)_(\d+)\.png)");
  int checked = 0;
  const auto files = manifest("canny").at("files");
  for (const auto& [file, meta] : files.items()) {
    std::smatch m;
    if (!std::regex_match(file, m, name)) continue;
    SCOPED_TRACE(file);
    auto input = read_png(case_dir("canny") / meta.at("input").get<std::string>());
    const auto& canny = preprocess::find_detector("canny");
    preprocess::DetectParams params;
    params.a = std::stod(m[1]);
    params.b = std::stod(m[2]);
    auto edges = canny.run(input, params);
    EXPECT_EQ(differing_pixels(edges, read_png(case_dir("canny") / file)), 0);
    ++checked;
  }
  EXPECT_GE(checked, 5);
}

TEST(Preprocess, UserScribble) {
  CN_REQUIRE_GOLDEN();
  const auto dir = case_dir("scribble_user");
  for (int res : {256, 512}) {
    const auto suffix = "_res" + std::to_string(res) + ".png";
    if (!fs::exists(dir / ("v10_map" + suffix))) continue;
    auto map = preprocess::detect("scribble", read_png(dir / "drawing.png"), {res});
    EXPECT_EQ(differing_pixels(map, read_png(dir / ("v10_map" + suffix))), 0) << res;
  }
}

TEST(Preprocess, UnknownTypeNamesTheAvailableOnes) {
  try {
    preprocess::find_detector("depth_leres");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("canny"), std::string::npos);
  }
}

// sd-webui-controlnet's pixel perfect: the short side the image has once
// fitted to the generation size, numpy-rounded (half to even).
TEST(Preprocess, PixelPerfectResolution) {
  using preprocess::pixel_perfect_resolution;
  // 640x480 into 512x512: cropped, the short side becomes 512; fitted inside, 384.
  EXPECT_EQ(pixel_perfect_resolution({640, 480}, 512, 512, false), 512);
  EXPECT_EQ(pixel_perfect_resolution({640, 480}, 512, 512, true), 384);
  // A portrait into a landscape generation: the width ratio decides when cropping.
  EXPECT_EQ(pixel_perfect_resolution({480, 640}, 768, 512, false), 768);
  EXPECT_EQ(pixel_perfect_resolution({480, 640}, 768, 512, true), 384);
  // Exact halves: 5/4 * 2 = 2.5 -> 2 and 7/4 * 2 = 3.5 -> 4.
  EXPECT_EQ(pixel_perfect_resolution({4, 2}, 5, 1, false), 2);
  EXPECT_EQ(pixel_perfect_resolution({4, 2}, 7, 1, false), 4);
}

TEST(Preprocess, OutputResolutionResizesTheMap) {
  cv::Mat image(300, 400, CV_8UC3, cv::Scalar(0, 0, 0));
  cv::circle(image, {200, 150}, 90, cv::Scalar(255, 255, 255), -1);
  preprocess::DetectOptions options;
  options.resolution = 512;
  const auto detected = preprocess::detect("canny", image, options);
  ASSERT_EQ(detected.size(), cv::Size(704, 512));  // resize_image: multiples of 64
  for (int output : {256, 1024}) {
    options.output_resolution = output;
    const auto map = preprocess::detect("canny", image, options);
    const double k = double(output) / 512;
    ASSERT_EQ(map.size(), cv::Size(int(std::lround(704 * k)), output)) << output;
    cv::Mat expected;
    cv::resize(detected, expected, map.size(), 0, 0, output < 512 ? cv::INTER_AREA : cv::INTER_LANCZOS4);
    EXPECT_EQ(differing_pixels(map, expected), 0) << output;
  }
  options.output_resolution = 32;
  EXPECT_THROW(preprocess::detect("canny", image, options), Error);
}
