// OpenPose drawing against annotator/openpose draw_pose (golden/preprocess
// openpose_draw): hand-written keypoints, every canvas exact.
#include <gtest/gtest.h>

#include "preprocess/openpose_draw.h"
#include "support/preprocess_fixtures.h"

using namespace cn::preprocess;

namespace {

std::vector<PosePoint> points_of(const nlohmann::json& rows) {
  std::vector<PosePoint> points;
  for (const auto& row : rows) points.push_back({row.at(0).get<double>(), row.at(1).get<double>()});
  return points;
}

PoseResult pose_of(const nlohmann::json& json) {
  PoseResult pose;
  pose.bodies.candidate = points_of(json.at("bodies").at("candidate"));
  for (const auto& row : json.at("bodies").at("subset")) pose.bodies.subset.push_back(row.get<std::vector<double>>());
  for (const auto& hand : json.at("hands")) pose.hands.push_back(points_of(hand));
  for (const auto& face : json.at("faces")) pose.faces.push_back(points_of(face));
  return pose;
}

}  // namespace

TEST(OpenposeDraw, CanvasesMatchTheAnnotator) {
  CN_REQUIRE_GOLDEN();
  const auto dir = cn::testing::preprocess_case_dir("openpose_draw");
  const auto manifest = cn::testing::preprocess_manifest("openpose_draw");
  const int H = manifest.at("params").at("H"), W = manifest.at("params").at("W");
  const PoseResult pose = pose_of(manifest.at("pose"));
  const std::vector<std::pair<std::string, PoseDrawOptions>> canvases = {
      {"all.png", {true, true, true}},
      {"body.png", {true, false, false}},
      {"hands.png", {false, true, false}},
      {"faces.png", {false, false, true}}};
  for (const auto& [file, options] : canvases) {
    const cv::Mat expected = cn::testing::read_png(dir / file);
    const cv::Mat drawn = draw_pose(pose, H, W, options);
    EXPECT_EQ(cn::testing::differing_pixels(drawn, expected), 0) << file;
    EXPECT_GT(cv::countNonZero(drawn.reshape(1)), 0) << file;
  }
}
