// Model-free preprocessors against golden/preprocess (exact cases).
#include <gtest/gtest.h>

#include <map>
#include <opencv2/imgproc.hpp>
#include <optional>
#include <regex>

#include "controlnet/error.h"
#include "io/safetensors.h"
#include "io/image.h"
#include "preprocess/ade20k.h"
#include "preprocess/inpaint.h"
#include "preprocess/model_free.h"
#include "preprocess/numpy_random.h"
#include "preprocess/preprocess.h"
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

// sd-webui-controlnet's model-free preprocessors (golden a1111_model_free):
// every map of every (input, resolution) row, through detect() with the
// detector's own framing, exact. Canny is the 1.1 detector run with the
// padded framing; the others are padded by default.
struct A1111Map {
  std::string detector;
  double a = -1, b = -1;
  std::optional<preprocess::Framing> framing;
};

// What a map file of the case is, from its name's suffix ("threshold127",
// "canny_100_200", ...); nullopt for the padded input itself.
std::optional<A1111Map> a1111_map_of(const std::string& suffix) {
  static const std::regex pattern(R"((lineart_standard|scribble_xdog|threshold|binary|canny)_?(\d*)(?:_(\d+))?\.png)");
  std::smatch m;
  if (!std::regex_match(suffix, m, pattern)) return std::nullopt;
  A1111Map map{m[1]};
  if (m[2].length()) map.a = std::stod(m[2]);
  if (m[3].length()) map.b = std::stod(m[3]);
  if (map.detector == "canny") map.framing = preprocess::Framing::padded;
  return map;
}

TEST(A1111ModelFree, ResizeImageWithPadEqualsTheExtensions) {
  CN_REQUIRE_GOLDEN();
  const auto dir = cn::testing::preprocess_case_dir("a1111_model_free");
  const auto manifest = cn::testing::preprocess_manifest("a1111_model_free");
  int rows = 0;
  for (const auto& row : manifest.at("table")) {
    const std::string input = row.at("input");
    const int res = row.at("res");
    const auto original = read_png(dir / ".." / "inputs" / (input + ".png"));
    const auto padded = preprocess::resize_image_with_pad(preprocess::hwc3(original), res);
    const auto stem = input + "_res" + std::to_string(res);
    const auto shape = row.at("padded_shape");
    EXPECT_EQ(padded.image.rows, shape[0].get<int>()) << stem;
    EXPECT_EQ(padded.image.cols, shape[1].get<int>()) << stem;
    EXPECT_EQ(differing_pixels(padded.image, read_png(dir / (stem + "_padded.png"))), 0) << stem;
    ++rows;
  }
  EXPECT_GE(rows, 1);
}

TEST(A1111ModelFree, MapsEqualTheExtensions) {
  CN_REQUIRE_GOLDEN();
  const auto dir = cn::testing::preprocess_case_dir("a1111_model_free");
  const auto manifest = cn::testing::preprocess_manifest("a1111_model_free");
  std::map<std::string, int> checked;
  for (const auto& row : manifest.at("table")) {
    const std::string input = row.at("input");
    const int res = row.at("res");
    const auto original = read_png(dir / ".." / "inputs" / (input + ".png"));
    const auto prefix = input + "_res" + std::to_string(res) + "_";
    for (const auto& item : manifest.at("files").items()) {
      const auto& file = item.key();
      if (file.rfind(prefix, 0) != 0) continue;
      const auto what = a1111_map_of(file.substr(prefix.size()));
      if (!what) {
        // The padded input is checked above; any other map is one this test does not know.
        EXPECT_EQ(file.substr(prefix.size()), "padded.png") << "unknown map " << file;
        continue;
      }
      preprocess::DetectOptions options;
      options.resolution = res;
      options.threshold_a = what->a;
      options.threshold_b = what->b;
      options.framing = what->framing;
      const auto map = preprocess::detect(what->detector, original, options);
      const auto expected = preprocess::hwc3(read_png(dir / file));  // detect returns 3 channels
      const auto differing = differing_pixels(map, expected);
      std::cout << "[parity] " << file << " differing values " << differing << "\n";
      EXPECT_EQ(differing, 0) << file;
      ++checked[what->detector];
    }
  }
  for (const char* detector : {"lineart_standard", "scribble_xdog", "threshold", "binary", "canny"})
    EXPECT_GE(checked[detector], 1) << detector;
}

