// The whole OpenPose detector against annotator/openpose (golden/preprocess):
// openpose_crafted* replace the networks by fixed outputs (decoding of body,
// hand boxes, face boxes, hand and face peaks, drawing: all exact);
// openpose_nets checks the network inputs the detector prepares and the hand
// and face peak decoding of the saved random-network outputs (exact), and the
// detector end to end with the recipes' random weights.
#include <gtest/gtest.h>

#include <map>

#include "io/safetensors.h"
#include "preprocess/openpose.h"
#include "preprocess/openpose_nets.h"
#include "preprocess/preprocess.h"
#include "support/preprocess_fixtures.h"
#include "support/recipe.h"

using namespace cn;
using namespace cn::preprocess;

namespace {

// A network input tensor (1, 3, H, W) BGR / 256 - 0.5 as the fixtures store
// it: (x + 0.5) * 256 as an RGB uint8 image.
cv::Mat net_input_image(const torch::Tensor& input) {
  auto t = ((input[0] + 0.5) * 256.0).round().clamp(0, 255).to(torch::kUInt8).flip({0}).permute({1, 2, 0});
  t = t.contiguous();
  return cv::Mat(int(t.size(0)), int(t.size(1)), CV_8UC3, t.data_ptr<uint8_t>()).clone();
}

cv::Mat bgr_of_png(const std::filesystem::path& png) {
  cv::Mat bgr;
  cv::cvtColor(cn::testing::read_png(png), bgr, cv::COLOR_RGB2BGR);
  return bgr;
}

void expect_points_equal(const std::vector<PosePoint>& actual, const nlohmann::json& expected, const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  for (size_t i = 0; i < actual.size(); ++i) {
    EXPECT_EQ(actual[i].x, expected[i][0].get<double>()) << what << " point " << i;
    EXPECT_EQ(actual[i].y, expected[i][1].get<double>()) << what << " point " << i;
  }
}

void expect_pose_equal(const PoseResult& pose, const nlohmann::json& expected, const std::string& what) {
  expect_points_equal(pose.bodies.candidate, expected.at("bodies").at("candidate"), what + " candidate");
  const auto& subset = expected.at("bodies").at("subset");
  ASSERT_EQ(pose.bodies.subset.size(), subset.size()) << what;
  for (size_t i = 0; i < subset.size(); ++i)
    EXPECT_EQ(pose.bodies.subset[i], subset[i].get<std::vector<double>>()) << what << " person " << i;
  ASSERT_EQ(pose.hands.size(), expected.at("hands").size()) << what;
  for (size_t i = 0; i < pose.hands.size(); ++i)
    expect_points_equal(pose.hands[i], expected.at("hands")[i], what + " hand " + std::to_string(i));
  ASSERT_EQ(pose.faces.size(), expected.at("faces").size()) << what;
  for (size_t i = 0; i < pose.faces.size(); ++i)
    expect_points_equal(pose.faces[i], expected.at("faces")[i], what + " face " + std::to_string(i));
}

// The crafted cases' stand-ins for the networks, counting their calls.
struct CraftedNetworks {
  io::TensorMap body, hand, face;
  std::vector<int64_t> body_input_shape;
  std::vector<std::vector<int64_t>> hand_input_shapes;
  int body_calls = 0, hand_calls = 0, face_calls = 0;

  OpenposeNetworks networks() {
    OpenposeNetworks nets;
    nets.body = [this](const torch::Tensor& x) {
      ++body_calls;
      EXPECT_EQ(x.sizes().vec(), body_input_shape);
      return std::make_pair(body.at("paf_L1"), body.at("heatmap_L2"));
    };
    nets.hand = [this](const torch::Tensor& x) {
      ++hand_calls;
      hand_input_shapes.push_back(x.sizes().vec());
      const auto s = std::to_string(x.size(2)) + "x" + std::to_string(x.size(3));
      return hand.at("size" + s + "_output");
    };
    nets.face = [this](const torch::Tensor& x) {
      ++face_calls;
      EXPECT_EQ(x.sizes().vec(), (std::vector<int64_t>{1, 3, 384, 384}));
      return face.at("output_last_stage");
    };
    return nets;
  }
};

}  // namespace

