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

// resnets (+ attentions) then an optional stride-2 downsampler; every layer's
// output is a skip connection for the up path.
class DownBlockImpl : public torch::nn::Module {
 public:
  DownBlockImpl(const UNetBlockOptions& options, bool add_downsample);
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& temb, const torch::Tensor& context,
                        std::vector<torch::Tensor>& skips);

 private:
  torch::nn::ModuleList resnets{nullptr}, attentions{nullptr}, downsamplers{nullptr};
};
TORCH_MODULE(DownBlock);

// resnet, transformer, resnet.
class MidBlockImpl : public torch::nn::Module {
 public:
  explicit MidBlockImpl(const UNetBlockOptions& options);
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& temb, const torch::Tensor& context);

 private:
  torch::nn::ModuleList resnets{nullptr}, attentions{nullptr};
};
TORCH_MODULE(MidBlock);

// Each resnet consumes the last skip (concatenated on channels); then an
// optional nearest x2 upsampler to the size of the next skip.
class UpBlockImpl : public torch::nn::Module {
 public:
  // skip_channels[i]: channels of the skip the i-th resnet consumes.
  UpBlockImpl(const UNetBlockOptions& options, int64_t prev_out_channels, const std::vector<int64_t>& skip_channels,
              bool add_upsample);
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& temb, const torch::Tensor& context,
                        std::vector<torch::Tensor>& skips);

 private:
  torch::nn::ModuleList resnets{nullptr}, attentions{nullptr}, upsamplers{nullptr};
};
TORCH_MODULE(UpBlock);

}  // namespace cn::nn
