#pragma once
// ControlNet 1.1's OpenposeDetector: body keypoints, optionally hands and
// faces from the boxes the body gives, the pose in normalised coordinates and
// its drawing; plus the OpenPose-format keypoints JSON sd-webui-controlnet
// writes for the same pose. The networks are passed in as callables, so the
// decoding can run on any network outputs (the tests' crafted ones).
#include <torch/torch.h>

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>

#include "preprocess/openpose_body.h"
#include "preprocess/openpose_draw.h"
#include "preprocess/openpose_face.h"
#include "preprocess/openpose_hand.h"

namespace cn::preprocess {

// The three networks on their (1, 3, H, W) BGR / 256 - 0.5 inputs: the body
// one returns {PAFs, heatmaps} of its last stage, the hand and face ones the
// heatmaps of their last stage. A network that is not needed may be empty.
struct OpenposeNetworks {
  std::function<std::pair<torch::Tensor, torch::Tensor>(const torch::Tensor&)> body;
  std::function<torch::Tensor(const torch::Tensor&)> hand;
  std::function<torch::Tensor(const torch::Tensor&)> face;
};

// What the detector found in an H x W image.
struct OpenposeDetection {
  int height = 0, width = 0;
  BodyDecoding body;             // pixels
  PoseResult pose;               // normalised, as OpenposeDetector(return_is_index=True)
  std::vector<HandBox> hands;    // the box of each of pose.hands, in order
  std::vector<FaceBox> faces;    // the box of each of pose.faces (boxes without a peak give no face)
};

// OpenposeDetector.__call__ on a uint8 RGB image (the detector flips it to
// BGR). Hands and faces are looked for when asked (1.1's hand_and_face sets
// both).
OpenposeDetection detect_openpose(const cv::Mat& rgb, const OpenposeNetworks& nets, bool with_hands, bool with_faces);

// The networks from body_pose_model.pth, hand_pose_model.pth and facenet.pth
// (or .safetensors copies); an empty path leaves that network out. Loaded
// once per file and dtype for the process; they run without gradients, in
// `dtype`, and return float32.
OpenposeNetworks openpose_networks_from_files(const std::filesystem::path& body, const std::filesystem::path& hand,
                                              const std::filesystem::path& face,
                                              torch::ScalarType dtype = torch::kFloat32);

// The pose as sd-webui-controlnet's encode_poses_as_json writes it (OpenPose's
// output format): {"people": [{"pose_keypoints_2d", "face_keypoints_2d",
// "hand_left_keypoints_2d", "hand_right_keypoints_2d"}], "animals": [],
// "canvas_height", "canvas_width"}. Keypoints are flat [x, y, c] triples in
// normalised coordinates, c = 1 for a keypoint and [0, 0, 0] for a missing
// body part; a list is null when the person has no such part. As there, a hand
// or face point the network did not find keeps the detector's (-1 / W, -1 / H)
// with c = 1 (it is not drawn).
nlohmann::ordered_json openpose_keypoints_json(const OpenposeDetection& detection);

}  // namespace cn::preprocess
