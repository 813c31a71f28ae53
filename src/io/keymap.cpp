#include "io/keymap.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>

#include "controlnet/error.h"
#include "io/pickle.h"

namespace cn::io {
namespace {

// Renames inside one LDM module, per kind of block.
const std::vector<Rename> kUnetResnet = {{"in_layers.0", "norm1"},  {"in_layers.2", "conv1"},
                                         {"emb_layers.1", "time_emb_proj"}, {"out_layers.0", "norm2"},
                                         {"out_layers.3", "conv2"}, {"skip_connection", "conv_shortcut"}};
const std::vector<Rename> kVaeResnet = {{"nin_shortcut", "conv_shortcut"}};
const std::vector<Rename> kVaeAttention = {{"norm", "group_norm"},
                                           {"q", "to_q", true},
                                           {"k", "to_k", true},
                                           {"v", "to_v", true},
                                           {"proj_out", "to_out.0", true}};
const std::vector<Rename> kNone = {};

std::string str(int64_t i) { return std::to_string(i); }

bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

// The part of `name` after `prefix` + ".", or nullopt.
std::optional<std::string> after(const std::string& name, const std::string& prefix) {
  if (name.size() > prefix.size() && starts_with(name, prefix) && name[prefix.size()] == '.')
    return name.substr(prefix.size() + 1);
  return std::nullopt;
}

// Prefix pairs of the trunk shared by UNet and ControlNet: time embedding,
// conv_in, input blocks (resnet, attention, downsampler) and middle block.
void add_trunk_pairs(const nlohmann::json& c, std::vector<PrefixPair>& out) {
  const auto channels = c.at("block_out_channels").get<std::vector<int64_t>>();
  const auto down_types = c.at("down_block_types").get<std::vector<std::string>>();
  const int64_t levels = channels.size(), layers = c.value("layers_per_block", 2);
  out.push_back({"time_embed.0", "time_embedding.linear_1"});
  out.push_back({"time_embed.2", "time_embedding.linear_2"});
  out.push_back({"input_blocks.0.0", "conv_in"});
  for (int64_t i = 0; i < levels; ++i) {
    for (int64_t j = 0; j < layers; ++j) {
      const auto block = "input_blocks." + str((layers + 1) * i + j + 1);
      const auto target = "down_blocks." + str(i);
      out.push_back({block + ".0", target + ".resnets." + str(j), &kUnetResnet});
      if (down_types[i] == "CrossAttnDownBlock2D") out.push_back({block + ".1", target + ".attentions." + str(j)});
    }
    if (i + 1 < levels)
      out.push_back({"input_blocks." + str((layers + 1) * (i + 1)) + ".0.op", "down_blocks." + str(i) + ".downsamplers.0.conv"});
  }
  out.push_back({"middle_block.0", "mid_block.resnets.0", &kUnetResnet});
  out.push_back({"middle_block.1", "mid_block.attentions.0"});
  out.push_back({"middle_block.2", "mid_block.resnets.1", &kUnetResnet});
}

// Count of distinct integer indices after `prefix` among the names.
int64_t count_indices(const TensorMap& t, const std::string& prefix) {
  std::set<int64_t> seen;
  for (const auto& [name, _] : t) {
    if (auto rest = after(name, prefix)) {
      const auto dot = rest->find('.');
      try {
        seen.insert(std::stoll(rest->substr(0, dot)));
      } catch (...) {
      }
    }
  }
  return seen.empty() ? 0 : *seen.rbegin() + 1;
}

const torch::Tensor& need(const TensorMap& t, const std::string& name, const std::string& source) {
  auto it = t.find(name);
  if (it == t.end()) throw Error(source + ": missing tensor " + name);
  return it->second;
}

// Tensors under `prefix.` with the prefix removed.
TensorMap take_prefix(const TensorMap& all, const std::string& prefix) {
  TensorMap out;
  for (const auto& [name, t] : all)
    if (auto rest = after(name, prefix)) out.emplace(*rest, t);
  return out;
}

// The UNet/ControlNet trunk architecture from LDM tensor shapes and names.
nlohmann::json infer_trunk(const TensorMap& t, const std::string& source, std::vector<std::string>& facts) {
  const auto& conv_in = need(t, "input_blocks.0.0.weight", source);
  const int64_t model_channels = conv_in.size(0);
  int64_t layers = 0;
  while (!t.count("input_blocks." + str(layers + 1) + ".0.op.weight")) {
    if (++layers > 16) throw Error(source + ": cannot find the first downsampler (input_blocks.N.0.op)");
  }
  const int64_t blocks = count_indices(t, "input_blocks");
  if (layers == 0 || blocks % (layers + 1) != 0) throw Error(source + ": unrecognised input_blocks layout");
  const int64_t levels = blocks / (layers + 1);
  std::vector<int64_t> channels;
  std::vector<std::string> down_types;
  int64_t context_dim = 0, depth = 1;
  bool linear_proj = false;
  for (int64_t i = 0; i < levels; ++i) {
    const auto first = "input_blocks." + str((layers + 1) * i + 1);
    channels.push_back(need(t, first + ".0.out_layers.3.weight", source).size(0));
    const bool attention = t.count(first + ".1.proj_in.weight") > 0;
    down_types.push_back(attention ? "CrossAttnDownBlock2D" : "DownBlock2D");
    if (attention) {
      context_dim = need(t, first + ".1.transformer_blocks.0.attn2.to_k.weight", source).size(1);
      linear_proj = t.at(first + ".1.proj_in.weight").dim() == 2;
      depth = count_indices(t, first + ".1.transformer_blocks");
    }
  }
  if (context_dim == 0) throw Error(source + ": no cross-attention found in input_blocks; not a Stable Diffusion UNet");
  // LDM files do not store head counts. SD1 uses 8 heads; SD2 uses 64 channels
  // per head (the tiny test models: model_channels / 2).
  const bool sd2 = linear_proj;
  std::vector<int64_t> heads;
  const int64_t head_channels = std::min<int64_t>(64, model_channels / 2);
  for (int64_t c : channels) heads.push_back(sd2 ? std::max<int64_t>(1, c / head_channels) : 8);
  std::vector<std::string> up_types(down_types.rbegin(), down_types.rend());
  for (auto& u : up_types) u = u == "CrossAttnDownBlock2D" ? "CrossAttnUpBlock2D" : "UpBlock2D";
  nlohmann::json config = {{"in_channels", conv_in.size(1)},
                           {"block_out_channels", channels},
                           {"down_block_types", down_types},
                           {"up_block_types", up_types},
                           {"layers_per_block", layers},
                           {"attention_head_dim", heads},
                           {"transformer_layers_per_block", depth},
                           {"cross_attention_dim", context_dim},
                           {"use_linear_projection", linear_proj},
                           {"upcast_attention", sd2}};
  std::string ch;
  for (auto c : channels) ch += (ch.empty() ? "" : ", ") + str(c);
  facts.push_back("UNet: " + str(levels) + " levels, channels (" + ch + "), " + str(layers) + " layers per block, context " +
                  str(context_dim) + ", " + (linear_proj ? "linear" : "conv") + " projection");
  facts.push_back(std::string("attention heads: ") +
                  (sd2 ? str(head_channels) + " channels per head (SD2 rule)" : "8 per block (SD1 rule)"));
  return config;
}

nlohmann::json infer_vae(const TensorMap& t, const std::string& source) {
  const int64_t levels = count_indices(t, "encoder.down");
  if (levels == 0) throw Error(source + ": no VAE encoder (encoder.down.N) found");
  std::vector<int64_t> channels;
  for (int64_t i = 0; i < levels; ++i)
    channels.push_back(need(t, "encoder.down." + str(i) + ".block.0.conv2.weight", source).size(0));
  return {{"in_channels", need(t, "encoder.conv_in.weight", source).size(1)},
          {"out_channels", need(t, "decoder.conv_out.weight", source).size(0)},
          {"latent_channels", need(t, "decoder.conv_in.weight", source).size(1)},
          {"block_out_channels", channels},
          {"layers_per_block", count_indices(t, "encoder.down.0.block")},
          {"scaling_factor", 0.18215}};
}

// OpenCLIP (SD2) <-> Hugging Face CLIP names. The attention's in_proj packs
// q, k and v, so it is split and joined by hand.
const std::vector<Rename> kOpenClipRenames = {{"token_embedding.weight", "text_model.embeddings.token_embedding.weight"},
                                              {"positional_embedding", "text_model.embeddings.position_embedding.weight"},
                                              {"ln_final", "text_model.final_layer_norm"}};
const std::vector<Rename> kOpenClipLayerRenames = {{"ln_1", "layer_norm1"},
                                                   {"ln_2", "layer_norm2"},
                                                   {"mlp.c_fc", "mlp.fc1"},
                                                   {"mlp.c_proj", "mlp.fc2"},
                                                   {"attn.out_proj", "self_attn.out_proj"}};
const char* const kQkv[] = {"q_proj", "k_proj", "v_proj"};

// CLIP text tower: SD1 keeps Hugging Face names under
// cond_stage_model.transformer; SD2 has OpenCLIP names. SD2 conditions on the
// penultimate OpenCLIP block (then ln_final), so its last block is never used:
// it is dropped here as diffusers does, and every SD model is then "all
// layers, then the final norm".
Component text_encoder_from_ldm(const TensorMap& all, const std::string& source, bool& sd2,
                                std::vector<std::string>& facts) {
  Component c;
  c.source = source + " (text encoder)";
  auto hf = take_prefix(all, "cond_stage_model.transformer");
  auto open = take_prefix(all, "cond_stage_model.model");
  sd2 = hf.empty();
  if (!sd2) {
    for (auto& [name, t] : hf)
      if (name != "text_model.embeddings.position_ids") c.weights.emplace(name, t);
  } else {
    if (open.empty()) throw Error(source + ": no text encoder (cond_stage_model.*) found");
    const int64_t unused_block = count_indices(open, "transformer.resblocks") - 1;
    for (const auto& [name, t] : open) {
      bool used = false;
      for (const auto& r : kOpenClipRenames) {
        if (name == r.ldm || after(name, r.ldm)) {
          c.weights.emplace(r.diffusers + name.substr(r.ldm.size()), t);
          used = true;
        }
      }
      if (auto rest = after(name, "transformer.resblocks")) {
        const auto dot = rest->find('.');
        const auto block = rest->substr(0, dot);
        const auto target = "text_model.encoder.layers." + block + ".";
        const auto inner = rest->substr(dot + 1);
        if (block == str(unused_block)) {
          used = true;
        } else if (inner == "attn.in_proj_weight" || inner == "attn.in_proj_bias") {
          const auto parts = t.chunk(3, 0);
          const auto kind = inner == "attn.in_proj_weight" ? ".weight" : ".bias";
          for (int k = 0; k < 3; ++k) c.weights.emplace(target + "self_attn." + kQkv[k] + kind, parts[k].contiguous());
          used = true;
        } else {
          for (const auto& r : kOpenClipLayerRenames)
            if (auto tail = after(inner, r.ldm)) {
              c.weights.emplace(target + r.diffusers + "." + *tail, t);
              used = true;
            }
        }
      }
      // text_projection and logit_scale belong to CLIP's image-text head, unused by SD.
      if (!used && name != "text_projection" && name != "logit_scale")
        throw Error(source + ": unexpected text encoder tensor cond_stage_model.model." + name);
    }
  }
  const auto& tokens = need(c.weights, "text_model.embeddings.token_embedding.weight", source);
  const int64_t width = tokens.size(1);
  const int64_t layers = count_indices(c.weights, "text_model.encoder.layers");
  // Heads are not stored: CLIP and OpenCLIP use 64 channels per head; the tiny
  // test towers use a quarter of their width.
  const int64_t heads = width / std::min<int64_t>(64, width / 4);
  c.config = {{"architectures", {"CLIPTextModel"}},
              {"vocab_size", tokens.size(0)},
              {"hidden_size", width},
              {"intermediate_size", need(c.weights, "text_model.encoder.layers.0.mlp.fc1.weight", source).size(0)},
              {"num_hidden_layers", layers},
              {"num_attention_heads", heads},
              {"max_position_embeddings",
               need(c.weights, "text_model.embeddings.position_embedding.weight", source).size(0)},
              {"hidden_act", sd2 ? "gelu" : "quick_gelu"},
              {"layer_norm_eps", 1e-5}};
  facts.push_back("text encoder: " + std::string(sd2 ? "OpenCLIP" : "CLIP") + " width " + str(width) + ", " +
                  str(layers) + " layers, " + str(heads) + " heads" + (sd2 ? " (OpenCLIP's unused last block dropped)" : ""));
  return c;
}

}  // namespace

TensorMap text_encoder_to_ldm(const Component& text, bool openclip) {
  TensorMap out;
  if (!openclip) {
    for (const auto& [name, t] : text.weights) out.emplace("cond_stage_model.transformer." + name, t);
    return out;
  }
  const std::string prefix = "cond_stage_model.model.";
  const int64_t layers = count_indices(text.weights, "text_model.encoder.layers");
  for (const auto& [name, t] : text.weights) {
    bool used = false;
    for (const auto& r : kOpenClipRenames)
      if (name == r.diffusers || after(name, r.diffusers)) {
        out.emplace(prefix + r.ldm + name.substr(r.diffusers.size()), t);
        used = true;
      }
    if (auto rest = after(name, "text_model.encoder.layers")) {
      const auto dot = rest->find('.');
      const auto block = prefix + "transformer.resblocks." + rest->substr(0, dot) + ".";
      const auto inner = rest->substr(dot + 1);
      for (const std::string kind : {"weight", "bias"})
        if (inner == std::string("self_attn.q_proj.") + kind) {  // k and v are joined with q
          const auto layer = "text_model.encoder.layers." + rest->substr(0, dot) + ".self_attn.";
          std::vector<torch::Tensor> parts;
          for (const char* p : kQkv) parts.push_back(need(text.weights, layer + p + "." + kind, text.source));
          out.emplace(block + "attn.in_proj_" + kind, torch::cat(parts));
        }
      if (inner.rfind("self_attn.q_proj.", 0) == 0 || inner.rfind("self_attn.k_proj.", 0) == 0 ||
          inner.rfind("self_attn.v_proj.", 0) == 0)
        used = true;
      for (const auto& r : kOpenClipLayerRenames)
        if (auto tail = after(inner, r.diffusers)) {
          out.emplace(block + r.ldm + "." + *tail, t);
          used = true;
        }
    }
    if (!used && name != "text_model.embeddings.position_ids")
      throw Error(text.source + ": text encoder tensor " + name + " has no OpenCLIP name");
  }
  // The last block SD2 skips and CLIP's image-text head: loaders of the
  // original layout expect them, nothing that conditions SD reads them.
  // Written as zeros, so the file is honest about holding no values there.
  const auto last = prefix + "transformer.resblocks." + str(layers - 1) + ".";
  const auto placeholder = prefix + "transformer.resblocks." + str(layers) + ".";
  TensorMap unused;
  for (const auto& [name, t] : out)
    if (auto tail = after(name, last.substr(0, last.size() - 1))) unused.emplace(placeholder + *tail, torch::zeros_like(t));
  const auto& tokens = need(text.weights, "text_model.embeddings.token_embedding.weight", text.source);
  unused.emplace(prefix + "text_projection", torch::zeros({tokens.size(1), tokens.size(1)}, tokens.options()));
  unused.emplace(prefix + "logit_scale", torch::zeros({}, tokens.options()));
  out.insert(unused.begin(), unused.end());
  return out;
}

namespace {

// LDM stores EMA weights as model_ema.<name without dots>.
TensorMap ema_unet(const TensorMap& all, const std::string& source) {
  TensorMap out;
  for (const auto& [name, t] : all) {
    auto rest = after(name, "model.diffusion_model");
    if (!rest) continue;
    std::string flat = "diffusion_model" + *rest;
    flat.erase(std::remove(flat.begin(), flat.end(), '.'), flat.end());
    out.emplace(*rest, need(all, "model_ema." + flat, source));
  }
  return out;
}

}  // namespace

TensorMap NameMap::convert(const TensorMap& in, bool to_diffusers, const std::string& source) const {
  TensorMap out;
  for (const auto& [name, tensor] : in) {
    const PrefixPair* best = nullptr;
    std::string rest;
    for (const auto& p : pairs_) {
      const auto& from = to_diffusers ? p.ldm : p.diffusers;
      if (auto r = after(name, from); r && (!best || from.size() > (to_diffusers ? best->ldm : best->diffusers).size())) {
        best = &p;
        rest = *r;
      }
    }
    if (!best) throw Error(source + ": tensor " + name + " has no counterpart in the " +
                           (to_diffusers ? "diffusers" : "LDM") + " layout");
    auto t = tensor;
    if (best->inner) {
      for (const auto& r : *best->inner) {
        const auto& from = to_diffusers ? r.ldm : r.diffusers;
        const auto& to = to_diffusers ? r.diffusers : r.ldm;
        if (auto tail = after(rest, from)) {
          rest = to + "." + *tail;
          if (r.conv_as_linear && *tail == "weight") t = to_diffusers ? t.flatten(1) : t.view({t.size(0), t.size(1), 1, 1});
          break;
        }
      }
    }
    out.emplace((to_diffusers ? best->diffusers : best->ldm) + "." + rest, t);
  }
  return out;
}

TensorMap NameMap::to_diffusers(const TensorMap& ldm, const std::string& source) const {
  return convert(ldm, true, source);
}
TensorMap NameMap::to_ldm(const TensorMap& diffusers, const std::string& source) const {
  return convert(diffusers, false, source);
}

NameMap unet_name_map(const nlohmann::json& c) {
  std::vector<PrefixPair> pairs;
  add_trunk_pairs(c, pairs);
  const auto channels = c.at("block_out_channels").get<std::vector<int64_t>>();
  const auto up_types = c.at("up_block_types").get<std::vector<std::string>>();
  const int64_t levels = channels.size(), layers = c.value("layers_per_block", 2) + 1;
  for (int64_t i = 0; i < levels; ++i) {
    const bool attention = up_types[i] == "CrossAttnUpBlock2D";
    for (int64_t j = 0; j < layers; ++j) {
      const auto block = "output_blocks." + str(layers * i + j);
      const auto target = "up_blocks." + str(i);
      pairs.push_back({block + ".0", target + ".resnets." + str(j), &kUnetResnet});
      if (attention) pairs.push_back({block + ".1", target + ".attentions." + str(j)});
    }
    if (i + 1 < levels)
      pairs.push_back({"output_blocks." + str(layers * i + layers - 1) + "." + (attention ? "2" : "1") + ".conv",
                       "up_blocks." + str(i) + ".upsamplers.0.conv"});
  }
  pairs.push_back({"out.0", "conv_norm_out"});
  pairs.push_back({"out.2", "conv_out"});
  return NameMap(pairs);
}

NameMap controlnet_name_map(const nlohmann::json& c) {
  std::vector<PrefixPair> pairs;
  add_trunk_pairs(c, pairs);
  const auto hint = c.value("conditioning_embedding_out_channels", std::vector<int64_t>{16, 32, 96, 256});
  const int64_t hint_blocks = 2 * (int64_t(hint.size()) - 1);
  pairs.push_back({"input_hint_block.0", "controlnet_cond_embedding.conv_in"});
  for (int64_t b = 0; b < hint_blocks; ++b)
    pairs.push_back({"input_hint_block." + str(2 + 2 * b), "controlnet_cond_embedding.blocks." + str(b)});
  pairs.push_back({"input_hint_block." + str(2 + 2 * hint_blocks), "controlnet_cond_embedding.conv_out"});
  const auto channels = c.at("block_out_channels").get<std::vector<int64_t>>();
  const int64_t layers = c.value("layers_per_block", 2);
  const int64_t zero_convs = 1 + int64_t(channels.size()) * layers + int64_t(channels.size()) - 1;
  for (int64_t i = 0; i < zero_convs; ++i) pairs.push_back({"zero_convs." + str(i) + ".0", "controlnet_down_blocks." + str(i)});
  pairs.push_back({"middle_block_out.0", "controlnet_mid_block"});
  return NameMap(pairs);
}

NameMap vae_name_map(const nlohmann::json& c) {
  std::vector<PrefixPair> pairs;
  const int64_t levels = c.at("block_out_channels").size(), layers = c.value("layers_per_block", 2);
  for (const std::string part : {"encoder", "decoder"}) {
    const bool dec = part == "decoder";
    pairs.push_back({part + ".conv_in", part + ".conv_in"});
    pairs.push_back({part + ".norm_out", part + ".conv_norm_out"});
    pairs.push_back({part + ".conv_out", part + ".conv_out"});
    pairs.push_back({part + ".mid.block_1", part + ".mid_block.resnets.0", &kVaeResnet});
    pairs.push_back({part + ".mid.attn_1", part + ".mid_block.attentions.0", &kVaeAttention});
    pairs.push_back({part + ".mid.block_2", part + ".mid_block.resnets.1", &kVaeResnet});
    for (int64_t i = 0; i < levels; ++i) {
      // The decoder's LDM levels run from the bottom up: up.(n-1-i) is up_blocks.i.
      const auto ldm = part + (dec ? ".up." + str(levels - 1 - i) : ".down." + str(i));
      const auto dif = part + (dec ? ".up_blocks." : ".down_blocks.") + str(i);
      for (int64_t j = 0; j < layers + (dec ? 1 : 0); ++j)
        pairs.push_back({ldm + ".block." + str(j), dif + ".resnets." + str(j), &kVaeResnet});
      if (i + 1 < levels)
        pairs.push_back({ldm + (dec ? ".upsample.conv" : ".downsample.conv"),
                         dif + (dec ? ".upsamplers.0.conv" : ".downsamplers.0.conv")});
    }
  }
  pairs.push_back({"quant_conv", "quant_conv"});
  pairs.push_back({"post_quant_conv", "post_quant_conv"});
  return NameMap(pairs);
}

TensorMap read_tensor_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot open " + path);
  char magic[4] = {};
  in.read(magic, 4);
  const bool zip = magic[0] == 'P' && magic[1] == 'K';
  const bool legacy_pickle = static_cast<unsigned char>(magic[0]) == 0x80;
  if (zip || legacy_pickle) return load_torch_checkpoint(path);
  return load_safetensors(path);
}

