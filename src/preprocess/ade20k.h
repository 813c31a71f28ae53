#pragma once
// ADE20K segmentation colouring (the 1.1 Uniformer annotator's show_result with
// opacity 1): each label becomes its palette colour.
#include <array>
#include <cstdint>
#include <opencv2/core.hpp>

namespace cn::preprocess {

constexpr int kAde20kClasses = 150;

// The ADE20K palette, RGB, indexed by label (the one place it is defined).
const std::array<std::array<uint8_t, 3>, kAde20kClasses>& ade20k_palette();

// Colours a CV_8UC1 label map into an RGB CV_8UC3 map; labels outside the
// palette (>= 150, e.g. 255 "ignore") stay black as show_result leaves them.
cv::Mat colorize_ade20k(const cv::Mat& labels);

}  // namespace cn::preprocess
