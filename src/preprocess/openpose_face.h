#pragma once
// The face stage of ControlNet 1.1's annotator/openpose: the face box from the
// head and eyes/ears of a person (util.faceDetect), Face.__call__ (the crop
// at 384 x 384 through the face network, its last stage resized back to the
// crop) and Face.compute_peaks_from_heatmaps.
#include <torch/torch.h>

#include <functional>
#include <vector>

#include <opencv2/core.hpp>

#include "preprocess/openpose_body.h"

namespace cn::preprocess {

// A face crop in pixels of the image for person `person` (a row of the body
// subset). Its side may reach past the image: the crop is then clipped.
struct FaceBox {
  int x = 0, y = 0, width = 0;
  size_t person = 0;
};

// util.faceDetect: per person with a nose and at least one eye or ear, a box
// around the nose of half-side max(3 d(eye), 1.5 d(ear)) (d the larger of the
// |dx|, |dy| to the nose), kept when >= 20 px. The reference clips the side
// against the image with the half-side, not the side: reproduced.
std::vector<FaceBox> face_boxes(const BodyDecoding& body, int height, int width);

// The face network's input for a uint8 BGR crop: resized to 384 x 384
// (util.smart_resize), x / 256 - 0.5, (1, 3, 384, 384).
torch::Tensor face_net_input(const cv::Mat& crop_bgr);

// compute_peaks_from_heatmaps of the network's last stage (1, 71, h, w)
// resized (bilinear, align_corners) to the crop: for each of the 71 channels
// (the background too) with a value above 0.05, the position (x, y) of its
// first maximum in row-major order; channels without one are left out.
std::vector<cv::Point> decode_face(const torch::Tensor& last_stage, cv::Size crop);

// Face.__call__ and compute_peaks_from_heatmaps: the input through `net`
// (which returns the last stage), then decode_face.
std::vector<cv::Point> detect_face(const cv::Mat& crop_bgr, const std::function<torch::Tensor(const torch::Tensor&)>& net);

}  // namespace cn::preprocess
