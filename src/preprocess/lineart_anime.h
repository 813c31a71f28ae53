#pragma once
// Anime line art as the ControlNet 1.1 annotator computes it: Anime2Sketch's
// pix2pix UnetGenerator(3, 1, 8, 64) with instance norm (netG.pth). Eight
// stride-2 levels down to a 1x1 bottleneck for a 256x256 input, which is why
// the detector resizes its input to multiples of 256. Module names follow the
// file without DataParallel's "module." (model.model.1.model.3.model.1.weight:
// each level's blocks nest inside the outer one's Sequential).
#include <torch/torch.h>

#include <filesystem>
#include <opencv2/core.hpp>
#include <string>

#include "io/safetensors.h"

namespace cn::preprocess {

namespace lineart_anime_detail {
class UnetSkipBlock;
}  // namespace lineart_anime_detail

class AnimeUnetGeneratorImpl : public torch::nn::Module {
 public:
  AnimeUnetGeneratorImpl();
  // x: RGB / 127.5 - 1 as (B, 3, H, W), H and W multiples of 256; returns the
  // tanh output (B, 1, H, W), near 1 on the background.
  torch::Tensor forward(const torch::Tensor& x);

 private:
  std::shared_ptr<lineart_anime_detail::UnetSkipBlock> model_;
};
TORCH_MODULE(AnimeUnetGenerator);

// The network from netG.pth's state dict with the module names (without
// "module."). Strict; eval mode.
AnimeUnetGenerator load_lineart_anime(const io::TensorMap& state_dict, const std::string& what);
// load_lineart_anime of an annotator file, with or without DataParallel's
// "module." (the annotator drops it), read once per path and kept.
AnimeUnetGenerator lineart_anime_from_file(const std::filesystem::path& path, torch::ScalarType dtype = torch::kFloat32);

// The image the network sees: rgb resized (INTER_CUBIC) so that both sides
// are the next multiples of 256 (uint8 RGB).
cv::Mat lineart_anime_resize(const cv::Mat& rgb);
// That image as the network's input: float32 / 127.5 - 1, (1, 3, H, W).
torch::Tensor lineart_anime_input(const cv::Mat& resized_rgb);

// The annotator's map of the network's output (1, 1, Hn, Wn): out * 127.5 +
// 127.5 in float32, INTER_CUBIC back to `size`, clipped and truncated to
// uint8; white background with dark lines.
cv::Mat lineart_anime_map(const torch::Tensor& tanh_out, cv::Size size);

// LineartAnimeDetector: the map of rgb, at rgb's size.
cv::Mat lineart_anime_detect(AnimeUnetGenerator& model, const cv::Mat& rgb);

}  // namespace cn::preprocess
