#include "train/trainer.h"

#include <ATen/CPUGeneratorImpl.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <optional>
#include <unordered_map>
#include <opencv2/imgproc.hpp>

#include "controlnet/error.h"
#include "io/checkpoint.h"
#include "io/image.h"
#include "io/keymap.h"
#include "models/controlnet.h"
#include "models/vae.h"
#include "nn/unet_blocks.h"
#include "nn/weights.h"
#include "pipeline/denoise.h"
#include "sampling/samplers.h"
#include "text/clip.h"
#include "text/tokenizer.h"
#include "train/dataset.h"
#include "train/objective.h"

namespace cn::train {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// The base model, its parts built from diffusers configs; parts being trained
// from scratch keep their seeded random initialisation.
struct Base {
  io::SdModel source;
  models::UNet2DConditionModel unet{nullptr};
  models::AutoencoderKL vae{nullptr};
  text::ClipTextModel text{nullptr};
  std::unique_ptr<text::ClipTokenizer> tokenizer;
  sampling::NoiseSchedule schedule;
};

template <typename Model, typename Config>
Model build(const io::Component& c, bool random_init) {
  Model m(Config::from_json(c.config));
  if (!random_init) nn::load_weights(*m, c.weights, c.source);
  return m;
}

io::Component config_only(const fs::path& dir) {
  io::Component c;
  c.config = io::read_json((dir / "config.json").string());
  c.source = dir.string();
  return c;
}

Base load_base(const TrainOptions& o) {
  Base b;
  const bool scratch = o.from_scratch;
  if (scratch && o.train.count("vae_decoder"))
    throw Error("train: vae_decoder fine-tunes a trained VAE's decoder; it cannot start from scratch");
  if (scratch) {
    // Configs from the folder. Parts trained now start random; the others load
    // their weights, except parts this mode does not use (unet and text while
    // the VAE trains).
    const fs::path dir(o.model);
    const bool vae_only = o.train.count("vae") > 0;
    auto part = [&](const char* name, const char* stem, bool trained) {
      io::Component c = config_only(dir / name);
      if (trained || (vae_only && std::string(name) != "vae")) return c;
      const auto file = dir / name / (std::string(stem) + ".safetensors");
      c.weights = io::read_tensor_file(file.string());
      c.source = file.string();
      return c;
    };
    b.source.unet = part("unet", "diffusion_pytorch_model", o.train.count("unet") > 0);
    b.source.vae = part("vae", "diffusion_pytorch_model", o.train.count("vae") > 0);
    b.source.text_encoder = part("text_encoder", "model", o.train.count("text") > 0);
    b.source.tokenizer_dir = (dir / "tokenizer").string();
    b.source.text_pad_id = io::tokenizer_pad_id(b.source.tokenizer_dir);
    b.source.scheduler_config = io::read_json((dir / "scheduler" / "scheduler_config.json").string());
    b.source.layout = "diffusers";
  } else {
    b.source = io::load_sd_model(o.model);
  }
  torch::manual_seed(o.seed);
  b.unet = build<models::UNet2DConditionModel, models::UNetConfig>(b.source.unet, b.source.unet.weights.empty());
  b.vae = build<models::AutoencoderKL, models::VaeConfig>(b.source.vae, b.source.vae.weights.empty());
  b.text = build<text::ClipTextModel, text::ClipTextConfig>(b.source.text_encoder, b.source.text_encoder.weights.empty());
  // The modules own copies now; the loaded tensors would double the memory.
  for (auto* c : {&b.source.unet, &b.source.vae, &b.source.text_encoder}) c->weights.clear();
  b.tokenizer = std::make_unique<text::ClipTokenizer>(b.source.tokenizer_dir.empty()
                                                          ? text::ClipTokenizer::bundled()
                                                          : text::ClipTokenizer::from_folder(b.source.tokenizer_dir));
  if (b.source.tokenizer_dir.empty()) b.source.text_pad_id = b.source.family == "SD2.x" ? 0 : 49407;
  b.schedule = sampling::NoiseSchedule::from_json(b.source.scheduler_config);
  return b;
}

void set_trainable(torch::nn::Module& m, bool trainable) {
  for (auto& p : m.parameters()) p.set_requires_grad(trainable);
  trainable ? m.train() : m.eval();
}

// Atomic write of a whole folder's files is per file: tmp + rename.
void write_text(const fs::path& path, const std::string& text) {
  const auto tmp = path.string() + ".tmp";
  std::ofstream(tmp) << text;
  fs::rename(tmp, path);
}

void save_component(const fs::path& dir, const std::string& stem, const nlohmann::json& config,
                    const io::TensorMap& weights) {
  fs::create_directories(dir);
  write_text(dir / "config.json", config.dump(2));
  io::save_safetensors((dir / (stem + ".safetensors")).string(), weights, {{"format", "pt"}});
}

// A line plot of the loss curve (moving average over `window` steps).
void plot_loss(const fs::path& path, const std::vector<double>& losses) {
  if (losses.size() < 2) return;
  const int w = 800, h = 400, margin = 40;
  cv::Mat img(h, w, CV_8UC3, cv::Scalar::all(255));
  const size_t window = std::max<size_t>(1, losses.size() / 100);
  std::vector<double> smooth;
  double sum = 0;
  for (size_t i = 0; i < losses.size(); ++i) {
    sum += losses[i];
    if (i >= window) sum -= losses[i - window];
    smooth.push_back(sum / double(std::min(i + 1, window)));
  }
  const double hi = *std::max_element(smooth.begin(), smooth.end()), lo = *std::min_element(smooth.begin(), smooth.end());
  std::vector<cv::Point> points;
  for (size_t i = 0; i < smooth.size(); ++i) {
    const int x = margin + int((w - 2 * margin) * double(i) / double(smooth.size() - 1));
    const int y = h - margin - int((h - 2 * margin) * (smooth[i] - lo) / std::max(hi - lo, 1e-12));
    points.push_back({x, y});
  }
  cv::rectangle(img, {margin, margin}, {w - margin, h - margin}, cv::Scalar::all(180));
  cv::polylines(img, points, false, cv::Scalar(200, 40, 40), 2, cv::LINE_AA);
  char label[128];
  std::snprintf(label, sizeof label, "loss %.4g .. %.4g over %zu steps", lo, hi, losses.size());
  cv::putText(img, label, {margin, margin - 10}, cv::FONT_HERSHEY_SIMPLEX, 0.5, cv::Scalar::all(0), 1, cv::LINE_AA);
  io::write_png(path.string(), img);
}

class Trainer {
 public:
  explicit Trainer(const TrainOptions& o)
      : o_(o),
        base_(load_base(o)),
        // Every rank reads the same index: rank 0 alone reports its bad lines;
        // images that fail later are reported by the rank that loads them.
        data_(o.data, o.resolution, o.skip_bad, [this](const std::string& message) {
          if (o_.warn && (writer() || data_ready_)) o_.warn(message);
        }) {
    data_ready_ = true;
    const bool controlnet = o.train.count("controlnet") > 0;
    if (o.lr_schedule != "constant" && o.lr_schedule != "cosine")
      throw Error("train: unknown --lr-schedule '" + o.lr_schedule + "' (valid: constant, cosine)");
    if (controlnet && o.train.size() > 1) throw Error("train: --train controlnet cannot be combined with base parts");
    if (trains_vae() && o.train.size() > 1)
      throw Error("train: train the VAE alone; the other parts learn in its latent space");
    for (const auto& part : o.train)
      if (part != "controlnet" && part != "unet" && part != "text" && part != "vae" && part != "vae_decoder")
        throw Error("train: unknown part '" + part + "' (valid: controlnet, unet, text, vae, vae_decoder)");
    set_trainable(*base_.unet, o.train.count("unet") > 0);
    set_trainable(*base_.vae, o.train.count("vae") > 0);
    set_trainable(*base_.text, o.train.count("text") > 0);
    if (o.train.count("vae_decoder")) {
      // The encoder stays as it is, so the latents a UNet learned on do not
      // change: only how they are drawn improves.
      for (auto& item : base_.vae->named_parameters())
        if (item.key().rfind("decoder.", 0) == 0 || item.key().rfind("post_quant_conv.", 0) == 0)
          item.value().set_requires_grad(true);
    }
    std::vector<torch::Tensor> params;
    if (controlnet) {
      if (o.controlnet_init.empty()) {
        torch::manual_seed(o.seed + 1);
        net_ = models::ControlNetModel(
            models::ControlNetConfig::from_unet(base_.unet->config(), base_.vae->config().downsampling_factor()));
        net_->copy_trunk_from(*base_.unet);
      } else {
        auto c = io::load_controlnet(o.controlnet_init);
        net_ = build<models::ControlNetModel, models::ControlNetConfig>(c, false);
      }
      set_trainable(*net_, true);
      params = net_->parameters();
      if (o.unlock_sd) {
        // sd_locked = False: the decoder half of the UNet learns too.
        for (auto& item : base_.unet->named_parameters()) {
          const auto& name = item.key();
          if (name.rfind("up_blocks.", 0) == 0 || name.rfind("conv_norm_out.", 0) == 0 || name.rfind("conv_out.", 0) == 0) {
            item.value().set_requires_grad(true);
            params.push_back(item.value());
          }
        }
      }
    } else {
      for (auto* m : std::vector<torch::nn::Module*>{base_.unet.get(), base_.vae.get(), base_.text.get()})
        for (auto& p : m->parameters())
          if (p.requires_grad()) params.push_back(p);
    }
    if (params.empty()) throw Error("train: nothing to train");
    if (o.gradient_checkpointing) {
      // The UNet too: backward reaches the ControlNet through its decoder.
      for (auto* m : std::vector<torch::nn::Module*>{base_.unet.get(), net_.is_empty() ? nullptr : net_.get()})
        if (m) nn::set_gradient_checkpointing(*m, true);
    }
    working_ = params;
    if (o.precision == "bf16") {
      // Everything computes in bf16; the optimizer keeps fp32 masters of the
      // trained weights (bf16's 8-bit mantissa would round away updates
      // smaller than 1/256 of a weight, lr 1e-5 ones among them).
      for (auto* m : std::vector<torch::nn::Module*>{base_.unet.get(), base_.vae.get(), base_.text.get()}) m->to(torch::kBFloat16);
      if (!net_.is_empty()) net_->to(torch::kBFloat16);
      for (auto& p : params) masters_.push_back(p.detach().to(torch::kFloat).requires_grad_(true));
    } else if (o.precision == "fp32") {
      masters_ = params;
    } else {
      throw Error("train: unknown --precision '" + o.precision + "' (valid: fp32, bf16)");
    }
    optimizer_ = std::make_unique<torch::optim::AdamW>(
        masters_, torch::optim::AdamWOptions(o.lr).betas({o.beta1, o.beta2}).eps(o.adam_eps).weight_decay(o.weight_decay));
    generator_ = at::make_generator<at::CPUGeneratorImpl>(o.seed);
    total_ = o.steps > 0 ? o.steps : o.epochs * std::max<int64_t>(1, int64_t(data_.size()) / (o.batch_size * world()));
    if (writer()) fs::create_directories(o.output);
    if (!o.resume.empty()) restore(o.resume);
    if (o.group) {
      // Identical seeds make identical weights already; rank 0's copy is the
      // one every rank starts from all the same.
      o.group->broadcast(masters_);
      copy_masters_to_working();
    }
  }