TEST(Openpose, CraftedNetworkOutputsGiveTheAnnotatorsPoseAndCanvas) {
  CN_REQUIRE_GOLDEN();
  for (const std::string name : {"openpose_crafted", "openpose_crafted_body_only"}) {
    const auto dir = cn::testing::preprocess_case_dir(name);
    const auto manifest = cn::testing::preprocess_manifest(name);
    const bool hand_and_face = manifest.at("params").at("hand_and_face");
    const auto& files = manifest.at("files");
    CraftedNetworks fake;
    fake.body = io::load_safetensors((dir / "body_net_out.safetensors").string());
    fake.body_input_shape = files.at("body_net_out.safetensors").at("net_input_shape").get<std::vector<int64_t>>();
    if (hand_and_face) {
      fake.hand = io::load_safetensors((dir / "hand_net_calls.safetensors").string());
      fake.face = io::load_safetensors((dir / "face_net_calls.safetensors").string());
    }
    const cv::Mat input = cn::testing::read_png(dir / "input.png");
    const auto d = detect_openpose(input, fake.networks(), hand_and_face, hand_and_face);

    const auto& calls = manifest.at("n_network_calls");
    EXPECT_EQ(fake.body_calls, calls.at("body").get<int>()) << name;
    EXPECT_EQ(fake.hand_calls, calls.at("hand").get<int>()) << name;
    EXPECT_EQ(fake.face_calls, calls.at("face").get<int>()) << name;
    if (hand_and_face)
      EXPECT_EQ(fake.hand_input_shapes,
                files.at("hand_net_calls.safetensors").at("net_input_shapes").get<std::vector<std::vector<int64_t>>>())
          << name;

    // The boxes are computed whether or not the detector was asked for hands.
    const auto hands = hand_boxes(d.body, d.height, d.width);
    const auto& expected_hands = manifest.at("hand_boxes_xyw_isleft");
    ASSERT_EQ(hands.size(), expected_hands.size()) << name;
    for (size_t i = 0; i < hands.size(); ++i) {
      EXPECT_EQ(hands[i].x, expected_hands[i][0].get<int>()) << name << " hand box " << i;
      EXPECT_EQ(hands[i].y, expected_hands[i][1].get<int>()) << name << " hand box " << i;
      EXPECT_EQ(hands[i].width, expected_hands[i][2].get<int>()) << name << " hand box " << i;
      EXPECT_EQ(hands[i].is_left, expected_hands[i][3].get<bool>()) << name << " hand box " << i;
    }
    const auto faces = face_boxes(d.body, d.height, d.width);
    const auto& expected_faces = manifest.at("face_boxes_xyw");
    ASSERT_EQ(faces.size(), expected_faces.size()) << name;
    for (size_t i = 0; i < faces.size(); ++i) {
      EXPECT_EQ(faces[i].x, expected_faces[i][0].get<int>()) << name << " face box " << i;
      EXPECT_EQ(faces[i].y, expected_faces[i][1].get<int>()) << name << " face box " << i;
      EXPECT_EQ(faces[i].width, expected_faces[i][2].get<int>()) << name << " face box " << i;
    }

    expect_pose_equal(d.pose, manifest.at("pose"), name);
    const cv::Mat canvas = draw_pose(d.pose, d.height, d.width);
    EXPECT_EQ(cn::testing::differing_pixels(canvas, cn::testing::read_png(dir / "canvas.png")), 0) << name;
  }
}

