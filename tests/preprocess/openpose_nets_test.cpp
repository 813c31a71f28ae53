// OpenPose body, hand and face networks against annotator/openpose (golden/preprocess
// openpose_nets) with the recipes' random weights: stage-6 outputs from the
// saved network inputs within the README's raw tolerance.
#include <gtest/gtest.h>

#include "preprocess/openpose_nets.h"
#include "support/preprocess_fixtures.h"
#include "support/recipe.h"

using namespace cn;

namespace {

// A saved network input image ((x + 0.5) * 256, stored RGB while the tensor is
// BGR) back to the (1, 3, H, W) tensor the network received.
torch::Tensor net_input_of(const std::filesystem::path& png) {
  cv::Mat rgb = cn::testing::read_png(png);
  auto t = torch::from_blob(rgb.data, {rgb.rows, rgb.cols, 3}, torch::kUInt8).to(torch::kFloat32);
  t = t.flip({2}).permute({2, 0, 1}).unsqueeze(0).contiguous();
  return t / 256.0 - 0.5;
}

}  // namespace

TEST(OpenposeNets, BodyNetworkMatchesTheAnnotator) {
  CN_REQUIRE_GOLDEN();
  const auto dir = cn::testing::preprocess_case_dir("openpose_nets");
  auto model = preprocess::load_body_pose_net(cn::testing::recipe_weights(cn::testing::recipe_path("openpose_body")),
                                              "openpose_body recipe");
  const auto raw = io::load_safetensors((dir / "figure_rgba_body_raw.safetensors").string());
  torch::NoGradGuard no_grad;
  const auto [pafs, heatmaps] = model->forward(net_input_of(dir / "figure_rgba_body_net_input.png"));
  cn::testing::expect_raw_close(pafs, raw.at("paf_L1"), "body PAFs");
  cn::testing::expect_raw_close(heatmaps, raw.at("heatmap_L2"), "body heatmaps");
}

TEST(OpenposeNets, HandNetworkMatchesTheAnnotator) {
  CN_REQUIRE_GOLDEN();
  const auto dir = cn::testing::preprocess_case_dir("openpose_nets");
  auto model = preprocess::load_hand_pose_net(cn::testing::recipe_weights(cn::testing::recipe_path("openpose_hand")),
                                              "openpose_hand recipe");
  const auto raw = io::load_safetensors((dir / "hand_raw.safetensors").string());
  torch::NoGradGuard no_grad;
  // The two smallest of the four scales keep the test fast; the network is the same for all.
  for (int scale = 0; scale < 2; ++scale) {
    const auto s = std::to_string(scale);
    const auto output = model->forward(net_input_of(dir / ("hand_scale" + s + "_net_input.png")));
    cn::testing::expect_raw_close(output, raw.at("scale" + s + "_output"), "hand scale " + s);
  }
}

TEST(OpenposeNets, FaceNetworkMatchesTheAnnotator) {
  CN_REQUIRE_GOLDEN();
  const auto dir = cn::testing::preprocess_case_dir("openpose_nets");
  auto model = preprocess::load_face_net(cn::testing::recipe_weights(cn::testing::recipe_path("openpose_face")),
                                         "openpose_face recipe");
  const auto raw = io::load_safetensors((dir / "face_raw.safetensors").string());
  torch::NoGradGuard no_grad;
  const auto output = model->forward(net_input_of(dir / "face_net_input.png"));
  cn::testing::expect_raw_close(output, raw.at("stage6_heatmaps"), "face stage 6");
}