  void run(const std::function<void(const TrainProgress&)>& progress) {
    BatchStream stream(data_, o_.batch_size, o_.seed, step_ * o_.grad_accum, rank(), world());
    std::ofstream csv;
    if (writer()) {
      csv.open(fs::path(o_.output) / "loss.csv", step_ > 0 ? std::ios::app : std::ios::trunc);
      if (step_ == 0) csv << "step,loss,seconds\n";
    }
    const auto started = Clock::now();
    const int64_t first = step_;
    while (step_ < total_) {
      auto step_loss_sum = torch::zeros({}, torch::kDouble);
      for (int micro = 0; micro < o_.grad_accum; ++micro) {
        auto loss = compute_loss(stream.next()) / double(o_.grad_accum);
        loss.backward();
        step_loss_sum += loss.detach().to(torch::kDouble);
        if (masters_[0].unsafeGetTensorImpl() != working_[0].unsafeGetTensorImpl()) accumulate_into_masters();
      }
      if (o_.group) {
        // The mean over ranks of the per-rank mean gradients is the gradient
        // of the global batch's mean loss (equal shards); it is taken before
        // clipping so every rank clips and steps identically.
        std::vector<torch::Tensor> reduced;
        for (auto& m : masters_)
          if (m.grad().defined()) reduced.push_back(m.mutable_grad());
        o_.group->average(reduced);
        o_.group->average({step_loss_sum});
      }
      const double step_loss = step_loss_sum.item<double>();
      if (o_.max_grad_norm > 0) torch::nn::utils::clip_grad_norm_(masters_, o_.max_grad_norm);
      // A function of the step alone, so a resumed run continues the schedule.
      for (auto& group : optimizer_->param_groups())
        static_cast<torch::optim::AdamWOptions&>(group.options()).lr(scheduled_lr(o_, step_, total_));
      optimizer_->step();
      optimizer_->zero_grad();
      copy_masters_to_working();
      ++step_;
      losses_.push_back(step_loss);
      const double elapsed = std::chrono::duration<double>(Clock::now() - started).count();
      if (!writer()) continue;
      csv << step_ << "," << step_loss << "," << elapsed << "\n";
      if (progress && (step_ % o_.log_every == 0 || step_ == total_)) {
        const size_t n = std::min<size_t>(losses_.size(), 50);
        const double avg = std::accumulate(losses_.end() - n, losses_.end(), 0.0) / double(n);
        const double rate = double(step_ - first) / std::max(elapsed, 1e-9);
        progress({step_, total_, step_loss, avg, rate, double(total_ - step_) / std::max(rate, 1e-9)});
      }
      if (o_.save_every > 0 && step_ % o_.save_every == 0 && step_ < total_) save();
      if (o_.sample_every > 0 && step_ % o_.sample_every == 0) sample();
    }
    if (!writer()) return;
    csv.close();
    save();
    if (o_.sample_every > 0 || !o_.validation_prompt.empty()) sample();
  }