TEST(Openpose, KeypointsJsonIsSdWebuiControlnetsFormat) {
  CN_REQUIRE_GOLDEN();
  const std::string name = "openpose_crafted";
  const auto dir = cn::testing::preprocess_case_dir(name);
  const auto manifest = cn::testing::preprocess_manifest(name);
  CraftedNetworks fake;
  fake.body = io::load_safetensors((dir / "body_net_out.safetensors").string());
  fake.body_input_shape =
      manifest.at("files").at("body_net_out.safetensors").at("net_input_shape").get<std::vector<int64_t>>();
  fake.hand = io::load_safetensors((dir / "hand_net_calls.safetensors").string());
  fake.face = io::load_safetensors((dir / "face_net_calls.safetensors").string());
  const auto d = detect_openpose(cn::testing::read_png(dir / "input.png"), fake.networks(), true, true);
  // Round trip through the text, as a reader of the file sees it.
  const auto json = nlohmann::json::parse(openpose_keypoints_json(d).dump());

  EXPECT_EQ(json.at("canvas_width").get<int>(), 640);
  EXPECT_EQ(json.at("canvas_height").get<int>(), 448);
  EXPECT_TRUE(json.at("animals").empty());
  const auto& pose = manifest.at("pose");
  const auto& people = json.at("people");
  ASSERT_EQ(people.size(), pose.at("bodies").at("subset").size());
  // Hand boxes in the fixture: person 0 left, person 0 right, person 1 left, person 1 right.
  const std::vector<std::pair<std::string, size_t>> hand_of = {
      {"hand_left_keypoints_2d", 0}, {"hand_right_keypoints_2d", 1}, {"hand_left_keypoints_2d", 2},
      {"hand_right_keypoints_2d", 3}};
  for (size_t person = 0; person < people.size(); ++person) {
    const auto& p = people[person];
    const auto& subset = pose.at("bodies").at("subset")[person];
    const auto& body = p.at("pose_keypoints_2d");
    ASSERT_EQ(body.size(), 18u * 3);
    for (size_t part = 0; part < 18; ++part) {
      const int index = int(subset[part].get<double>());
      const auto& c = pose.at("bodies").at("candidate");
      const std::vector<double> expected =
          index == -1 ? std::vector<double>{0, 0, 0}
                      : std::vector<double>{c[size_t(index)][0].get<double>(), c[size_t(index)][1].get<double>(), 1};
      for (size_t k = 0; k < 3; ++k)
        EXPECT_EQ(body[part * 3 + k].get<double>(), expected[k]) << "person " << person << " part " << part;
    }
    for (size_t h = 2 * person; h < 2 * person + 2; ++h) {
      const auto& flat = p.at(hand_of[h].first);
      const auto& expected = pose.at("hands")[hand_of[h].second];
      ASSERT_EQ(flat.size(), 21u * 3) << hand_of[h].first;
      for (size_t k = 0; k < 21; ++k) {
        EXPECT_EQ(flat[k * 3].get<double>(), expected[k][0].get<double>());
        EXPECT_EQ(flat[k * 3 + 1].get<double>(), expected[k][1].get<double>());
        EXPECT_EQ(flat[k * 3 + 2].get<double>(), 1.0);
      }
    }
    const auto& face = p.at("face_keypoints_2d");
    const auto& expected_face = pose.at("faces")[person];
    ASSERT_EQ(face.size(), expected_face.size() * 3);
    for (size_t k = 0; k < expected_face.size(); ++k) EXPECT_EQ(face[k * 3].get<double>(), expected_face[k][0].get<double>());
  }

  // Without hands and faces those lists are null.
  CraftedNetworks body_only = fake;
  const auto bare = openpose_keypoints_json(detect_openpose(cn::testing::read_png(dir / "input.png"), body_only.networks(), false, false));
  for (const auto& p : bare.at("people")) {
    EXPECT_TRUE(p.at("face_keypoints_2d").is_null());
    EXPECT_TRUE(p.at("hand_left_keypoints_2d").is_null());
    EXPECT_TRUE(p.at("hand_right_keypoints_2d").is_null());
  }
}

