#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <opencv2/imgcodecs.hpp>

#include "controlnet/error.h"
#include "io/image.h"

namespace fs = std::filesystem;

namespace {
fs::path temp_file(const std::string& name) {
  auto dir = fs::temp_directory_path() / "controlnet_image_test";
  fs::create_directories(dir);
  return dir / name;
}
}  // namespace

TEST(Image, PngRoundTripKeepsPixelsAndUtf8Text) {
  cv::Mat rgb(5, 7, CV_8UC3);
  cv::randu(rgb, 0, 255);
  auto path = temp_file("text.png").string();
  cn::io::write_png(path, rgb, {{"parameters", "a cat\nSteps: 20, Seed: 1"}, {"comment", "café ☕"}});
  auto text = cn::io::read_png_text(path);
  ASSERT_EQ(text.size(), 2u);
  EXPECT_EQ(text[0].second, "a cat\nSteps: 20, Seed: 1");
  EXPECT_EQ(text[1].second, "café ☕");
  auto back = cn::io::read_rgb_image(path);
  EXPECT_EQ(cv::norm(back, rgb, cv::NORM_INF), 0.0);
}

TEST(Image, ReadsGrayAndRgbaAsRgbOverWhite) {
  cv::Mat bgra(2, 2, CV_8UC4, cv::Scalar(0, 0, 255, 0));  // fully transparent red
  bgra.at<cv::Vec4b>(0, 0) = {255, 0, 0, 255};           // opaque blue
  auto path = temp_file("rgba.png").string();
  cv::imwrite(path, bgra);
  auto rgb = cn::io::read_rgb_image(path);
  ASSERT_EQ(rgb.channels(), 3);
  EXPECT_EQ(rgb.at<cv::Vec3b>(0, 0), cv::Vec3b(0, 0, 255));
  EXPECT_EQ(rgb.at<cv::Vec3b>(1, 1), cv::Vec3b(255, 255, 255));

  cv::Mat gray(3, 3, CV_8UC1, cv::Scalar(77));
  auto gpath = temp_file("gray.png").string();
  cv::imwrite(gpath, gray);
  EXPECT_EQ(cn::io::read_rgb_image(gpath).at<cv::Vec3b>(1, 1), cv::Vec3b(77, 77, 77));
}

TEST(Image, UnreadableImageNamesTheFile) {
  auto path = temp_file("broken.png").string();
  { std::ofstream(path) << "not an image"; }
  try {
    cn::io::read_rgb_image(path);
    FAIL() << "no error";
  } catch (const cn::Error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos);
  }
}

TEST(Image, ResizeModesFitTheRequestedSize) {
  cv::Mat wide(100, 200, CV_8UC3, cv::Scalar(255, 255, 255));
  using cn::io::ResizeMode;
  for (auto mode : {ResizeMode::just_resize, ResizeMode::crop_and_resize, ResizeMode::resize_and_fill}) {
    auto out = cn::io::fit_image(wide, 64, 64, mode);
    EXPECT_EQ(out.cols, 64);
    EXPECT_EQ(out.rows, 64);
  }
  // Fill pads a wide image top and bottom with black; crop keeps it all white.
  auto filled = cn::io::fit_image(wide, 64, 64, ResizeMode::resize_and_fill);
  EXPECT_EQ(filled.at<cv::Vec3b>(0, 32), cv::Vec3b(0, 0, 0));
  EXPECT_EQ(filled.at<cv::Vec3b>(32, 32), cv::Vec3b(255, 255, 255));
  auto cropped = cn::io::fit_image(wide, 64, 64, ResizeMode::crop_and_resize);
  EXPECT_EQ(cropped.at<cv::Vec3b>(0, 0), cv::Vec3b(255, 255, 255));
  EXPECT_THROW(cn::io::parse_resize_mode("stretch"), cn::Error);
}

TEST(Image, TensorConversionRoundsLikeThePipeline) {
  auto t = torch::tensor({0.0f, 0.5f, 1.0f, 0.2f}).view({1, 2, 2}).expand({3, 2, 2});
  auto img = cn::io::tensor_to_image(t);
  EXPECT_EQ(img.at<cv::Vec3b>(0, 1)[0], 128);  // round(127.5) = 128
  auto back = cn::io::image_to_tensor(img);
  EXPECT_EQ(back.sizes(), (std::vector<int64_t>{1, 3, 2, 2}));
  EXPECT_NEAR(back[0][0][1][1].item<float>(), 51.0 / 255.0, 1e-7);
}