  TrainSummary summary() {
    auto failed = data_.failed_samples();
    if (o_.group) o_.group->max(failed);  // a sample may have failed on any rank
    return {data_.skipped_lines() + failed.sum().item<int64_t>()};
  }

 private:
  int rank() const { return o_.group ? o_.group->rank() : 0; }
  int world() const { return o_.group ? o_.group->size() : 1; }
  bool writer() const { return rank() == 0; }
  bool trains_vae() const { return o_.train.count("vae") || o_.train.count("vae_decoder"); }

  // Random draws are made for the whole global batch (batch size x ranks),
  // and each rank keeps its rows: sample i gets the same noise, timestep and
  // prompt dropout whatever the number of ranks, and every rank's generator
  // stays in the same state (so resuming works the same way).
  torch::Tensor own_rows(const torch::Tensor& global) const {
    return global.narrow(0, int64_t(rank()) * o_.batch_size, o_.batch_size);
  }
  std::vector<int64_t> global_shape(torch::IntArrayRef shard) const {
    auto shape = shard.vec();
    shape[0] *= world();
    return shape;
  }

  // bf16: each micro-batch's gradients go into the fp32 masters (summing
  // micro-batches in bf16 would lose the small ones).
  void accumulate_into_masters() {
    for (size_t i = 0; i < working_.size(); ++i) {
      auto& g = working_[i].mutable_grad();
      if (!g.defined()) continue;
      auto& master = masters_[i].mutable_grad();
      master = master.defined() ? master.add_(g.to(torch::kFloat)) : g.to(torch::kFloat);
      g.reset();
    }
  }

