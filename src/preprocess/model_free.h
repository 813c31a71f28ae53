#pragma once
// Preprocessors without a network, as sd-webui-controlnet (and controlnet_aux)
// compute them, with the references' exact numerics: threshold, binary,
// line art from a Gaussian blur ("lineart_standard"), XDoG scribble and the
// tile model's down-sampling. Inputs are uint8 RGB; how they are framed at the
// detect resolution (sd-webui-controlnet pads, the 1.1 demos do not) is the
// caller's choice (Framing in preprocess.h).
#include <opencv2/core.hpp>

namespace cn::preprocess {

// sd-webui-controlnet "threshold": 255 on all three channels where the
// darkest channel is above `threshold`, else 0.
cv::Mat threshold_map(const cv::Mat& rgb, double threshold);

// sd-webui-controlnet annotator/binary: the gray image (RGB2GRAY) inverted
// around `threshold` (above -> 0, else 255); a threshold of 0 or 255 asks for
// Otsu's. Gray result.
cv::Mat binary_map(const cv::Mat& rgb, double threshold);

// lineart_standard (sd-webui-controlnet, controlnet_aux LineartStandardDetector):
// how much darker each pixel is than its float32 Gaussian blur (`sigma`), the
// smallest of the three channels, clipped to [0, 255]; scaled so that the
// median of the values above `intensity_threshold` (at least 16) maps to 127;
// truncated to uint8. White lines on black, gray. The statistics are over the
// whole input, so a padded input gives another scale than its crop.
cv::Mat lineart_standard(const cv::Mat& rgb, double sigma = 6.0, double intensity_threshold = 8);

// sd-webui-controlnet "scribble_xdog": difference of float32 Gaussians (sigma
// 5 minus sigma 0.5), the smallest channel, as uint8 d = clip(255 - that);
// 255 on all channels where 2 * (255 - d) > threshold, with that product in
// uint8 as numpy computes it (it wraps at 256, so the strongest edges between
// 128 and 128 + threshold / 2 are dropped, as in the reference).
cv::Mat scribble_xdog(const cv::Mat& rgb, double threshold = 32);

// sd-webui-controlnet "tile_resample": the image shrunk by `rate` (sizes
// truncated, INTER_AREA); rates below 1.1 keep the image as it is.
cv::Mat tile_resample(const cv::Mat& rgb, double rate);

}  // namespace cn::preprocess
