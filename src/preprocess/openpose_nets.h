#pragma once
// The OpenPose networks of ControlNet 1.1's annotator/openpose: the body
// network (bodypose_model: VGG front end, then six two-branch stages giving
// 38 part-affinity-field and 19 heatmap channels at 1/8 resolution) and the
// keypoint network shared in shape by the hand (handpose_model: six stages of
// 22 heatmaps at 1/8) and the face (FaceNet: the same with 71 heatmaps).
// Convolutions are registered under their names in the reference's
// Sequentials, which are the keys of body_pose_model.pth / hand_pose_model.pth
// (the files drop the Sequential's own name) and of facenet.pth.
#include <torch/torch.h>

#include <string>
#include <vector>

#include "io/safetensors.h"

namespace cn::preprocess {

namespace openpose_detail {
// One Sequential of the reference: named 3x3/7x7/1x1 convolutions, each
// followed by a ReLU unless listed as an output layer, and 2x2 max pools.
struct LayerSpec {
  std::string name;  // empty for a 2x2 / stride 2 max pool
  int64_t in = 0, out = 0, kernel = 0;
  bool relu = true;
};
struct Layer {
  torch::nn::Conv2d conv{nullptr};  // null for a pool
  bool relu = true;
};
std::vector<Layer> register_chain(torch::nn::Module& owner, const std::vector<LayerSpec>& specs);
torch::Tensor run_chain(const std::vector<Layer>& chain, torch::Tensor x);
}  // namespace openpose_detail

class BodyPoseNetImpl : public torch::nn::Module {
 public:
  BodyPoseNetImpl();
  // x: (B, 3, H, W) BGR / 256 - 0.5. Returns {PAFs (B, 38, H/8, W/8),
  // heatmaps (B, 19, H/8, W/8)} of stage 6; the heatmaps pass through a ReLU,
  // as in the reference (its no-ReLU list names the PAF output twice).
  std::pair<torch::Tensor, torch::Tensor> forward(const torch::Tensor& x);

 private:
  std::vector<openpose_detail::Layer> front_;
  std::vector<std::pair<std::vector<openpose_detail::Layer>, std::vector<openpose_detail::Layer>>> stages_;
};
TORCH_MODULE(BodyPoseNet);

class KeypointNetImpl : public torch::nn::Module {
 public:
  // `heatmaps`: 22 for the hand (21 keypoints and the background), 71 for
  // the face (70 landmarks and the background).
  explicit KeypointNetImpl(int64_t heatmaps);
  // x: (B, 3, H, W) BGR / 256 - 0.5. Returns the stage-6 heatmaps
  // (B, heatmaps, H/8, W/8).
  torch::Tensor forward(const torch::Tensor& x);

 private:
  std::vector<openpose_detail::Layer> front_;
  std::vector<std::vector<openpose_detail::Layer>> stages_;
};
TORCH_MODULE(KeypointNet);

// The networks from body_pose_model.pth / hand_pose_model.pth (keys without
// the Sequential name) / facenet.pth state dicts. Strict; in eval mode.
BodyPoseNet load_body_pose_net(const io::TensorMap& state_dict, const std::string& what);
KeypointNet load_hand_pose_net(const io::TensorMap& state_dict, const std::string& what);
KeypointNet load_face_net(const io::TensorMap& state_dict, const std::string& what);

}  // namespace cn::preprocess
