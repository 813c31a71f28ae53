#pragma once
// PiDiNet soft edges (Su et al. 2021, "Pixel Difference Networks for
// Efficient Edge Detection") as the ControlNet 1.1 annotator runs it: the
// table5 model (60 channels, 'carv4' layout, CDCM dilation 24 and CSAM
// attention) with its pixel-difference convolutions applied unconverted, and
// the PidiNetDetector's post-processing. Module names follow
// table5_pidinet.pth without its "state_dict" container and "module." prefix.
#include <torch/torch.h>

#include <filesystem>
#include <memory>
#include <opencv2/core.hpp>
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace cn::preprocess {

namespace pidinet_detail {
class PdcBlock;
class PixelDifferenceConv;
class FuseBranch;
}  // namespace pidinet_detail

class PiDiNetImpl : public torch::nn::Module {
 public:
  PiDiNetImpl();
  // x: BGR / 255 (B, 3, H, W). Returns the sigmoids of the four side outputs
  // (upsampled to H x W) and of their fusion, in that order.
  std::vector<torch::Tensor> forward(const torch::Tensor& x);

 private:
  std::shared_ptr<pidinet_detail::PixelDifferenceConv> init_block_;
  std::vector<std::vector<std::shared_ptr<pidinet_detail::PdcBlock>>> stages_;
  std::vector<std::shared_ptr<pidinet_detail::FuseBranch>> branches_;
  torch::nn::Conv2d classifier_{nullptr};
};
TORCH_MODULE(PiDiNet);

// The network from module keys (a state dict with "module." already
// stripped). Strict; in eval mode.
PiDiNet load_pidinet(const io::TensorMap& state_dict, const std::string& what);

// The official checkpoint file ({'state_dict': sd} with DataParallel names,
// zip or legacy .pth, or a safetensors copy of either flattening), read once
// per path and kept.
PiDiNet pidinet_from_file(const std::filesystem::path& path, torch::ScalarType dtype = torch::kFloat32);

// load_annotator_weights of a PiDiNet file, with its container and
// DataParallel prefixes removed.
io::TensorMap pidinet_state_dict(const std::filesystem::path& path);

// The detector's network input: the image's channels reversed (BGR) / 255, (1, 3, H, W).
torch::Tensor pidinet_input(const cv::Mat& rgb);

// PidiNetDetector's map from the fused sigmoid output (1, 1, H, W): `safe`
// applies safe_step; then * 255 truncated to uint8 (gray).
cv::Mat pidinet_edge_map(const torch::Tensor& fused, bool safe);

// PidiNetDetector()(rgb, safe).
cv::Mat pidinet_detect(PiDiNet& model, const cv::Mat& rgb, bool safe);

}  // namespace cn::preprocess
