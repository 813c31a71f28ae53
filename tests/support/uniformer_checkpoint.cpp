#include "support/uniformer_checkpoint.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <cmath>
#include <cstring>

#include "support/torch_zip.h"

namespace cn::testing {

namespace {

void add_batch_norm(std::vector<TensorLayout>& out, const std::string& prefix, int64_t channels) {
  for (const char* name : {"weight", "bias", "running_mean", "running_var"}) out.push_back({prefix + name, {channels}});
  out.push_back({prefix + "num_batches_tracked", {}});
}

void add_layer_norm(std::vector<TensorLayout>& out, const std::string& prefix, int64_t channels) {
  out.push_back({prefix + "weight", {channels}});
  out.push_back({prefix + "bias", {channels}});
}

// mmcv's ConvModule with BN: conv.weight (no bias), bn.*.
void add_conv_module(std::vector<TensorLayout>& out, const std::string& prefix, int64_t in, int64_t out_channels,
                     int64_t kernel) {
  out.push_back({prefix + "conv.weight", {out_channels, in, kernel, kernel}});
  add_batch_norm(out, prefix + "bn.", out_channels);
}

// A convolution or linear layer with bias.
void add_layer(std::vector<TensorLayout>& out, const std::string& prefix, std::vector<int64_t> weight_shape) {
  const int64_t outputs = weight_shape[0];
  out.push_back({prefix + "weight", std::move(weight_shape)});
  out.push_back({prefix + "bias", {outputs}});
}

// Stand-in bytes of a Python str encoded as latin-1 (how protocol 2 pickles bytes).
std::string latin1_as_utf8(const std::string& bytes) {
  std::string out;
  for (unsigned char b : bytes) {
    if (b < 0x80) {
      out += char(b);
    } else {
      out += char(0xc0 | (b >> 6));
      out += char(0x80 | (b & 0x3f));
    }
  }
  return out;
}

// numpy.float64(value) as Python pickles it with protocol 2:
// scalar(dtype('f8', False, True) with its BUILD state, _codecs.encode(raw, 'latin1')).
std::string pickle_numpy_float64(double value) {
  std::string raw(8, '\0');
  std::memcpy(raw.data(), &value, 8);
  const std::string minus_one = std::string("J\xff\xff\xff\xff", 5);
  return "cnumpy.core.multiarray\nscalar\n" + std::string("cnumpy\ndtype\n") + pickle_string("f8") + "\x89\x88\x87R" +
         "(K\x03" + pickle_string("<") + "NNN" + minus_one + minus_one + std::string("K\x00tb", 4) + "c_codecs\nencode\n" +
         pickle_string(latin1_as_utf8(raw)) + pickle_string("latin1") + "\x86R" + "\x86R";
}

std::string pickle_dict(const std::vector<std::pair<std::string, std::string>>& items) {
  std::string out = "}(";
  for (const auto& [key, value] : items) out += pickle_string(key) + value;
  return out + "u";
}

std::string pickle_small_int_list(const std::vector<int>& values) {
  std::string out = "](";
  for (int v : values) out += "K" + std::string(1, char(v));
  return out + "e";
}

std::string mmseg_meta() {
  std::string classes = "(", palette = "](";
  for (int c = 0; c < 150; ++c) {
    classes += pickle_string("class" + std::to_string(c));
    palette += pickle_small_int_list({c, 255 - c, (c * 7) % 256});
  }
  classes += "t";
  palette += "e";
  const std::string config = "norm_cfg = dict(type='BN', requires_grad=True)\nmodel = dict(\n    type='EncoderDecoder',\n"
                             "    backbone=dict(type='UniFormer', embed_dim=[64, 128, 320, 512], layers=[3, 4, 8, 3]))\n";
  return pickle_dict({
      {"env_info", pickle_string("sys.platform: linux\nPython: 3.8\nPyTorch: 1.8.0")},
      {"config", pickle_string(config)},
      {"seed", pickle_int(0)},
      {"exp_name", pickle_string("config.py")},
      {"mmseg_version", pickle_string("0.11.0+0000000")},
      {"CLASSES", classes},
      {"PALETTE", palette},
      {"mmcv_version", pickle_string("1.3.0")},
      {"time", pickle_string("Thu Jan  1 00:00:00 2022")},
      {"epoch", pickle_int(1)},
      {"iter", pickle_int(160000)},
      {"hook_msgs", pickle_dict({{"last_ckpt", pickle_string("work_dirs/iter_160000.pth")},
                                 {"best_score", pickle_numpy_float64(0.4685)}})},
  });
}

}  // namespace

std::vector<TensorLayout> uniformer_checkpoint_layout() {
  const int64_t dims[] = {64, 128, 320, 512}, depths[] = {3, 4, 8, 3};
  std::vector<TensorLayout> out;
  int64_t in = 3;
  for (int s = 0; s < 4; ++s) {
    const int64_t d = dims[s], patch = s == 0 ? 4 : 2;
    const std::string stage = std::to_string(s + 1);
    add_layer_norm(out, "backbone.patch_embed" + stage + ".norm.", d);
    add_layer(out, "backbone.patch_embed" + stage + ".proj.", {d, in, patch, patch});
    for (int64_t b = 0; b < depths[s]; ++b) {
      const std::string block = "backbone.blocks" + stage + "." + std::to_string(b) + ".";
      add_layer(out, block + "pos_embed.", {d, 1, 3, 3});
      if (s < 2) {  // CBlock
        add_batch_norm(out, block + "norm1.", d);
        add_layer(out, block + "conv1.", {d, d, 1, 1});
        add_layer(out, block + "conv2.", {d, d, 1, 1});
        add_layer(out, block + "attn.", {d, 1, 5, 5});
        add_batch_norm(out, block + "norm2.", d);
        add_layer(out, block + "mlp.fc1.", {4 * d, d, 1, 1});
        add_layer(out, block + "mlp.fc2.", {d, 4 * d, 1, 1});
      } else {  // SABlock
        add_layer_norm(out, block + "norm1.", d);
        add_layer(out, block + "attn.qkv.", {3 * d, d});
        add_layer(out, block + "attn.proj.", {d, d});
        add_layer_norm(out, block + "norm2.", d);
        add_layer(out, block + "mlp.fc1.", {4 * d, d});
        add_layer(out, block + "mlp.fc2.", {d, 4 * d});
      }
    }
    add_layer_norm(out, "backbone.norm" + stage + ".", d);
    in = d;
  }
  for (int i = 0; i < 4; ++i)
    add_conv_module(out, "decode_head.psp_modules." + std::to_string(i) + ".1.", 512, 512, 1);
  add_conv_module(out, "decode_head.bottleneck.", 512 + 4 * 512, 512, 3);
  for (int i = 0; i < 3; ++i) {
    add_conv_module(out, "decode_head.lateral_convs." + std::to_string(i) + ".", dims[i], 512, 1);
    add_conv_module(out, "decode_head.fpn_convs." + std::to_string(i) + ".", 512, 512, 3);
  }
  add_conv_module(out, "decode_head.fpn_bottleneck.", 4 * 512, 512, 3);
  add_layer(out, "decode_head.conv_seg.", {150, 512, 1, 1});
  add_conv_module(out, "auxiliary_head.convs.0.", 320, 256, 3);
  add_layer(out, "auxiliary_head.conv_seg.", {150, 256, 1, 1});
  return out;
}

io::TensorMap uniformer_random_state_dict(uint64_t seed) {
  auto generator = at::detail::createCPUGenerator(seed);
  auto uniform = [&](c10::IntArrayRef shape, double low, double high) {
    return torch::rand(shape, generator, torch::kFloat32) * (high - low) + low;
  };
  auto ends_with = [](const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  io::TensorMap out;
  for (const auto& t : uniformer_checkpoint_layout()) {
    const bool norm = t.name.find(".bn.") != std::string::npos || t.name.find("norm") != std::string::npos;
    if (ends_with(t.name, "num_batches_tracked")) out[t.name] = torch::tensor(int64_t(160000));
    else if (ends_with(t.name, "running_var")) out[t.name] = uniform(t.shape, 0.5, 1.5);
    else if (ends_with(t.name, "running_mean")) out[t.name] = uniform(t.shape, -0.1, 0.1);
    else if (norm && ends_with(t.name, "weight")) out[t.name] = uniform(t.shape, 0.9, 1.1);
    else if (t.shape.size() == 1) out[t.name] = uniform(t.shape, -0.05, 0.05);
    else {
      int64_t fan_in = 1;
      for (size_t i = 1; i < t.shape.size(); ++i) fan_in *= t.shape[i];
      const double bound = 1.0 / std::sqrt(double(fan_in));
      out[t.name] = uniform(t.shape, -bound, bound);
    }
  }
  return out;
}

void write_mmcv_checkpoint(const std::filesystem::path& path, const io::TensorMap& state_dict) {
  std::vector<ZipEntry> storages;
  const auto weights = pickle_state_dict(state_dict, storages);
  // {'meta': meta, 'state_dict': weights}, keys in mmcv's order.
  write_torch_archive(path, "}(" + pickle_string("meta") + mmseg_meta() + pickle_string("state_dict") + weights + "u",
                      storages);
}

}  // namespace cn::testing
