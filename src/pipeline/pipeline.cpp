// cn::Pipeline: loading (any layout, any dtype), prompt encoding, control
// images, the sampling loop and decoding, composed from the lower areas.
#include "controlnet/pipeline.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <random>
#include <sstream>

#include "io/checkpoint.h"
#include "io/image.h"
#include "pipeline/denoise.h"
#include "pipeline/default_model.h"
#include "pipeline/prompt.h"
#include "preprocess/inpaint.h"
#include "preprocess/preprocess.h"
#include "sampling/samplers.h"
#include "models/vae.h"
#include "nn/weights.h"
#include "util/dtype.h"

namespace cn {

ControlMode parse_control_mode(const std::string& name) {
  if (name == "balanced") return ControlMode::balanced;
  if (name == "prompt" || name == "prompt-more-important") return ControlMode::prompt_more_important;
  if (name == "controlnet" || name == "controlnet-more-important") return ControlMode::controlnet_more_important;
  throw Error("unknown control mode '" + name + "' (valid: balanced, prompt, controlnet)");
}

std::string to_string(ControlMode mode) {
  switch (mode) {
    case ControlMode::balanced: return "Balanced";
    case ControlMode::prompt_more_important: return "My prompt is more important";
    case ControlMode::controlnet_more_important: return "ControlNet is more important";
  }
  return "";
}

namespace {

// Builds a model of type M from a component (config json + diffusers-named weights).
template <typename Model, typename Config>
Model build(const io::Component& component, torch::ScalarType dtype, const torch::Device& device) {
  // Born in the compute dtype and moved to the device first, so each file
  // tensor is converted once straight into its slot (fp16 -> bf16 without an
  // fp32 copy of the whole model).
  const auto config = Config::from_json(component.config);
  auto model = construct_in(dtype, [&] { return Model(config); });
  model->to(device, dtype);
  nn::set_memory_format(*model, torch::MemoryFormat::ChannelsLast);
  nn::load_weights(*model, component.weights, component.source);
  model->eval();
  return model;
}

std::string format_number(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

// The sampling settings a model folder recommends (generation.json), over the
// library's defaults. A file with other keys is rejected rather than half read.
GenerateOptions recommended_settings(const std::string& model) {
  GenerateOptions o;
  const auto path = std::filesystem::path(model) / "generation.json";
  if (!std::filesystem::is_regular_file(path)) return o;
  const auto j = io::read_json(path.string());
  if (!j.is_object()) throw Error(path.string() + ": expected a JSON object");
  for (const auto& [key, value] : j.items()) {
    try {
      if (key == "steps")
        o.steps = value.get<int>();
      else if (key == "cfg")
        o.cfg = value.get<double>();
      else if (key == "sampler")
        o.sampler = value.get<std::string>();
      else if (key == "schedule")
        o.schedule = value.get<std::string>();
      else
        throw Error(path.string() + ": unknown key '" + key + "' (known: steps, cfg, sampler, schedule)");
    } catch (const nlohmann::json::exception&) {
      throw Error(path.string() + ": '" + key + "' has the wrong type (" + value.dump() + ")");
    }
  }
  return o;
}

}  // namespace

struct Pipeline::Impl {
  ModelOptions options;
  torch::Device device{torch::kCPU};
  torch::ScalarType dtype = torch::kFloat32;
  io::SdModel source;  // configs and facts (weights released after building)
  models::UNet2DConditionModel unet{nullptr};
  models::AutoencoderKL vae{nullptr};
  std::unique_ptr<pipeline::PromptEncoder> prompt_encoder;
  nlohmann::json scheduler_config;
  GenerateOptions recommended;
  std::map<std::string, models::ControlNetModel> controlnets;  // loaded on first use, by path

  models::ControlNetModel controlnet(const std::string& path) {
    auto it = controlnets.find(path);
    if (it != controlnets.end()) return it->second;
    auto component = io::load_controlnet(path);
    check_compatible(component, path);
    auto net = build<models::ControlNetModel, models::ControlNetConfig>(component, dtype, device);
    controlnets.emplace(path, net);
    return net;
  }

