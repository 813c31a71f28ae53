#pragma once
// Content shuffle (the 1.1 ContentShuffleDetector): a smooth random flow from
// numpy's draws warps the image with cv2.remap.
#include <cstdint>
#include <opencv2/core.hpp>

namespace cn::preprocess {

class NumpyRandomState;

// make_noise_disk(h, w, 1, f): coarse uniform noise upsampled bicubically,
// cropped and normalised to [0, 1] (CV_64FC1, h x w).
cv::Mat make_noise_disk(int h, int w, int f, NumpyRandomState& rng);

// The flow of an output h x w sampling an input in_h x in_w (CV_32FC2, x then y);
// draws x's noise first, as the reference does.
cv::Mat shuffle_flow(int h, int w, int in_h, int in_w, int f, NumpyRandomState& rng);

// gradio_shuffle.py: np.random.seed(seed), flow for the output size, remap of the
// un-resized input (INTER_LINEAR, constant 0 border).
cv::Mat content_shuffle(const cv::Mat& image, int h, int w, uint32_t seed, int f = 256);

}  // namespace cn::preprocess
