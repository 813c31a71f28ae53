#include "preprocess/openpose_nets.h"

#include "nn/weights.h"

namespace cn::preprocess {
namespace openpose_detail {

std::vector<Layer> register_chain(torch::nn::Module& owner, const std::vector<LayerSpec>& specs) {
  std::vector<Layer> chain;
  for (const auto& spec : specs) {
    Layer layer;
    if (!spec.name.empty()) {
      layer.conv = owner.register_module(
          spec.name, torch::nn::Conv2d(torch::nn::Conv2dOptions(spec.in, spec.out, spec.kernel).padding(spec.kernel / 2)));
      layer.relu = spec.relu;
    }
    chain.push_back(layer);
  }
  return chain;
}

torch::Tensor run_chain(const std::vector<Layer>& chain, torch::Tensor x) {
  for (const auto& layer : chain) {
    if (!layer.conv) {
      x = torch::max_pool2d(x, 2, 2);
      continue;
    }
    auto conv = layer.conv;  // a holder copy: forward is not const
    x = conv->forward(x);
    if (layer.relu) x = torch::relu(x);
  }
  return x;
}

namespace {

const LayerSpec kPool{};

// The VGG-19 front shared by both networks up to conv4_2.
std::vector<LayerSpec> vgg_front() {
  return {{"conv1_1", 3, 64, 3},    {"conv1_2", 64, 64, 3},   kPool,
          {"conv2_1", 64, 128, 3},  {"conv2_2", 128, 128, 3}, kPool,
          {"conv3_1", 128, 256, 3}, {"conv3_2", 256, 256, 3}, {"conv3_3", 256, 256, 3},
          {"conv3_4", 256, 256, 3}, kPool,                    {"conv4_1", 256, 512, 3},
          {"conv4_2", 512, 512, 3}};
}

// A refinement stage: 7x7 convolutions, a 1x1 and the 1x1 output layer
// (Mconv1..7_stage<N><suffix>); the output has no ReLU unless `output_relu`.
std::vector<LayerSpec> refinement_stage(int stage, const std::string& suffix, int64_t in, int64_t out,
                                        bool output_relu) {
  const auto name = [&](int k) { return "Mconv" + std::to_string(k) + "_stage" + std::to_string(stage) + suffix; };
  return {{name(1), in, 128, 7},  {name(2), 128, 128, 7}, {name(3), 128, 128, 7}, {name(4), 128, 128, 7},
          {name(5), 128, 128, 7}, {name(6), 128, 128, 1}, {name(7), 128, out, 1, output_relu}};
}

constexpr int kStages = 6;
constexpr int64_t kPafs = 38, kBodyHeatmaps = 19, kHandHeatmaps = 22, kFaceHeatmaps = 71;

}  // namespace
}  // namespace openpose_detail

using namespace openpose_detail;

BodyPoseNetImpl::BodyPoseNetImpl() {
  auto front = vgg_front();
  front.push_back({"conv4_3_CPM", 512, 256, 3});
  front.push_back({"conv4_4_CPM", 256, 128, 3});
  front_ = register_chain(*this, front);
  const auto first_stage = [](const std::string& branch, int64_t out) {
    const auto name = [&](int k) { return "conv5_" + std::to_string(k) + "_CPM_" + branch; };
    return std::vector<LayerSpec>{{name(1), 128, 128, 3}, {name(2), 128, 128, 3}, {name(3), 128, 128, 3},
                                  {name(4), 128, 512, 1}, {name(5), 512, out, 1, false}};
  };
  stages_.emplace_back(register_chain(*this, first_stage("L1", kPafs)),
                       register_chain(*this, first_stage("L2", kBodyHeatmaps)));
  const int64_t stage_in = kPafs + kBodyHeatmaps + 128;
  for (int stage = 2; stage <= kStages; ++stage) {
    // The reference's quirk: the last heatmap layer keeps its ReLU.
    stages_.emplace_back(register_chain(*this, refinement_stage(stage, "_L1", stage_in, kPafs, false)),
                         register_chain(*this, refinement_stage(stage, "_L2", stage_in, kBodyHeatmaps,
                                                                stage == kStages)));
  }
}

std::pair<torch::Tensor, torch::Tensor> BodyPoseNetImpl::forward(const torch::Tensor& x) {
  const auto features = run_chain(front_, x);
  auto input = features;
  torch::Tensor pafs, heatmaps;
  for (const auto& [paf_branch, heatmap_branch] : stages_) {
    pafs = run_chain(paf_branch, input);
    heatmaps = run_chain(heatmap_branch, input);
    input = torch::cat({pafs, heatmaps, features}, 1);
  }
  return {pafs, heatmaps};
}

KeypointNetImpl::KeypointNetImpl(int64_t heatmaps) {
  auto front = vgg_front();
  for (const LayerSpec& layer : std::vector<LayerSpec>{{"conv4_3", 512, 512, 3},
                                                       {"conv4_4", 512, 512, 3},
                                                       {"conv5_1", 512, 512, 3},
                                                       {"conv5_2", 512, 512, 3},
                                                       {"conv5_3_CPM", 512, 128, 3}})
    front.push_back(layer);
  front_ = register_chain(*this, front);
  stages_.push_back(register_chain(*this, {{"conv6_1_CPM", 128, 512, 1}, {"conv6_2_CPM", 512, heatmaps, 1, false}}));
  for (int stage = 2; stage <= kStages; ++stage)
    stages_.push_back(register_chain(*this, refinement_stage(stage, "", heatmaps + 128, heatmaps, false)));
}

torch::Tensor KeypointNetImpl::forward(const torch::Tensor& x) {
  const auto features = run_chain(front_, x);
  auto input = features;
  torch::Tensor heatmaps;
  for (const auto& stage : stages_) {
    heatmaps = run_chain(stage, input);
    input = torch::cat({heatmaps, features}, 1);
  }
  return heatmaps;
}

BodyPoseNet load_body_pose_net(const io::TensorMap& state_dict, const std::string& what) {
  BodyPoseNet model;
  nn::load_weights(*model, state_dict, what);
  model->eval();
  return model;
}

namespace {
KeypointNet load_keypoint_net(int64_t heatmaps, const io::TensorMap& state_dict, const std::string& what) {
  KeypointNet model(heatmaps);
  nn::load_weights(*model, state_dict, what);
  model->eval();
  return model;
}
}  // namespace

KeypointNet load_hand_pose_net(const io::TensorMap& state_dict, const std::string& what) {
  return load_keypoint_net(kHandHeatmaps, state_dict, what);
}

KeypointNet load_face_net(const io::TensorMap& state_dict, const std::string& what) {
  return load_keypoint_net(kFaceHeatmaps, state_dict, what);
}

}  // namespace cn::preprocess
