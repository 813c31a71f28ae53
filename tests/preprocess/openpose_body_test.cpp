// OpenPose body decoder against annotator/openpose Body.__call__ (golden/
// preprocess openpose_crafted*, crafted network outputs): candidate and
// subset exact; drawn (normalised, body only) equal to the detector's canvas.
#include <gtest/gtest.h>

#include "io/safetensors.h"
#include "preprocess/openpose_body.h"
#include "preprocess/openpose_draw.h"
#include "support/preprocess_fixtures.h"

using namespace cn;

TEST(OpenposeBody, DecodingOfCraftedMapsIsExact) {
  CN_REQUIRE_GOLDEN();
  for (const std::string name : {"openpose_crafted_body_only", "openpose_crafted"}) {
    const auto dir = cn::testing::preprocess_case_dir(name);
    const auto params = cn::testing::preprocess_manifest(name).at("params");
    const auto net = io::load_safetensors((dir / "body_net_out.safetensors").string());
    const auto expected = io::load_safetensors((dir / "body_decoded.safetensors").string());
    const auto decoded = preprocess::decode_body(net.at("paf_L1"), net.at("heatmap_L2"), params.at("H"), params.at("W"));
    const auto candidate = expected.at("candidate").contiguous();
    const auto subset = expected.at("subset").contiguous();
    ASSERT_EQ(int64_t(decoded.candidate.size()), candidate.size(0)) << name;
    ASSERT_EQ(int64_t(decoded.subset.size()), subset.size(0)) << name;
    for (int64_t i = 0; i < candidate.size(0); ++i)
      for (int64_t c = 0; c < 4; ++c)
        EXPECT_EQ(decoded.candidate[size_t(i)][size_t(c)], candidate[i][c].item<double>()) << name << " candidate " << i << "," << c;
    for (int64_t i = 0; i < subset.size(0); ++i)
      for (int64_t c = 0; c < 20; ++c)
        EXPECT_EQ(decoded.subset[size_t(i)][size_t(c)], subset[i][c].item<double>()) << name << " subset " << i << "," << c;
    EXPECT_GT(candidate.size(0), 0) << name;

    const int H = params.at("H"), W = params.at("W");
    preprocess::PoseResult pose;
    for (const auto& c : decoded.candidate) pose.bodies.candidate.push_back({c[0] / W, c[1] / H});
    pose.bodies.subset = decoded.subset;
    EXPECT_EQ(cn::testing::differing_pixels(preprocess::draw_pose(pose, H, W, {true, false, false}),
                                            cn::testing::read_png(dir / "canvas_body_only.png")),
              0)
        << name;
  }
}