  void copy_masters_to_working() {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < working_.size(); ++i)
      if (masters_[i].unsafeGetTensorImpl() != working_[i].unsafeGetTensorImpl()) working_[i].copy_(masters_[i]);
  }

  // A module's weights to save: the fp32 masters in place of bf16 working copies.
  io::TensorMap trained_state(const torch::nn::Module& module) const {
    auto state = nn::state_dict(module);
    std::unordered_map<const void*, torch::Tensor> master_of;
    for (size_t i = 0; i < working_.size(); ++i) master_of[working_[i].unsafeGetTensorImpl()] = masters_[i];
    for (const auto& item : module.named_parameters()) {
      auto it = master_of.find(item.value().unsafeGetTensorImpl());
      if (it != master_of.end()) state[item.key()] = it->second.detach();
    }
    return state;
  }

  torch::Tensor encode_text(const std::vector<std::string>& prompts) {
    auto ids = base_.tokenizer->sd_input_ids(prompts, base_.source.text_pad_id);
    return base_.text->encode(ids, 0);
  }

  torch::Tensor compute_loss(const Batch& batch) {
    if (trains_vae()) {
      // Reconstruction + KL, the LDM autoencoder objective without its
      // perceptual and GAN terms; with the encoder fixed the KL is a constant.
      const bool encoder_learns = o_.train.count("vae") > 0;
      auto posterior = [&] {
        std::optional<torch::NoGradGuard> fixed;
        if (!encoder_learns) fixed.emplace();
        return base_.vae->encode(batch.images.to(dtype()));
      }();
      auto z = posterior.mean + posterior.std() * own_rows(torch::randn(global_shape(posterior.mean.sizes()), generator_)).to(dtype());
      // L1 reconstruction as LDM's autoencoder loss has it: MSE forgives the
      // small errors that blur edges and shift flat colours.
      auto loss = torch::l1_loss(base_.vae->decode(z).to(torch::kFloat), batch.images);
      if (!encoder_learns) return loss;
      auto kl = 0.5 * (posterior.mean.pow(2) + posterior.logvar.exp() - 1 - posterior.logvar).sum({1, 2, 3}).mean();
      return loss + o_.kl_weight * kl.to(torch::kFloat);
    }
    DiffusionInputs in;
    in.latents = latents(batch);
    const auto prompts =
        drop_prompts(batch.prompts, o_.prompt_dropout, own_rows(torch::rand({int64_t(batch.prompts.size()) * world()}, generator_)));
    if (o_.train.count("text")) {
      in.context = encode_text(prompts);
    } else {
      torch::NoGradGuard no_grad;
      in.context = encode_text(prompts);
    }
    in.noise = own_rows(torch::randn(global_shape(in.latents.sizes()), generator_));
    in.timesteps = own_rows(torch::randint(0, base_.schedule.train_steps, {in.latents.size(0) * world()}, generator_));
    in.hint = batch.hints;
    DiffusionOptions options;
    options.only_mid_control = o_.only_mid_control;
    return diffusion_loss(base_.unet, net_.is_empty() ? nullptr : &net_, base_.schedule, in, options).loss;
  }