// lineart_standard's scale comes from the whole padded image: the same formula
// on the crop (or on resize_image's framing) is a different map, so the
// framing is part of what the test above checks.
TEST(A1111ModelFree, LineartStandardStatisticsIncludeThePad) {
  CN_REQUIRE_GOLDEN();
  const auto dir = cn::testing::preprocess_case_dir("a1111_model_free");
  const auto original = read_png(dir / ".." / "inputs" / "photo_room.png");
  const auto padded = preprocess::resize_image_with_pad(original, 256);
  const cv::Mat crop = padded.image(cv::Rect({0, 0}, padded.content)).clone();
  const auto expected = read_png(dir / "photo_room_res256_lineart_standard.png");
  EXPECT_GT(differing_pixels(preprocess::lineart_standard(crop), expected), 0);
}

// controlnet_aux's LineartStandardDetector: the same detector with
// resize_image's framing, its map HWC3'd and resized (INTER_CUBIC) back to
// the original size.
TEST(AuxLineartStandard, EqualsControlnetAux) {
  CN_REQUIRE_GOLDEN();
  const auto dir = cn::testing::preprocess_case_dir("aux_lineart_standard");
  const auto manifest = cn::testing::preprocess_manifest("aux_lineart_standard");
  // The detector's defaults are controlnet_aux's (gaussian_sigma 6, intensity_threshold 8).
  const auto& detector = preprocess::find_detector("lineart_standard");
  EXPECT_EQ(detector.default_a, 6);
  EXPECT_EQ(detector.default_b, 8);
  int rows = 0;
  for (const auto& row : manifest.at("table")) {
    const std::string input = row.at("input");
    const int res = row.at("res");
    const auto original = read_png(dir / ".." / "inputs" / (input + ".png"));
    preprocess::DetectOptions options;
    options.resolution = res;
    options.framing = preprocess::Framing::resize_image;
    cv::Mat map;
    cv::resize(preprocess::detect("lineart_standard", original, options), map, original.size(), 0, 0,
               cv::INTER_CUBIC);
    const auto file = input + "_res" + std::to_string(res) + ".png";
    const auto differing = differing_pixels(map, read_png(dir / file));
    std::cout << "[parity] aux " << file << " differing values " << differing << "\n";
    EXPECT_EQ(differing, 0) << file;
    ++rows;
  }
  EXPECT_GE(rows, 1);
}

// numpy computes 2 * (255 - dog) in uint8: values of 255 - dog from 128 up to
// 128 + threshold / 2 wrap to at most the threshold and are not drawn.
TEST(ScribbleXdog, DoubledDifferenceWrapsAsInNumpy) {
  // Thin vertical lines of 32 gray levels on white: each level gives another
  // DoG strength on its line, so every branch (below 128, the wrap band, above)
  // is met.
  cv::Mat image(64, 400, CV_8UC3, cv::Scalar(255, 255, 255));
  for (int k = 0; k < 32; ++k)
    cv::rectangle(image, cv::Rect(8 + 12 * k, 8, 2, 48), cv::Scalar::all(255 - 8 * k), cv::FILLED);
  cv::Mat x, fine, coarse;
  image.convertTo(x, CV_32F);
  cv::GaussianBlur(x, fine, {0, 0}, 0.5);
  cv::GaussianBlur(x, coarse, {0, 0}, 5.0);
  cv::Mat dog;
  cv::extractChannel(coarse - fine, dog, 0);  // the three channels are equal
  const auto map = preprocess::scribble_xdog(image, 32);
  int wrapped = 0;
  for (int y = 0; y < image.rows; ++y)
    for (int i = 0; i < image.cols; ++i) {
      const int strength = 255 - int(std::clamp(255.0f - dog.at<float>(y, i), 0.0f, 255.0f));
      const bool drawn = map.at<cv::Vec3b>(y, i)[0] == 255;
      const bool expected = strength < 128 ? 2 * strength > 32 : 2 * strength - 256 > 32;
      EXPECT_EQ(drawn, expected) << "at " << i << "," << y << " strength " << strength;
      wrapped += strength >= 128 && strength <= 144;
    }
  EXPECT_GT(wrapped, 0);  // the image exercises the wrap
}