TEST(Openpose, NetworkInputsAreTheAnnotators) {
  CN_REQUIRE_GOLDEN();
  const auto dir = cn::testing::preprocess_case_dir("openpose_nets");
  cv::Mat bgr = bgr_of_png(dir / "figure_rgba_input.png");
  EXPECT_EQ(cn::testing::differing_pixels(net_input_image(body_net_input(bgr)),
                                          cn::testing::read_png(dir / "figure_rgba_body_net_input.png")),
            0)
      << "body";
  const auto hand_inputs = hand_net_inputs(bgr_of_png(dir / "hand_crop_bgr.png"));
  ASSERT_EQ(hand_inputs.size(), 4u);
  for (size_t s = 0; s < hand_inputs.size(); ++s)
    EXPECT_EQ(cn::testing::differing_pixels(
                  net_input_image(hand_inputs[s]),
                  cn::testing::read_png(dir / ("hand_scale" + std::to_string(s) + "_net_input.png"))),
              0)
        << "hand scale " << s;
  EXPECT_EQ(cn::testing::differing_pixels(net_input_image(face_net_input(bgr_of_png(dir / "face_crop_bgr.png"))),
                                          cn::testing::read_png(dir / "face_net_input.png")),
            0)
      << "face";
}

TEST(Openpose, HandAndFacePeaksOfTheSavedOutputsAreTheAnnotators) {
  CN_REQUIRE_GOLDEN();
  const auto dir = cn::testing::preprocess_case_dir("openpose_nets");
  const auto expect_peaks = [](const std::vector<cv::Point>& peaks, const torch::Tensor& expected, const std::string& what) {
    ASSERT_EQ(int64_t(peaks.size()), expected.size(0)) << what;
    for (int64_t i = 0; i < expected.size(0); ++i) {
      EXPECT_EQ(peaks[size_t(i)].x, expected[i][0].item<int64_t>()) << what << " " << i;
      EXPECT_EQ(peaks[size_t(i)].y, expected[i][1].item<int64_t>()) << what << " " << i;
    }
  };
  const auto hand = io::load_safetensors((dir / "hand_raw.safetensors").string());
  std::vector<torch::Tensor> outputs;
  for (int s = 0; s < 4; ++s) outputs.push_back(hand.at("scale" + std::to_string(s) + "_output"));
  const cv::Size hand_crop = cn::testing::read_png(dir / "hand_crop_bgr.png").size();
  expect_peaks(decode_hand(outputs, hand_crop), hand.at("peaks"), "hand");

  const auto face = io::load_safetensors((dir / "face_raw.safetensors").string());
  const cv::Size face_crop = cn::testing::read_png(dir / "face_crop_bgr.png").size();
  expect_peaks(decode_face(face.at("stage6_heatmaps"), face_crop), face.at("peaks"), "face");
}

TEST(Openpose, RandomWeightDetectorEndToEnd) {
  CN_REQUIRE_GOLDEN();
  const auto dir = cn::testing::preprocess_case_dir("openpose_nets");
  const auto manifest = cn::testing::preprocess_manifest("openpose_nets");
  OpenposeNetworks nets;
  auto body = load_body_pose_net(cn::testing::recipe_weights(cn::testing::recipe_path("openpose_body")), "body recipe");
  auto face = load_face_net(cn::testing::recipe_weights(cn::testing::recipe_path("openpose_face")), "face recipe");
  nets.body = [body](const torch::Tensor& x) mutable {
    torch::NoGradGuard no_grad;
    return body->forward(x);
  };
  // The random body gives no hand box (the annotator's
  // pose has no hands): without a hand network the detector would throw if
  // it asked for one, and the test skips building its 37 M weights.
  nets.face = [face](const torch::Tensor& x) mutable {
    torch::NoGradGuard no_grad;
    return face->forward(x);
  };
  const auto d = detect_openpose(cn::testing::read_png(dir / "figure_rgba_input.png"), nets, true, true);
  expect_pose_equal(d.pose, manifest.at("detected_pose"), "figure_rgba");
  const cv::Mat canvas = draw_pose(d.pose, d.height, d.width);
  EXPECT_EQ(cn::testing::differing_pixels(canvas, cn::testing::read_png(dir / "figure_rgba_canvas.png")), 0);
}
