#pragma once
// How well an image answers a fill-task condition: the disk it paints versus
// the disk the outline encloses, and whether its colours are the prompted ones.
#include <opencv2/core.hpp>
#include <string>

namespace cn::train {

struct FillScore {
  double iou = 0;              // painted disk vs enclosed disk
  bool colours_right = false;  // dominant fill and background are nearest to the prompted names
  std::string fill_seen, background_seen;
};

// The disk enclosed by a white outline on black (outline included), as a mask.
cv::Mat disk_from_outline(const cv::Mat& outline_rgb);

// Scores a generated RGB image for a "<fill> circle with <background> background" prompt.
FillScore score_fill(const cv::Mat& generated_rgb, const cv::Mat& outline_rgb, const std::string& prompt);

}  // namespace cn::train
