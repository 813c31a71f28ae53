#pragma once
// OpenPose keypoints and their drawing, as ControlNet 1.1's annotator/openpose
// (draw_pose, util.draw_bodypose / draw_handpose / draw_facepose) renders them:
// the pose map a ControlNet openpose model was trained on.
#include <vector>

#include <opencv2/core.hpp>

namespace cn::preprocess {

// A keypoint in normalised image coordinates (x / W, y / H); a part that was
// not found is stored as (-1, -1) in hands and faces.
struct PosePoint {
  double x = 0.0;
  double y = 0.0;
};

// The body decoder's result in the reference layout: `candidate` holds every
// detected part (normalised), `subset` one row per person with 20 values -
// the candidate index of each of the 18 parts (-1 when missing), the total
// score and the number of parts found.
struct BodyPose {
  std::vector<PosePoint> candidate;
  std::vector<std::vector<double>> subset;
};

struct PoseResult {
  BodyPose bodies;
  std::vector<std::vector<PosePoint>> hands;  // 21 points each
  std::vector<std::vector<PosePoint>> faces;  // 70 points each
};

struct PoseDrawOptions {
  bool body = true;
  bool hands = true;
  bool faces = true;
};

// draw_pose: a black H x W RGB canvas with the body (limb ellipses dimmed to
// 60 %, then joint discs), the hands (HSV-coloured bones, red joints) and the
// face landmarks (white dots). Colours are RGB, as in the reference.
cv::Mat draw_pose(const PoseResult& pose, int height, int width, const PoseDrawOptions& options = {});

}  // namespace cn::preprocess