nlohmann::json default_scheduler_config(const std::string& prediction_type) {
  return {{"beta_schedule", "scaled_linear"}, {"beta_start", 0.00085},       {"beta_end", 0.012},
          {"num_train_timesteps", 1000},      {"steps_offset", 1},           {"set_alpha_to_one", false},
          {"skip_prk_steps", true},           {"prediction_type", prediction_type}};
}

SdModel load_ldm_checkpoint(const std::string& path, bool use_ema) {
  const auto all = read_tensor_file(path);
  SdModel m;
  m.layout = "ldm";
  auto unet_ldm = take_prefix(all, "model.diffusion_model");
  if (unet_ldm.empty()) {
    if (!take_prefix(all, "control_model").empty())
      throw Error(path + " is a ControlNet (control_model.*), not a Stable Diffusion model: pass it with --controlnet");
    throw Error(path + ": no model.diffusion_model.* tensors; not an LDM Stable Diffusion checkpoint");
  }
  m.has_ema = std::any_of(all.begin(), all.end(), [](const auto& kv) { return starts_with(kv.first, "model_ema."); });
  if (use_ema) {
    if (!m.has_ema) throw Error(path + ": --ema asked but the checkpoint has no EMA weights (model_ema.*)");
    unet_ldm = ema_unet(all, path);
    m.inferred.push_back("using the EMA UNet weights");
  }
  m.unet.config = infer_trunk(unet_ldm, path, m.inferred);
  m.unet.config["out_channels"] = need(unet_ldm, "out.2.weight", path).size(0);
  m.unet.weights = unet_name_map(m.unet.config).to_diffusers(unet_ldm, path);
  m.unet.source = path + " (UNet)";

  auto vae_ldm = take_prefix(all, "first_stage_model");
  m.vae.config = infer_vae(vae_ldm, path);
  m.vae.weights = vae_name_map(m.vae.config).to_diffusers(vae_ldm, path);
  m.vae.source = path + " (VAE)";

  bool sd2 = false;
  m.text_encoder = text_encoder_from_ldm(all, path, sd2, m.inferred);
  m.family = sd2 ? "SD2.x" : "SD1.x";
  m.text_pad_id = sd2 ? 0 : 49407;
  // SD2 768-v models predict v; the file does not say so (use --prediction to override).
  m.scheduler_config = default_scheduler_config("epsilon");
  m.inferred.insert(m.inferred.begin(), "family: " + m.family + (m.has_ema ? " (has EMA weights)" : ""));
  return m;
}