  // Scaled VAE latents of the batch's images. The frozen encoder's posterior
  // mean is a function of the image alone, so it is computed once per sample
  // and kept (16x16x4 floats each at the default model's size): the encoder
  // would otherwise cost as much as the UNet step.
  torch::Tensor latents(const Batch& batch) {
    torch::NoGradGuard no_grad;
    if (o_.latent_sample) {
      auto posterior = base_.vae->encode(batch.images.to(dtype()));
      auto noise = own_rows(torch::randn(global_shape(posterior.mean.sizes()), generator_));
      return (posterior.mean.to(torch::kFloat) + posterior.std().to(torch::kFloat) * noise) * base_.vae->scaling_factor();
    }
    std::vector<int64_t> missing;
    for (size_t i = 0; i < batch.indices.size(); ++i)
      if (!latent_cache_.count(batch.indices[i])) missing.push_back(int64_t(i));
    if (!missing.empty()) {
      auto fresh = base_.vae->encode(batch.images.index_select(0, torch::tensor(missing)).to(dtype())).mean.to(torch::kFloat) *
                   base_.vae->scaling_factor();
      for (size_t k = 0; k < missing.size(); ++k) latent_cache_[batch.indices[size_t(missing[k])]] = fresh[int64_t(k)];
    }
    std::vector<torch::Tensor> rows;
    for (size_t i : batch.indices) rows.push_back(latent_cache_.at(i));
    return torch::stack(rows);
  }