TEST(TileResample, ShrinksByTheRateWithAreaAndIgnoresTheResolution) {
  cv::Mat image(240, 300, CV_8UC3);
  cv::randu(image, 0, 256);
  preprocess::DetectOptions options;
  options.resolution = 128;
  options.threshold_a = 2.5;
  const auto map = preprocess::detect("tile_resample", image, options);
  ASSERT_EQ(map.size(), cv::Size(120, 96));
  cv::Mat expected;
  cv::resize(image, expected, {120, 96}, 0, 0, cv::INTER_AREA);
  EXPECT_EQ(differing_pixels(map, expected), 0);
  options.threshold_a = 1.05;  // below 1.1: the image as it is
  EXPECT_EQ(differing_pixels(preprocess::detect("tile_resample", image, options), image), 0);
  EXPECT_EQ(preprocess::tile_resample(image, 3.0).size(), cv::Size(100, 80));
}

TEST(Binary, ThresholdOf255AlsoMeansOtsu) {
  cv::Mat image(48, 64, CV_8UC3);
  cv::randu(image, 0, 256);
  cv::GaussianBlur(image, image, {0, 0}, 2.0);
  const auto otsu = preprocess::binary_map(image, 0);
  EXPECT_EQ(differing_pixels(preprocess::binary_map(image, 255), otsu), 0);
  EXPECT_GT(differing_pixels(preprocess::binary_map(image, 254), otsu), 0);
}

TEST(Framing, NamesRoundTrip) {
  for (auto f : {preprocess::Framing::resize_image, preprocess::Framing::padded, preprocess::Framing::original})
    EXPECT_EQ(preprocess::parse_framing(preprocess::to_string(f)), f);
  EXPECT_THROW(preprocess::parse_framing("pad"), Error);
}

// ControlNet 1.1 inpaint: image / 255 where kept, -1 on all channels where
// the mask is above 127 (mask / 255 > 0.5).
TEST(InpaintControl, MaskedPixelsAreMinusOne) {
  cv::Mat image(4, 6, CV_8UC3);
  cv::randu(image, 0, 256);
  cv::Mat mask = cv::Mat::zeros(4, 6, CV_8U);
  mask.at<uint8_t>(0, 1) = 127;  // kept: 127 / 255 < 0.5
  mask.at<uint8_t>(1, 2) = 128;  // repainted
  mask.at<uint8_t>(3, 5) = 255;
  const auto control = preprocess::inpaint_control(image, mask);
  ASSERT_EQ(control.sizes(), (std::vector<int64_t>{1, 3, 4, 6}));
  const auto kept = io::image_to_tensor(image);
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 6; ++x)
      for (int c = 0; c < 3; ++c) {
        const float expected = mask.at<uint8_t>(y, x) > 127 ? -1.0f : kept[0][c][y][x].item<float>();
        EXPECT_EQ(control[0][c][y][x].item<float>(), expected) << x << "," << y << " channel " << c;
      }
  // An RGB mask is read from its first channel (the demo's mask[:, :, 0]).
  cv::Mat rgb_mask;
  cv::merge(std::vector<cv::Mat>{mask, cv::Mat::zeros(4, 6, CV_8U), cv::Mat(4, 6, CV_8U, cv::Scalar(255))}, rgb_mask);
  EXPECT_TRUE(torch::equal(preprocess::inpaint_control(image, rgb_mask), control));
  EXPECT_THROW(preprocess::inpaint_control(image, cv::Mat::zeros(4, 5, CV_8U)), Error);
}

}  // namespace
