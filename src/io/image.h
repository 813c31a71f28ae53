#pragma once
// Images as users give and receive them: files read with OpenCV (PNG, JPEG,
// WebP, ...), converted to RGB; PNGs written with libpng so that they can carry
// text chunks (A1111's "parameters").
#include <torch/torch.h>

#include <opencv2/core.hpp>
#include <string>
#include <utility>
#include <vector>

namespace cn::io {

// Reads an image file as 8-bit RGB: gray is replicated, alpha is composited over
// white, 16-bit is scaled down. Throws cn::Error naming the file when unreadable.
cv::Mat read_rgb_image(const std::string& path);
// The same from encoded bytes (an upload); `what` names them in errors.
cv::Mat decode_rgb_image(const std::string& bytes, const std::string& what);

// How a condition or init image is fitted to the output size (A1111 names).
enum class ResizeMode {
  just_resize,      // stretch to W x H
  crop_and_resize,  // scale to cover W x H, centre crop
  resize_and_fill,  // scale to fit inside W x H, pad the rest with black
};
ResizeMode parse_resize_mode(const std::string& name);

// Fits an RGB image to width x height.
cv::Mat fit_image(const cv::Mat& rgb, int width, int height, ResizeMode mode);

// uint8 RGB image <-> float tensor [1, 3, H, W] in [0, 1].
torch::Tensor image_to_tensor(const cv::Mat& rgb);
// Tensor [3, H, W] in [0, 1] -> uint8 RGB image, rounding as (x * 255).round().
cv::Mat tensor_to_image(const torch::Tensor& chw01);

using PngText = std::vector<std::pair<std::string, std::string>>;
// RGB (or gray) 8-bit as PNG bytes with tEXt/iTXt chunks.
std::string encode_png(const cv::Mat& rgb, const PngText& text = {});
// encode_png written to `path` atomically (tmp + rename).
void write_png(const std::string& path, const cv::Mat& rgb, const PngText& text = {});
// The text chunks of a PNG file (for tests and `info`).
PngText read_png_text(const std::string& path);

}  // namespace cn::io