  void save() {
    const fs::path out(o_.output);
    if (!net_.is_empty()) {
      const auto config = net_->controlnet_config().to_json();
      const auto weights = trained_state(*net_);
      save_component(out / "controlnet", "diffusion_pytorch_model", config, weights);
      auto ldm = io::controlnet_name_map(config).to_ldm(weights, "controlnet");
      io::TensorMap prefixed;
      for (auto& [name, t] : ldm) prefixed.emplace("control_model." + name, t);
      io::save_safetensors((out / "control_model.safetensors").string(), prefixed, {{"format", "pt"}});
      if (o_.unlock_sd) save_component(out / "unet", "diffusion_pytorch_model", base_.unet->config().to_json(), trained_state(*base_.unet));
    } else {
      // A complete diffusers model folder: every part, tokenizer and scheduler.
      save_component(out / "unet", "diffusion_pytorch_model", base_.unet->config().to_json(), trained_state(*base_.unet));
      auto vae_config = base_.vae->config().to_json();
      if (o_.train.count("vae")) vae_config["scaling_factor"] = latent_scaling_factor();
      save_component(out / "vae", "diffusion_pytorch_model", vae_config, trained_state(*base_.vae));
      save_component(out / "text_encoder", "model", base_.text->config().to_json(), trained_state(*base_.text));
      fs::create_directories(out / "scheduler");
      write_text(out / "scheduler" / "scheduler_config.json", base_.source.scheduler_config.dump(2));
      if (!base_.source.tokenizer_dir.empty() && fs::path(base_.source.tokenizer_dir) != out / "tokenizer") {
        fs::create_directories(out / "tokenizer");
        for (const auto& f : fs::directory_iterator(base_.source.tokenizer_dir))
          fs::copy_file(f.path(), out / "tokenizer" / f.path().filename(), fs::copy_options::overwrite_existing);
      }
      write_text(out / "model_index.json",
                 nlohmann::json{{"_class_name", "StableDiffusionPipeline"}, {"trained_with", "controlnet.cpp"}}.dump(2));
    }
    // Resume state: what is trained, the optimizer, the step and the RNG.
    const auto ckpt = out / "checkpoint";
    fs::create_directories(ckpt);
    io::TensorMap trainable;
    for (auto& group : optimizer_->param_groups())
      for (size_t i = 0; i < group.params().size(); ++i) trainable.emplace("param." + std::to_string(i), group.params()[i]);
    trainable.emplace("rng_state", generator_.get_state());
    io::save_safetensors((ckpt / "trainable.safetensors").string(), trainable, {});
    const auto opt_tmp = (ckpt / "optimizer.pt.tmp").string();
    torch::save(*optimizer_, opt_tmp);
    fs::rename(opt_tmp, ckpt / "optimizer.pt");
    write_text(ckpt / "state.json", nlohmann::json{{"step", step_}, {"seed", o_.seed}}.dump(2));
    plot_loss(out / "loss.png", losses_);
  }

  // LDM's scaling factor, 1 / std of the latents, measured with the encoder
  // as it is now (statistics gathered during training would mix in the
  // early, still changing encoders) on up to 1024 samples.
  double latent_scaling_factor() {
    torch::NoGradGuard no_grad;
    const size_t n = std::min<size_t>(data_.size(), 1024);
    double sum = 0, sq_sum = 0, count = 0;
    for (size_t start = 0; start < n; start += 64) {
      std::vector<size_t> indices;
      for (size_t i = start; i < std::min(n, start + 64); ++i) indices.push_back(i);
      const auto mean = base_.vae->encode(data_.load(indices).images.to(dtype())).mean.to(torch::kDouble);
      sum += mean.sum().item<double>();
      sq_sum += mean.pow(2).sum().item<double>();
      count += double(mean.numel());
    }
    const double mean = sum / count;
    return 1.0 / std::sqrt(sq_sum / count - mean * mean);
  }

