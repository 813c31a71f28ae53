#include "preprocess/hed.h"

#include <cmath>
#include <opencv2/imgproc.hpp>

#include "controlnet/error.h"
#include "nn/weights.h"
#include "preprocess/edges.h"
#include "preprocess/preprocess.h"

namespace cn::preprocess {

namespace F = torch::nn::functional;

namespace hed_detail {

// `layers` 3x3 convs with ReLU (the first one changes the channel count),
// optionally after a 2x2 max-pool, and the block's 1x1 edge projection.
class HedBlock : public torch::nn::Module {
 public:
  HedBlock(int64_t in, int64_t out, int layers) {
    convs_ = register_module("convs", torch::nn::ModuleList());
    for (int i = 0; i < layers; ++i)
      convs_->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(i == 0 ? in : out, out, 3).padding(1)));
    projection_ = register_module("projection", torch::nn::Conv2d(torch::nn::Conv2dOptions(out, 1, 1)));
  }
  // Returns the features and their projection.
  std::pair<torch::Tensor, torch::Tensor> forward(torch::Tensor h, bool down_sample) {
    if (down_sample) h = F::max_pool2d(h, F::MaxPool2dFuncOptions(2).stride(2));
    for (const auto& conv : *convs_) h = torch::relu(conv->as<torch::nn::Conv2d>()->forward(h));
    return {h, projection_(h)};
  }

 private:
  torch::nn::ModuleList convs_{nullptr};
  torch::nn::Conv2d projection_{nullptr};
};

}  // namespace hed_detail

HedImpl::HedImpl() {
  norm_ = register_parameter("norm", torch::zeros({1, 3, 1, 1}));
  struct Shape {
    int64_t in, out;
    int layers;
  };
  const Shape shapes[] = {{3, 64, 2}, {64, 128, 2}, {128, 256, 3}, {256, 512, 3}, {512, 512, 3}};
  for (size_t i = 0; i < std::size(shapes); ++i)
    blocks_.push_back(register_module("block" + std::to_string(i + 1),
                                      std::make_shared<hed_detail::HedBlock>(shapes[i].in, shapes[i].out, shapes[i].layers)));
}

std::vector<torch::Tensor> HedImpl::forward(const torch::Tensor& x) {
  std::vector<torch::Tensor> projections;
  torch::Tensor h = x - norm_;
  for (size_t i = 0; i < blocks_.size(); ++i) {
    auto [features, projection] = blocks_[i]->forward(h, /*down_sample=*/i > 0);
    h = features;
    projections.push_back(projection);
  }
  return projections;
}

Hed load_hed(const io::TensorMap& state_dict, const std::string& what) {
  Hed model;
  nn::load_weights(*model, state_dict, what);
  model->eval();
  return model;
}

Hed hed_from_file(const std::filesystem::path& path, torch::ScalarType dtype) {
  return load_once<Hed>(path, dtype, [](const std::filesystem::path& p) {
    return load_hed(load_annotator_weights(p, {}), p.string());
  });
}

torch::Tensor hed_input(const cv::Mat& rgb) {
  CV_Assert(rgb.type() == CV_8UC3);
  const cv::Mat pixels = rgb.isContinuous() ? rgb : rgb.clone();  // cropped views have row gaps
  return torch::from_blob(pixels.data, {1, pixels.rows, pixels.cols, 3}, torch::kUInt8)
      .to(torch::kFloat32)
      .permute({0, 3, 1, 2})
      .contiguous();
}

cv::Mat hed_edge_map(const std::vector<torch::Tensor>& projections, cv::Size size, bool safe) {
  if (projections.empty()) throw Error("HED map without projections");
  // numpy's mean over the stacked last axis: a sequential float32 sum of the
  // few maps, then a float32 division by their count.
  cv::Mat sum;
  for (const auto& p : projections) {
    const auto map = p.to(torch::kFloat32).contiguous();
    if (map.dim() != 4 || map.size(0) != 1 || map.size(1) != 1) throw Error("HED projection is not (1, 1, h, w)");
    cv::Mat resized;
    cv::resize(cv::Mat(int(map.size(2)), int(map.size(3)), CV_32F, map.data_ptr()), resized, size, 0, 0, cv::INTER_LINEAR);
    if (sum.empty()) sum = resized;
    else sum += resized;
  }
  const float count = float(projections.size());
  cv::Mat edge(size, CV_64F);
  for (int y = 0; y < size.height; ++y)
    for (int x = 0; x < size.width; ++x) {
      const float mean = sum.at<float>(y, x) / count;
      edge.at<double>(y, x) = 1.0 / (1.0 + std::exp(-double(mean)));
    }
  return unit_to_u8(safe ? safe_step(edge) : edge);
}

cv::Mat hed_detect(Hed& model, const cv::Mat& rgb, bool safe) {
  torch::NoGradGuard no_grad;
  return hed_edge_map(model->forward(hed_input(rgb).to(network_dtype(*model))), rgb.size(), safe);
}

}  // namespace cn::preprocess
