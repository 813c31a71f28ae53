#include "preprocess/openpose_draw.h"

#include <array>
#include <cmath>

#include <opencv2/imgproc.hpp>

namespace cn::preprocess {
namespace {

// Body parts are numbered 1..18 here, as in the reference's limbSeq.
constexpr std::array<std::array<int, 2>, 19> kLimbs = {{{2, 3},   {2, 6},   {3, 4},   {4, 5},   {6, 7},
                                                        {7, 8},   {2, 9},   {9, 10},  {10, 11}, {2, 12},
                                                        {12, 13}, {13, 14}, {2, 1},   {1, 15},  {15, 17},
                                                        {1, 16},  {16, 18}, {3, 17},  {6, 18}}};
// The reference draws only the first 17 limbs: the ear-shoulder pair never appears.
constexpr int kDrawnLimbs = 17;
constexpr int kBodyParts = 18;

const std::array<cv::Scalar, kBodyParts> kBodyColours = {
    cv::Scalar(255, 0, 0),   cv::Scalar(255, 85, 0),  cv::Scalar(255, 170, 0), cv::Scalar(255, 255, 0),
    cv::Scalar(170, 255, 0), cv::Scalar(85, 255, 0),  cv::Scalar(0, 255, 0),   cv::Scalar(0, 255, 85),
    cv::Scalar(0, 255, 170), cv::Scalar(0, 255, 255), cv::Scalar(0, 170, 255), cv::Scalar(0, 85, 255),
    cv::Scalar(0, 0, 255),   cv::Scalar(85, 0, 255),  cv::Scalar(170, 0, 255), cv::Scalar(255, 0, 255),
    cv::Scalar(255, 0, 170), cv::Scalar(255, 0, 85)};

constexpr std::array<std::array<int, 2>, 20> kHandBones = {{{0, 1},   {1, 2},   {2, 3},   {3, 4},   {0, 5},
                                                            {5, 6},   {6, 7},   {7, 8},   {0, 9},   {9, 10},
                                                            {10, 11}, {11, 12}, {0, 13},  {13, 14}, {14, 15},
                                                            {15, 16}, {0, 17},  {17, 18}, {18, 19}, {19, 20}}};

// The reference's threshold for "this hand/face point exists", compared with
// the integer pixel coordinates.
constexpr double kPresentEps = 0.01;

// matplotlib.colors.hsv_to_rgb for full saturation and value, times 255 (left
// unrounded: OpenCV rounds the Scalar when it draws).
cv::Scalar hue_colour(double hue) {
  const double h6 = hue * 6.0;
  const int sector = int(h6);
  const double f = h6 - sector;
  const double p = 0.0, q = 1.0 - f, t = 1.0 - (1.0 - f), v = 1.0;
  double r = v, g = t, b = p;
  switch (sector % 6) {
    case 0: r = v, g = t, b = p; break;
    case 1: r = q, g = v, b = p; break;
    case 2: r = p, g = v, b = t; break;
    case 3: r = p, g = q, b = v; break;
    case 4: r = t, g = p, b = v; break;
    default: r = v, g = p, b = q; break;
  }
  return cv::Scalar(r * 255.0, g * 255.0, b * 255.0);
}

void draw_body(cv::Mat& canvas, const BodyPose& body) {
  const double H = canvas.rows, W = canvas.cols;
  constexpr int kStickWidth = 4;
  for (int limb = 0; limb < kDrawnLimbs; ++limb) {
    for (const auto& person : body.subset) {
      const double a = person[kLimbs[limb][0] - 1], b = person[kLimbs[limb][1] - 1];
      if (a == -1 || b == -1) continue;
      const PosePoint& pa = body.candidate[size_t(a)];
      const PosePoint& pb = body.candidate[size_t(b)];
      const double xa = pa.x * W, xb = pb.x * W, ya = pa.y * H, yb = pb.y * H;
      const double mean_x = (xa + xb) / 2.0, mean_y = (ya + yb) / 2.0;
      const double length = std::pow((ya - yb) * (ya - yb) + (xa - xb) * (xa - xb), 0.5);
      const double angle = std::atan2(ya - yb, xa - xb) * (180.0 / M_PI);  // math.degrees
      std::vector<cv::Point> polygon;
      cv::ellipse2Poly(cv::Point(int(mean_x), int(mean_y)), cv::Size(int(length / 2), kStickWidth), int(angle), 0,
                       360, 1, polygon);
      cv::fillConvexPoly(canvas, polygon, kBodyColours[size_t(limb)]);
    }
  }
  // (canvas * 0.6).astype(uint8): float64 product, truncated.
  canvas.forEach<cv::Vec3b>([](cv::Vec3b& px, const int*) {
    for (int c = 0; c < 3; ++c) px[c] = uchar(double(px[c]) * 0.6);
  });
  for (int part = 0; part < kBodyParts; ++part) {
    for (const auto& person : body.subset) {
      const double index = person[size_t(part)];
      if (index == -1) continue;
      const PosePoint& p = body.candidate[size_t(index)];
      cv::circle(canvas, cv::Point(int(p.x * W), int(p.y * H)), 4, kBodyColours[size_t(part)], cv::FILLED);
    }
  }
}

void draw_hands(cv::Mat& canvas, const std::vector<std::vector<PosePoint>>& hands) {
  const double H = canvas.rows, W = canvas.cols;
  for (const auto& hand : hands) {
    for (size_t bone = 0; bone < kHandBones.size(); ++bone) {
      const PosePoint& a = hand[size_t(kHandBones[bone][0])];
      const PosePoint& b = hand[size_t(kHandBones[bone][1])];
      const int x1 = int(a.x * W), y1 = int(a.y * H), x2 = int(b.x * W), y2 = int(b.y * H);
      if (x1 > kPresentEps && y1 > kPresentEps && x2 > kPresentEps && y2 > kPresentEps)
        cv::line(canvas, {x1, y1}, {x2, y2}, hue_colour(double(bone) / double(kHandBones.size())), 2);
    }
    for (const auto& p : hand) {
      const int x = int(p.x * W), y = int(p.y * H);
      if (x > kPresentEps && y > kPresentEps) cv::circle(canvas, {x, y}, 4, cv::Scalar(0, 0, 255), cv::FILLED);
    }
  }
}

void draw_faces(cv::Mat& canvas, const std::vector<std::vector<PosePoint>>& faces) {
  const double H = canvas.rows, W = canvas.cols;
  for (const auto& face : faces) {
    for (const auto& p : face) {
      const int x = int(p.x * W), y = int(p.y * H);
      if (x > kPresentEps && y > kPresentEps) cv::circle(canvas, {x, y}, 3, cv::Scalar(255, 255, 255), cv::FILLED);
    }
  }
}

}  // namespace

cv::Mat draw_pose(const PoseResult& pose, int height, int width, const PoseDrawOptions& options) {
  cv::Mat canvas(height, width, CV_8UC3, cv::Scalar::all(0));
  if (options.body) draw_body(canvas, pose.bodies);
  if (options.hands) draw_hands(canvas, pose.hands);
  if (options.faces) draw_faces(canvas, pose.faces);
  return canvas;
}

}  // namespace cn::preprocess