  void restore(const std::string& dir) {
    const auto ckpt = fs::path(dir) / "checkpoint";
    const auto state = io::read_json((ckpt / "state.json").string());
    step_ = state.at("step").get<int64_t>();
    auto saved = io::load_safetensors((ckpt / "trainable.safetensors").string());
    torch::NoGradGuard no_grad;
    for (auto& group : optimizer_->param_groups())
      for (size_t i = 0; i < group.params().size(); ++i) {
        auto it = saved.find("param." + std::to_string(i));
        if (it == saved.end() || !it->second.sizes().equals(group.params()[i].sizes()))
          throw Error("resume: " + ckpt.string() + " does not match this training setup (parameter " + std::to_string(i) + ")");
        group.params()[i].copy_(it->second);
      }
    copy_masters_to_working();
    generator_.set_state(saved.at("rng_state").clone());
    torch::load(*optimizer_, (ckpt / "optimizer.pt").string());
    // The earlier losses, so the curve and averages continue.
    std::ifstream csv(fs::path(dir) / "loss.csv");
    std::string line;
    std::getline(csv, line);
    while (std::getline(csv, line) && int64_t(losses_.size()) < step_) losses_.push_back(std::stod(line.substr(line.find(',') + 1)));
  }

  // A validation image from the current weights (DDIM 20 steps, CFG 7.5):
  // control image | result, written as sample-<step>.png.
  void sample() {
    if (o_.validation_prompt.empty()) return;
    torch::NoGradGuard no_grad;
    const int r = o_.resolution;
    std::vector<pipeline::ActiveControlNet> controls;
    torch::Tensor hint_image;
    if (!net_.is_empty() && !o_.validation_image.empty()) {
      hint_image = io::image_to_tensor(io::fit_image(io::read_rgb_image(o_.validation_image), r, r, io::ResizeMode::crop_and_resize));
      controls.push_back({net_, net_->embed_hint(hint_image)});
    }
    pipeline::PromptEmbeddings prompts{encode_text({o_.validation_prompt}), encode_text({""})};
    auto plan = sampling::make_plan(sampling::resolve_sampler("ddim"), base_.schedule, 20);
    pipeline::GuidedDenoiser denoiser(base_.unet, prompts, 7.5, controls, false, plan.loop_iterations());
    auto gen = sampling::make_cpu_generator(o_.seed);
    const int64_t f = base_.vae->config().downsampling_factor();
    auto x = torch::randn({1, base_.unet->config().in_channels, r / f, r / f}, gen) * plan.init_noise_sigma;
    auto model = [&](const torch::Tensor& in, const torch::Tensor& t, int64_t i) { return denoiser(in, t, i); };
    x = sampling::sample(model, x, plan, base_.schedule, sampling::generator_noise(gen, torch::kCPU));
    auto image = (base_.vae->decode((x / base_.vae->scaling_factor()).to(dtype())).to(torch::kFloat) / 2 + 0.5).clamp(0, 1);
    auto row = hint_image.defined() ? torch::cat({hint_image, image}, 3) : image;
    io::write_png((fs::path(o_.output) / ("sample-" + std::to_string(step_) + ".png")).string(), io::tensor_to_image(row[0]));
  }

  torch::ScalarType dtype() const { return o_.precision == "bf16" ? torch::kBFloat16 : torch::kFloat; }

  TrainOptions o_;
  Base base_;
  bool data_ready_ = false;
  PairDataset data_;
  models::ControlNetModel net_{nullptr};
  std::vector<torch::Tensor> working_;  // the trained parameters the models compute with
  std::vector<torch::Tensor> masters_;  // what the optimizer updates: working_ itself in fp32, fp32 copies in bf16
  std::unique_ptr<torch::optim::AdamW> optimizer_;
  torch::Generator generator_;
  int64_t step_ = 0, total_ = 0;
  std::vector<double> losses_;
  std::unordered_map<size_t, torch::Tensor> latent_cache_;
};

}  // namespace

double scheduled_lr(const TrainOptions& o, int64_t step, int64_t total) {
  if (step < o.warmup_steps) return o.lr * double(step + 1) / double(o.warmup_steps);
  if (o.lr_schedule != "cosine") return o.lr;
  const double span = double(std::max<int64_t>(1, total - o.warmup_steps));
  const double progress = std::min(1.0, double(step - o.warmup_steps) / span);
  return o.lr * 0.5 * (1.0 + std::cos(M_PI * progress));
}

TrainSummary run_training(const TrainOptions& options, const std::function<void(const TrainProgress&)>& progress) {
  Trainer trainer(options);
  trainer.run(progress);
  return trainer.summary();
}

}  // namespace cn::train
