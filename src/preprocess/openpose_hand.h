#pragma once
// The hand stage of ControlNet 1.1's annotator/openpose: hand boxes from the
// body (util.handDetect) and Hand.__call__ on each box - the crop blurred,
// the keypoint network at four square sizes, the averaged heatmaps smoothed,
// thresholded and reduced to one peak per keypoint.
#include <torch/torch.h>

#include <functional>
#include <vector>

#include <opencv2/core.hpp>

#include "preprocess/openpose_body.h"

namespace cn::preprocess {

// A square hand crop in pixels of the image, for person `person` (a row of
// the body subset).
struct HandBox {
  int x = 0, y = 0, width = 0;
  bool is_left = false;
  size_t person = 0;
};

// util.handDetect: per person with shoulder, elbow and wrist of a side, a box
// around wrist + 0.33 (wrist - elbow) of side 1.5 max(|wrist - elbow|,
// 0.9 |elbow - shoulder|), clipped to the image; kept when >= 20 px. Left
// before right within a person.
std::vector<HandBox> hand_boxes(const BodyDecoding& body, int height, int width);

// The network inputs of Hand.__call__ for a uint8 BGR crop: GaussianBlur
// sigma 0.8, resized to 184, 368, 552 and 736 square, padded to x8 with 128,
// x / 256 - 0.5, in that order.
std::vector<torch::Tensor> hand_net_inputs(const cv::Mat& crop_bgr);

// The 21 keypoints (x, y) in crop pixels from the network's outputs for the
// four inputs ((1, 22, s/8, s/8) each); (0, 0) for a keypoint not found.
std::vector<cv::Point> decode_hand(const std::vector<torch::Tensor>& outputs, cv::Size crop);

// Hand.__call__: the inputs through `net`, then decode_hand.
std::vector<cv::Point> detect_hand(const cv::Mat& crop_bgr, const std::function<torch::Tensor(const torch::Tensor&)>& net);

}  // namespace cn::preprocess
