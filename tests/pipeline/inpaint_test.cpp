// The inpaint ControlNet unit through the pipeline (mini-sd15): a mask turns
// the control into inpaint_control's; a mask that repaints nothing leaves the
// control, and so the image, exactly as without a mask.
#include <gtest/gtest.h>

#include <filesystem>
#include <opencv2/imgcodecs.hpp>

#include "controlnet/pipeline.h"
#include "support/golden.h"

namespace fs = std::filesystem;

TEST(Inpaint, MaskSetsTheControlOfTheRepaintedPixels) {
  CN_REQUIRE_GOLDEN();
  const auto root = cn::testing::golden_root() / "mini-sd15";
  const auto control = root / "cases/e2e_ddim10_cfg7.5_cn1.0/control_image_0.png";
  const auto tmp = fs::temp_directory_path() / "cn_inpaint";
  fs::create_directories(tmp);
  const auto keep_all = (tmp / "keep_all.png").string(), repaint_left = (tmp / "repaint_left.png").string();
  cv::Mat mask = cv::Mat::zeros(64, 64, CV_8U);
  mask.setTo(127);  // at most 127: nothing is repainted
  cv::imwrite(keep_all, mask);
  mask(cv::Rect(0, 0, 32, 64)).setTo(255);
  cv::imwrite(repaint_left, mask);

  auto pipe = cn::Pipeline::load({root.string()});
  cn::GenerateOptions o;
  o.prompt = "a photo of a cat";
  o.steps = 1;
  o.width = o.height = 64;
  o.seed = 7;
  o.controls.push_back({(root / "controlnet").string(), control.string()});
  const auto plain = pipe->generate(o).at(0).image.rgb;
  o.controls[0].mask = keep_all;
  EXPECT_EQ(pipe->generate(o).at(0).image.rgb, plain);
  o.controls[0].mask = repaint_left;
  EXPECT_NE(pipe->generate(o).at(0).image.rgb, plain);
  o.controls[0].mask = (tmp / "missing.png").string();
  EXPECT_THROW(pipe->generate(o), cn::Error);
  fs::remove_all(tmp);
}
