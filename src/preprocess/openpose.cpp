#include "preprocess/openpose.h"

#include <opencv2/imgproc.hpp>

#include "controlnet/error.h"
#include "preprocess/openpose_nets.h"
#include "preprocess/preprocess.h"

namespace cn::preprocess {
namespace {

// A box's pixels as numpy slices them: clipped to the image, copied so that
// the crop is an image of its own.
cv::Mat crop_of(const cv::Mat& image, int x, int y, int side) {
  return image(cv::Rect(x, y, side, side) & cv::Rect(0, 0, image.cols, image.rows)).clone();
}

// The detector's normalisation of hand and face peaks (crop pixels), in
// float32 as its numpy arrays: a coordinate below 1e-6 becomes -1, the others
// are offset by the box; both are divided by the image side.
std::vector<PosePoint> normalised_peaks(const std::vector<cv::Point>& peaks, int box_x, int box_y, int height,
                                        int width) {
  const auto normalise = [](int peak, int offset, int side) {
    const float v = float(peak) < 1e-6f ? -1.0f : float(peak) + float(offset);
    return double(v / float(side));
  };
  std::vector<PosePoint> points;
  for (const auto& p : peaks) points.push_back({normalise(p.x, box_x, width), normalise(p.y, box_y, height)});
  return points;
}

template <typename Net>
const Net& required(const Net& net, const char* what) {
  if (!net) throw Error(std::string("OpenPose: the ") + what + " network is needed but was not given");
  return net;
}

}  // namespace

OpenposeDetection detect_openpose(const cv::Mat& rgb, const OpenposeNetworks& nets, bool with_hands, bool with_faces) {
  if (rgb.type() != CV_8UC3) throw Error("OpenPose takes a uint8 RGB image");
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  OpenposeDetection d;
  d.height = bgr.rows;
  d.width = bgr.cols;
  const auto [pafs, heatmaps] = required(nets.body, "body")(body_net_input(bgr));
  d.body = decode_body(pafs, heatmaps, d.height, d.width);

  if (with_hands)
    for (const auto& box : hand_boxes(d.body, d.height, d.width)) {
      const auto peaks = detect_hand(crop_of(bgr, box.x, box.y, box.width), required(nets.hand, "hand"));
      d.pose.hands.push_back(normalised_peaks(peaks, box.x, box.y, d.height, d.width));
      d.hands.push_back(box);
    }
  if (with_faces)
    for (const auto& box : face_boxes(d.body, d.height, d.width)) {
      const auto peaks = detect_face(crop_of(bgr, box.x, box.y, box.width), required(nets.face, "face"));
      if (peaks.empty()) continue;  // the reference's empty peak array is not a face
      d.pose.faces.push_back(normalised_peaks(peaks, box.x, box.y, d.height, d.width));
      d.faces.push_back(box);
    }

  for (const auto& c : d.body.candidate) d.pose.bodies.candidate.push_back({c[0] / d.width, c[1] / d.height});
  d.pose.bodies.subset = d.body.subset;
  return d;
}

OpenposeNetworks openpose_networks_from_files(const std::filesystem::path& body, const std::filesystem::path& hand,
                                              const std::filesystem::path& face, torch::ScalarType dtype) {
  OpenposeNetworks nets;
  if (!body.empty()) {
    auto model = load_once<BodyPoseNet>(body, dtype, [](const std::filesystem::path& p) {
      return load_body_pose_net(load_annotator_weights(p, {}), p.string());
    });
    nets.body = [model](const torch::Tensor& x) mutable {
      torch::NoGradGuard no_grad;
      const auto [pafs, heatmaps] = model->forward(x.to(network_dtype(*model)));
      return std::make_pair(pafs.to(torch::kFloat32), heatmaps.to(torch::kFloat32));
    };
  }
  // The hand and face networks share a class: cached under their own files.
  const auto keypoint_net = [dtype](const std::filesystem::path& path, bool is_hand) {
    auto model = load_once<KeypointNet>(path, dtype, [is_hand](const std::filesystem::path& p) {
      const auto weights = load_annotator_weights(p, {});
      return is_hand ? load_hand_pose_net(weights, p.string()) : load_face_net(weights, p.string());
    });
    return [model](const torch::Tensor& x) mutable {
      torch::NoGradGuard no_grad;
      return model->forward(x.to(network_dtype(*model))).to(torch::kFloat32);
    };
  };
  if (!hand.empty()) nets.hand = keypoint_net(hand, true);
  if (!face.empty()) nets.face = keypoint_net(face, false);
  return nets;
}

nlohmann::ordered_json openpose_keypoints_json(const OpenposeDetection& detection) {
  const auto triples = [](const std::vector<PosePoint>& points) {
    nlohmann::ordered_json flat = nlohmann::ordered_json::array();
    for (const auto& p : points) flat.insert(flat.end(), {p.x, p.y, 1.0});
    return flat;
  };
  nlohmann::ordered_json people = nlohmann::ordered_json::array();
  const auto& bodies = detection.pose.bodies;
  for (size_t person = 0; person < bodies.subset.size(); ++person) {
    nlohmann::ordered_json body = nlohmann::ordered_json::array();
    for (size_t part = 0; part < 18; ++part) {
      const int index = int(bodies.subset[person][part]);
      if (index == -1) {
        body.insert(body.end(), {0.0, 0.0, 0.0});
      } else {
        const auto& p = bodies.candidate[size_t(index)];
        body.insert(body.end(), {p.x, p.y, 1.0});
      }
    }
    nlohmann::ordered_json face = nullptr, left = nullptr, right = nullptr;
    for (size_t i = 0; i < detection.hands.size(); ++i)
      if (detection.hands[i].person == person)
        (detection.hands[i].is_left ? left : right) = triples(detection.pose.hands[i]);
    for (size_t i = 0; i < detection.faces.size(); ++i)
      if (detection.faces[i].person == person) face = triples(detection.pose.faces[i]);
    people.push_back({{"pose_keypoints_2d", body},
                      {"face_keypoints_2d", face},
                      {"hand_left_keypoints_2d", left},
                      {"hand_right_keypoints_2d", right}});
  }
  return {{"people", people},
          {"animals", nlohmann::ordered_json::array()},
          {"canvas_height", detection.height},
          {"canvas_width", detection.width}};
}

}  // namespace cn::preprocess
