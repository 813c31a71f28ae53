#pragma once
// The control of the inpaint ControlNet (control_v11p_sd15_inpaint): the image
// with the pixels to repaint marked as -1, as ControlNet 1.1's inpaint demo
// and sd-webui-controlnet's inpaint preprocessors feed it.
#include <torch/torch.h>

#include <opencv2/core.hpp>

namespace cn::preprocess {

// [1, 3, H, W] float32: rgb / 255 where the mask is at most 127, -1 on every
// channel where it is above (white = repaint; the 1.1 demo's mask / 255 > 0.5
// on uint8). rgb is 8-bit RGB, mask 8-bit gray or RGB of the same size (the
// first channel is read, as the demo reads mask[:, :, 0]).
torch::Tensor inpaint_control(const cv::Mat& rgb, const cv::Mat& mask);

}  // namespace cn::preprocess