Component load_ldm_vae(const std::string& path) {
  auto all = read_tensor_file(path);
  auto vae = take_prefix(all, "first_stage_model");
  if (vae.empty()) vae = all;
  Component c;
  c.config = infer_vae(vae, path);
  // Standalone VAE files (e.g. vae-ft-mse) may carry training-only loss weights.
  TensorMap model_only;
  for (auto& [name, t] : vae)
    if (!starts_with(name, "loss.")) model_only.emplace(name, t);
  c.weights = vae_name_map(c.config).to_diffusers(model_only, path);
  c.source = path;
  return c;
}

Component load_ldm_controlnet(const std::string& path) {
  const auto all = read_tensor_file(path);
  auto control = take_prefix(all, "control_model");
  Component c;
  c.source = path;
  if (control.empty()) {
    // A single file in diffusers names (e.g. diffusion_pytorch_model.safetensors
    // of a ControlNet) with its config.json beside it.
    const auto config = std::filesystem::path(path).parent_path() / "config.json";
    if (all.count("controlnet_mid_block.weight") && std::filesystem::exists(config)) {
      c.config = read_json(config.string());
      c.weights = all;
      return c;
    }
    throw Error(path + ": no control_model.* tensors; not a ControlNet checkpoint");
  }
  std::vector<std::string> facts;
  c.config = infer_trunk(control, path, facts);
  c.config["_class_name"] = "ControlNetModel";
  c.config.erase("up_block_types");
  const int64_t hint_convs = count_indices(control, "input_hint_block");
  std::vector<int64_t> hint{need(control, "input_hint_block.0.weight", path).size(0)};
  for (int64_t i = 4; i + 2 < hint_convs; i += 4) hint.push_back(need(control, "input_hint_block." + str(i) + ".weight", path).size(0));
  c.config["conditioning_embedding_out_channels"] = hint;
  c.config["conditioning_channels"] = need(control, "input_hint_block.0.weight", path).size(1);
  c.weights = controlnet_name_map(c.config).to_diffusers(control, path);
  return c;
}

}  // namespace cn::io
