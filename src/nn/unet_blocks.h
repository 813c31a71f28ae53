#pragma once
// The down, middle and up blocks of the SD UNet (diffusers CrossAttnDownBlock2D /
// DownBlock2D, UNetMidBlock2DCrossAttn, CrossAttnUpBlock2D / UpBlock2D). One
// class per role; whether a block has cross-attention is an option, so the
// plain and cross-attention variants share their code.
#include <torch/torch.h>

#include <vector>

#include "nn/resnet.h"
#include "nn/transformer.h"

namespace cn::nn {

struct UNetBlockOptions {
  int64_t in_channels;
  int64_t out_channels;
  int64_t temb_channels;
  int64_t layers;
  bool cross_attention;     // has Transformer2D after each resnet
  Transformer2DOptions transformer;  // channels are set per block
  int64_t groups = 32;
  double eps = 1e-5;
};

// What the three kinds of block share: resnets and transformers, each run
// either keeping its activations for backward or, under gradient
// checkpointing, keeping only its input and recomputing the rest in backward.
// Per layer, as diffusers checkpoints: the largest activations (attention
// probabilities, GroupNorm/SiLU intermediates) live inside one layer.
class LayerBlockImpl : public torch::nn::Module {
 public:
  bool gradient_checkpointing = false;

 protected:
  torch::Tensor resnet(size_t i, const torch::Tensor& x, const torch::Tensor& temb);
  torch::Tensor attention(size_t i, const torch::Tensor& x, const torch::Tensor& context);

  torch::nn::ModuleList resnets{nullptr}, attentions{nullptr};
};

// Switches gradient checkpointing on or off in every block of `model`.
void set_gradient_checkpointing(torch::nn::Module& model, bool enabled);

// resnets (+ attentions) then an optional stride-2 downsampler; every layer's
// output is a skip connection for the up path.
class DownBlockImpl : public LayerBlockImpl {
 public:
  DownBlockImpl(const UNetBlockOptions& options, bool add_downsample);
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& temb, const torch::Tensor& context,
                        std::vector<torch::Tensor>& skips);

 private:
  torch::nn::ModuleList downsamplers{nullptr};
};
TORCH_MODULE(DownBlock);

// resnet, transformer, resnet.
class MidBlockImpl : public LayerBlockImpl {
 public:
  explicit MidBlockImpl(const UNetBlockOptions& options);
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& temb, const torch::Tensor& context);
};
TORCH_MODULE(MidBlock);

// Each resnet consumes the last skip (concatenated on channels); then an
// optional nearest x2 upsampler to the size of the next skip.
class UpBlockImpl : public LayerBlockImpl {
 public:
  // skip_channels[i]: channels of the skip the i-th resnet consumes.
  UpBlockImpl(const UNetBlockOptions& options, int64_t prev_out_channels, const std::vector<int64_t>& skip_channels,
              bool add_upsample);
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& temb, const torch::Tensor& context,
                        std::vector<torch::Tensor>& skips);

 private:
  torch::nn::ModuleList upsamplers{nullptr};
};
TORCH_MODULE(UpBlock);

}  // namespace cn::nn
