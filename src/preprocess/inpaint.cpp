#include "preprocess/inpaint.h"

#include "controlnet/error.h"
#include "io/image.h"

namespace cn::preprocess {

torch::Tensor inpaint_control(const cv::Mat& rgb, const cv::Mat& mask) {
  if (rgb.type() != CV_8UC3) throw Error("inpaint: the image must be 8-bit RGB");
  if (mask.depth() != CV_8U || (mask.channels() != 1 && mask.channels() != 3))
    throw Error("inpaint: the mask must be an 8-bit gray or RGB image");
  if (mask.size() != rgb.size())
    throw Error("inpaint: the mask is " + std::to_string(mask.cols) + "x" + std::to_string(mask.rows) +
                ", the image " + std::to_string(rgb.cols) + "x" + std::to_string(rgb.rows));
  cv::Mat first;
  cv::extractChannel(mask, first, 0);
  const auto repaint = torch::from_blob(first.data, {1, 1, first.rows, first.cols}, torch::kUInt8).gt(127);
  return io::image_to_tensor(rgb).masked_fill(repaint, -1.0);
}

}  // namespace cn::preprocess