  // A ControlNet must match the UNet it steers: same context width and channels.
  void check_compatible(const io::Component& control, const std::string& path) const {
    const auto& u = source.unet.config;
    const auto& c = control.config;
    auto mismatch = [&](const char* key, const char* meaning) {
      if (c.contains(key) && u.contains(key) && c[key] != u[key])
        throw Error(path + ": ControlNet does not fit the model: " + meaning + " " + c[key].dump() + " vs the model's " +
                    u[key].dump() + " (" + source.family + " model; is this a ControlNet for another SD version?)");
    };
    mismatch("cross_attention_dim", "text context width");
    mismatch("block_out_channels", "channels");
    mismatch("in_channels", "latent channels");
  }

  std::string parameters_text(const GenerateOptions& o, int64_t seed) const;
};

Pipeline::Pipeline(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Pipeline::~Pipeline() = default;

std::unique_ptr<Pipeline> Pipeline::load(const ModelOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  if (impl->options.model.empty()) impl->options.model = default_model_dir();
  impl->device = torch::Device(options.device);
  impl->dtype = parse_dtype(options.dtype);
  if (options.threads > 0) torch::set_num_threads(options.threads);
  impl->source = io::load_sd_model(impl->options.model, options.ema);
  if (!options.vae.empty()) impl->source.vae = io::load_vae(options.vae);
  auto& src = impl->source;
  impl->unet = build<models::UNet2DConditionModel, models::UNetConfig>(src.unet, impl->dtype, impl->device);
  impl->vae = build<models::AutoencoderKL, models::VaeConfig>(src.vae, impl->dtype, impl->device);
  impl->prompt_encoder = std::make_unique<pipeline::PromptEncoder>(src, impl->dtype, impl->device);
  impl->scheduler_config = src.scheduler_config;
  if (!options.prediction.empty()) impl->scheduler_config["prediction_type"] = options.prediction;
  impl->recommended = recommended_settings(impl->options.model);
  // The tensors were copied into the modules; drop the file mappings.
  src.unet.weights.clear();
  src.vae.weights.clear();
  src.text_encoder.weights.clear();
  return std::unique_ptr<Pipeline>(new Pipeline(std::move(impl)));
}

GenerateOptions Pipeline::recommended_options() const { return impl_->recommended; }

std::vector<std::string> Pipeline::describe() const {
  auto facts = impl_->source.inferred;
  facts.insert(facts.begin(), "family: " + impl_->source.family);
  return facts;
}

std::string Pipeline::Impl::parameters_text(const GenerateOptions& o, int64_t seed) const {
  std::ostringstream s;
  s << o.prompt << "\n";
  if (!o.negative_prompt.empty()) s << "Negative prompt: " << o.negative_prompt << "\n";
  s << "Steps: " << o.steps << ", Sampler: " << sampling::resolve_sampler(o.sampler, o.schedule).name
    << ", CFG scale: " << format_number(o.cfg) << ", Seed: " << seed << ", Size: " << o.width << "x" << o.height
    << ", Model: " << std::filesystem::path(options.model).filename().string();
  if (o.clip_skip > 1) s << ", Clip skip: " << o.clip_skip;
  if (!o.init_image.empty()) s << ", Denoising strength: " << format_number(o.strength);
  for (size_t i = 0; i < o.controls.size(); ++i) {
    const auto& c = o.controls[i];
    s << ", ControlNet " << i << ": \"Model: " << std::filesystem::path(c.model).filename().string()
      << ", Weight: " << format_number(c.scale) << ", Resize Mode: " << c.resize_mode
      << ", Guidance Start: " << format_number(c.start) << ", Guidance End: " << format_number(c.end)
      << ", Control Mode: " << to_string(c.mode) << (o.guess_mode ? ", Guess Mode: True" : "") << "\"";
  }
  s << ", Version: controlnet.cpp";
  return s.str();
}

namespace {

void validate(const GenerateOptions& o) {
  if (o.width <= 0 || o.height <= 0 || o.width % 8 || o.height % 8)
    throw Error("width and height must be positive multiples of 8 (got " + std::to_string(o.width) + "x" +
                std::to_string(o.height) + ")");
  if (o.steps < 1 || o.steps > 1000) throw Error("steps must be between 1 and 1000 (got " + std::to_string(o.steps) + ")");
  if (o.cfg < 0 || o.cfg > 100) throw Error("cfg must be between 0 and 100 (got " + format_number(o.cfg) + ")");
  if (o.batch_size < 1 || o.batch_size > 64) throw Error("batch size must be between 1 and 64");
  if (o.batch_count < 1) throw Error("batch count must be at least 1");
  if (o.clip_skip < 1) throw Error("clip skip must be at least 1 (1 = last layer)");
  if (!o.init_image.empty() && (o.strength <= 0 || o.strength > 1))
    throw Error("strength must be in (0, 1] (got " + format_number(o.strength) + ")");
  for (size_t i = 0; i < o.controls.size(); ++i) {
    const auto& c = o.controls[i];
    const auto unit = "ControlNet " + std::to_string(i + 1) + ": ";
    if (c.model.empty()) throw Error(unit + "no ControlNet model given for control image '" + c.image + "'");
    if (c.image.empty() && c.pixels.rgb.empty())
      throw Error(unit + "no control image given for ControlNet '" + c.model + "'");
    if (c.scale < 0 || c.scale > 10) throw Error(unit + "scale must be between 0 and 10");
    if (c.start < 0 || c.end > 1 || c.start >= c.end)
      throw Error(unit + "start and end must satisfy 0 <= start < end <= 1 (got " + format_number(c.start) + ", " +
                  format_number(c.end) + ")");
  }
}

// An Image's pixels as an OpenCV RGB matrix (a view).
cv::Mat rgb_view(const Image& image) {
  return cv::Mat(image.height, image.width, CV_8UC3, const_cast<uint8_t*>(image.rgb.data()));
}

// A caller's in-memory image as an OpenCV RGB matrix (a copy); `what` names it in errors.
cv::Mat image_pixels(const Image& image, const std::string& what) {
  if (image.width <= 0 || image.height <= 0 || image.rgb.size() != size_t(image.width) * image.height * 3)
    throw Error(what + ": give a file, or pixels whose size is width x height x 3 (got " +
                std::to_string(image.rgb.size()) + " bytes for " + std::to_string(image.width) + "x" +
                std::to_string(image.height) + ")");
  return rgb_view(image).clone();
}

}  // namespace

std::vector<GeneratedImage> Pipeline::generate(const GenerateOptions& options, const ProgressCallback& progress) {
  GenerateOptions o = options;
  // Unset sizes default to what the model was trained at.
  const int native = int(impl_->unet->config().sample_size * impl_->vae->config().downsampling_factor());
  if (o.width == 0) o.width = native;
  if (o.height == 0) o.height = native;
  validate(o);
  auto& m = *impl_;
  torch::NoGradGuard no_grad;
  const auto started = std::chrono::steady_clock::now();
  const auto sampler = sampling::resolve_sampler(o.sampler, o.schedule);
  const auto schedule = sampling::NoiseSchedule::from_json(m.scheduler_config);
  const bool guidance = o.cfg > 1.0;

  // Control images and their hint embeddings: once per generation.
  std::vector<pipeline::ActiveControlNet> controls;
  for (const auto& unit : o.controls) {
    auto net = m.controlnet(unit.model);
    auto source = unit.image.empty() ? image_pixels(unit.pixels, "control image") : io::read_rgb_image(unit.image);
    const auto fit = io::parse_resize_mode(unit.resize_mode);
    // Detect at the size the image will have in the output ("pixel perfect"),
    // then fit as usual.
    if (!unit.preprocess.empty()) {
      preprocess::DetectOptions detect;
      detect.resolution = std::clamp(preprocess::pixel_perfect_resolution(source.size(), o.width, o.height,
                                                                          fit == io::ResizeMode::resize_and_fill),
                                     64, 4096);
      detect.annotator_dir = o.annotator_dir;
      source = preprocess::detect(unit.preprocess, source, detect);
    }
    auto image = io::fit_image(source, o.width, o.height, fit);
    // Inpaint: the mask is fitted as the image is, then marks the pixels to repaint.
    torch::Tensor hint;
    if (!unit.mask.empty() || !unit.mask_pixels.rgb.empty()) {
      auto mask = unit.mask.empty() ? image_pixels(unit.mask_pixels, "inpaint mask") : io::read_rgb_image(unit.mask);
      hint = preprocess::inpaint_control(image, io::fit_image(mask, o.width, o.height, fit));
    } else {
      hint = io::image_to_tensor(image);
    }
    hint = hint.to(m.device, m.dtype);
    controls.push_back({net, net->embed_hint(hint), unit.scale, unit.start, unit.end, unit.mode});
  }

  const auto prompts = m.prompt_encoder->encode(o.prompt, guidance ? o.negative_prompt : std::string(), guidance,
                                                o.clip_skip - 1, o.batch_size);
  int64_t seed = o.seed;
  if (seed < 0) seed = int64_t(std::random_device{}() & 0x7fffffff);

  std::vector<GeneratedImage> results;
  const int64_t factor = m.vae->config().downsampling_factor();
  const int64_t latent_h = o.height / factor, latent_w = o.width / factor;
  for (int batch = 0; batch < o.batch_count; ++batch) {
    // Each batch draws its noise from a PyTorch-compatible CPU generator seeded
    // with seed + batch * batch_size, so the first image of every batch can be
    // reproduced on its own.
    const int64_t batch_seed = seed + int64_t(batch) * o.batch_size;
    auto generator = sampling::make_cpu_generator(uint64_t(batch_seed));
    auto plan = sampling::make_plan(sampler, schedule, o.steps);
    const std::vector<int64_t> shape{o.batch_size, m.unet->config().in_channels, latent_h, latent_w};
    torch::Tensor latents;
    if (o.init_image.empty()) {
      latents = torch::randn(shape, generator) * plan.init_noise_sigma;
    } else {
      // As diffusers' img2img: the posterior sample is drawn before the noise.
      auto init = io::fit_image(io::read_rgb_image(o.init_image), o.width, o.height, io::ResizeMode::crop_and_resize);
      auto pixels = io::image_to_tensor(init).mul(2).sub(1).to(m.device, m.dtype);
      auto init_latents = m.vae->encode(pixels).sample(generator).to(torch::kFloat32).cpu() * m.vae->scaling_factor();
      auto noise = torch::randn(shape, generator);
      latents = sampling::start_from_image(plan, schedule, o.strength, init_latents.expand(shape), noise);
    }
    pipeline::GuidedDenoiser denoiser(m.unet, prompts, o.cfg, controls, o.guess_mode, plan.loop_iterations());
    auto last = std::chrono::steady_clock::now();
    auto on_step = [&](int64_t step, const torch::Tensor&) {
      if (!progress) return;
      auto now = std::chrono::steady_clock::now();
      Progress p;
      p.batch = batch;
      p.batch_count = o.batch_count;
      p.step = int(step + 1 - plan.start);
      p.steps = int(plan.loop_iterations() - plan.start);
      p.elapsed = std::chrono::duration<double>(now - started).count();
      p.last_step = std::chrono::duration<double>(now - last).count();
      last = now;
      if (!progress(p)) throw Cancelled();
    };
    auto model = [&](const torch::Tensor& x, const torch::Tensor& t, int64_t step) {
      return denoiser(x.to(m.device), t.to(m.device), step);
    };
    latents = sampling::sample(model, latents.to(m.device), plan, schedule,
                               sampling::generator_noise(generator, m.device), on_step);
    auto decoded = m.vae->decode((latents / m.vae->scaling_factor()).to(m.dtype)).to(torch::kFloat32).cpu();
    auto images = (decoded / 2 + 0.5).clamp(0, 1);
    for (int i = 0; i < o.batch_size; ++i) {
      GeneratedImage out;
      auto mat = io::tensor_to_image(images[i]);
      out.image.width = mat.cols;
      out.image.height = mat.rows;
      out.image.rgb.assign(mat.data, mat.data + mat.total() * mat.elemSize());
      out.seed = batch_seed;
      out.batch_index = i;
      out.parameters = m.parameters_text(o, batch_seed);
      results.push_back(std::move(out));
    }
  }
  return results;
}

void save_png(const std::string& path, const GeneratedImage& image) {
  io::write_png(path, rgb_view(image.image), {{"parameters", image.parameters}});
}

std::string encode_png(const GeneratedImage& image) {
  return io::encode_png(rgb_view(image.image), {{"parameters", image.parameters}});
}

}  // namespace cn
