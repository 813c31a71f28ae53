#include "nn/unet_blocks.h"

#include "nn/checkpoint.h"

namespace cn::nn {
namespace {

ResnetBlock2D make_resnet(const UNetBlockOptions& o, int64_t in_channels) {
  ResnetBlock2DOptions r;
  r.in_channels = in_channels;
  r.out_channels = o.out_channels;
  r.temb_channels = o.temb_channels;
  r.groups = o.groups;
  r.eps = o.eps;
  return ResnetBlock2D(r);
}

Transformer2D make_transformer(const UNetBlockOptions& o) {
  auto t = o.transformer;
  t.channels = o.out_channels;
  t.groups = o.groups;
  return Transformer2D(t);
}

// layer->forward(x, y), or that call checkpointed.
template <typename Layer>
torch::Tensor run_layer(const std::shared_ptr<Layer>& layer, const torch::Tensor& x, const torch::Tensor& y,
                        bool checkpointed) {
  if (!checkpointed) return layer->forward(x, y);
  const Segment segment = [layer](const std::vector<torch::Tensor>& in) {
    return std::vector<torch::Tensor>{layer->forward(in[0], in[1])};
  };
  return checkpoint(segment, {x, y}, layer->parameters()).at(0);
}

}  // namespace

torch::Tensor LayerBlockImpl::resnet(size_t i, const torch::Tensor& x, const torch::Tensor& temb) {
  return run_layer(resnets->ptr<ResnetBlock2DImpl>(i), x, temb, gradient_checkpointing);
}

torch::Tensor LayerBlockImpl::attention(size_t i, const torch::Tensor& x, const torch::Tensor& context) {
  return run_layer(attentions->ptr<Transformer2DImpl>(i), x, context, gradient_checkpointing);
}

void set_gradient_checkpointing(torch::nn::Module& model, bool enabled) {
  for (const auto& module : model.modules())
    if (auto block = std::dynamic_pointer_cast<LayerBlockImpl>(module)) block->gradient_checkpointing = enabled;
}

DownBlockImpl::DownBlockImpl(const UNetBlockOptions& o, bool add_downsample) {
  resnets = register_module("resnets", torch::nn::ModuleList());
  if (o.cross_attention) attentions = register_module("attentions", torch::nn::ModuleList());
  for (int64_t i = 0; i < o.layers; ++i) {
    resnets->push_back(make_resnet(o, i == 0 ? o.in_channels : o.out_channels));
    if (o.cross_attention) attentions->push_back(make_transformer(o));
  }
  if (add_downsample)
    downsamplers = register_module("downsamplers", torch::nn::ModuleList(Downsample2D(o.out_channels, false)));
}

torch::Tensor DownBlockImpl::forward(torch::Tensor x, const torch::Tensor& temb, const torch::Tensor& context,
                                     std::vector<torch::Tensor>& skips) {
  for (size_t i = 0; i < resnets->size(); ++i) {
    x = resnet(i, x, temb);
    if (!attentions.is_empty()) x = attention(i, x, context);
    skips.push_back(x);
  }
  if (!downsamplers.is_empty()) {
    x = downsamplers[0]->as<Downsample2D>()->forward(x);
    skips.push_back(x);
  }
  return x;
}

MidBlockImpl::MidBlockImpl(const UNetBlockOptions& o) {
  resnets = register_module("resnets", torch::nn::ModuleList(make_resnet(o, o.in_channels)));
  attentions = register_module("attentions", torch::nn::ModuleList());
  for (int64_t i = 0; i < o.layers; ++i) {
    attentions->push_back(make_transformer(o));
    resnets->push_back(make_resnet(o, o.out_channels));
  }
}

torch::Tensor MidBlockImpl::forward(torch::Tensor x, const torch::Tensor& temb, const torch::Tensor& context) {
  x = resnet(0, x, temb);
  for (size_t i = 0; i < attentions->size(); ++i) {
    x = attention(i, x, context);
    x = resnet(i + 1, x, temb);
  }
  return x;
}

UpBlockImpl::UpBlockImpl(const UNetBlockOptions& o, int64_t prev_out_channels,
                         const std::vector<int64_t>& skip_channels, bool add_upsample) {
  resnets = register_module("resnets", torch::nn::ModuleList());
  if (o.cross_attention) attentions = register_module("attentions", torch::nn::ModuleList());
  for (int64_t i = 0; i < o.layers; ++i) {
    const int64_t in = (i == 0 ? prev_out_channels : o.out_channels) + skip_channels.at(i);
    resnets->push_back(make_resnet(o, in));
    if (o.cross_attention) attentions->push_back(make_transformer(o));
  }
  if (add_upsample) upsamplers = register_module("upsamplers", torch::nn::ModuleList(Upsample2D(o.out_channels)));
}

torch::Tensor UpBlockImpl::forward(torch::Tensor x, const torch::Tensor& temb, const torch::Tensor& context,
                                   std::vector<torch::Tensor>& skips) {
  for (size_t i = 0; i < resnets->size(); ++i) {
    x = torch::cat({x, skips.back()}, 1);
    skips.pop_back();
    x = resnet(i, x, temb);
    if (!attentions.is_empty()) x = attention(i, x, context);
  }
  if (!upsamplers.is_empty()) {
    // Upsample to the next skip's size, so inputs whose sides are not a
    // multiple of the total down-sampling factor still line up.
    std::vector<int64_t> size;
    if (!skips.empty()) size = {skips.back().size(2), skips.back().size(3)};
    x = upsamplers[0]->as<Upsample2D>()->forward(x, size.empty() ? c10::nullopt : c10::optional<at::IntArrayRef>(size));
  }
  return x;
}

}  // namespace cn::nn
