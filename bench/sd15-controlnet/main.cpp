// Speed and memory of SD1.5-shaped denoising steps with ControlNet, as a
// fraction of this machine's matrix-multiply ceiling measured in the same run.
//
//   bench_sd15-controlnet [--steps 4] [--sizes 512,256] [--dtypes fp32,bf16]
//
// The models have full SD1.5 shapes (UNet 320/640/1280/1280, context 768, a
// ControlNet cloned from it) and random weights created in memory, so no
// download is needed. Each scenario runs `steps` guided steps (CFG 7.5, batch
// [uncond, cond]) through the pipeline's own GuidedDenoiser.
#include <ATen/record_function.h>
#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <mutex>
#include <numeric>
#include <string>
#include <vector>

#include "controlnet/runtime.h"
#include "models/controlnet.h"
#include "models/unet.h"
#include "nn/attention.h"
#include "nn/weights.h"
#include "pipeline/denoise.h"
#include "util/dtype.h"

using namespace cn;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

double rss_mb() {
  std::ifstream statm("/proc/self/statm");
  long pages = 0, resident = 0;
  statm >> pages >> resident;
  return resident * double(sysconf(_SC_PAGESIZE)) / (1 << 20);
}

double peak_rss_mb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024.0;
}

// Counts the floating-point operations of convolutions and matrix products
// from the shapes of the ops actually executed (a RecordFunction callback),
// so the count follows the code instead of a second description of the model.
class FlopCounter {
 public:
  FlopCounter() {
    handle_ = at::addGlobalCallback(
        at::RecordFunctionCallback(&FlopCounter::on_op).needsInputs(true).scopes({at::RecordScope::FUNCTION}));
  }
  ~FlopCounter() { at::removeCallback(handle_); }
  static double total() { return double(flops_.load()); }
  static void reset() { flops_ = 0; }

 private:
  static std::unique_ptr<at::ObserverContext> on_op(const at::RecordFunction& fn) {
    const std::string name = fn.name();
    const auto inputs = fn.inputs();
    auto sizes = [&](size_t i) { return inputs.at(i).toTensor().sizes(); };
    double flops = 0;
    if (name == "aten::convolution") {
      auto in = sizes(0), w = sizes(1);
      const auto stride = inputs.at(3).toIntVector(), padding = inputs.at(4).toIntVector();
      const int64_t oh = (in[2] + 2 * padding[0] - w[2]) / stride[0] + 1;
      const int64_t ow = (in[3] + 2 * padding[1] - w[3]) / stride[1] + 1;
      flops = 2.0 * in[0] * w[0] * w[1] * w[2] * w[3] * oh * ow;  // w[1] = in channels / groups
    } else if (name == "aten::mm") {
      auto a = sizes(0), b = sizes(1);
      flops = 2.0 * a[0] * a[1] * b[1];
    } else if (name == "aten::addmm") {
      auto a = sizes(1), b = sizes(2);
      flops = 2.0 * a[0] * a[1] * b[1];
    } else if (name == "aten::bmm") {
      auto a = sizes(0), b = sizes(1);
      flops = 2.0 * a[0] * a[1] * a[2] * b[2];
    }
    if (flops > 0) flops_ += int64_t(flops);
    return nullptr;
  }

  static inline std::atomic<int64_t> flops_{0};
  at::CallbackHandle handle_;
};

// Where a step's time goes: self time per aten op (its time minus that of
// the ops it calls), from RecordFunction start/end callbacks while enabled.
class OpProfile {
 public:
  explicit OpProfile(bool enabled) {
    if (!enabled) return;
    handle_ = at::addGlobalCallback(
        at::RecordFunctionCallback(&OpProfile::on_start, &OpProfile::on_end).scopes({at::RecordScope::FUNCTION}));
  }
  ~OpProfile() {
    if (handle_) at::removeCallback(handle_);
  }
  bool enabled() const { return handle_ != 0; }
  void reset() {
    const std::lock_guard<std::mutex> lock(mutex_);
    self_seconds_.clear();
  }
  // The `count` ops with the most self time, as "name share%".
  std::string top(size_t count) const {
    const std::lock_guard<std::mutex> lock(mutex_);
    std::vector<std::pair<double, std::string>> ops;
    double total = 0;
    for (const auto& [name, seconds] : self_seconds_) {
      ops.emplace_back(seconds, name);
      total += seconds;
    }
    std::sort(ops.rbegin(), ops.rend());
    std::string out;
    for (size_t i = 0; i < ops.size() && i < count; ++i) {
      char line[128];
      std::snprintf(line, sizeof line, "%s%s %.1f%%", i ? ", " : "", ops[i].second.c_str(),
                    100.0 * ops[i].first / total);
      out += line;
    }
    return out;
  }

 private:
  struct Frame : at::ObserverContext {
    Clock::time_point start = Clock::now();
    double children = 0;  // seconds spent in the ops this one called
  };
  static std::unique_ptr<at::ObserverContext> on_start(const at::RecordFunction&) {
    auto frame = std::make_unique<Frame>();
    stack_.push_back(frame.get());
    return frame;
  }
  static void on_end(const at::RecordFunction& fn, at::ObserverContext* context) {
    auto* frame = static_cast<Frame*>(context);
    const double seconds = seconds_since(frame->start);
    if (!stack_.empty() && stack_.back() == frame) stack_.pop_back();
    if (!stack_.empty()) stack_.back()->children += seconds;
    const std::lock_guard<std::mutex> lock(mutex_);
    self_seconds_[fn.name()] += seconds - frame->children;
  }

  static inline thread_local std::vector<Frame*> stack_;
  static inline std::mutex mutex_;
  static inline std::map<std::string, double> self_seconds_;
  at::CallbackHandle handle_ = 0;
};

// Best GFLOP/s of an n x n x n matrix product in `dtype`.
double gemm_ceiling(torch::ScalarType dtype, int64_t n = 2048) {
  auto a = torch::randn({n, n}).to(dtype), b = torch::randn({n, n}).to(dtype);
  torch::mm(a, b);  // warm-up
  double best = 1e30;
  for (int i = 0; i < 3; ++i) {
    auto start = Clock::now();
    torch::mm(a, b);
    best = std::min(best, seconds_since(start));
  }
  return 2.0 * n * n * n / best / 1e9;
}

struct Scenario {
  std::string name;
  int controlnets;
  bool guess_mode;
  double window_end;  // ControlNet active for the first `window_end` of the steps
};

struct Stats {
  double first, min, median, max, total;
};

Stats summarise(std::vector<double> t) {
  Stats s{t.front(), 0, 0, 0, std::accumulate(t.begin(), t.end(), 0.0)};
  std::vector<double> rest(t.begin() + (t.size() > 1 ? 1 : 0), t.end());
  std::sort(rest.begin(), rest.end());
  s.min = rest.front();
  s.max = rest.back();
  s.median = rest[rest.size() / 2];
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("SD1.5 + ControlNet step benchmark (random weights, full shapes)");
  int steps = 4;
  std::vector<int> sizes{512, 256};
  std::vector<std::string> dtypes{"fp32", "bf16"};
  std::vector<std::string> only;
  int threads = 0;
  bool profile = false;
  std::vector<int64_t> budgets{0};
  std::vector<std::string> formats{"channels-last"};
  app.add_option("--steps", steps, "denoising steps per scenario (first one reported apart)")->check(CLI::Range(2, 1000));
  app.add_option("--sizes", sizes, "image sizes (square)")->delimiter(',');
  app.add_option("--dtypes", dtypes, "fp32, bf16")->delimiter(',');
  app.add_option("--scenarios", only, "subset of: plain, cn1, cn2, guess, half-window")->delimiter(',');
  app.add_flag("--profile", profile, "also print the aten ops with the most self time per scenario (adds a little time to each op)");
  app.add_option("--threads", threads, "intra-op threads (default: physical cores)");
  app.add_option("--attention-budgets", budgets,
                 "attention score-block sizes in elements to compare, each scenario run once per value (0: the default)")
      ->delimiter(',');
  app.add_option("--memory-formats", formats,
                 "layouts of the models' convolution weights and activations to compare: channels-last (the "
                 "pipeline's), nchw")
      ->check(CLI::IsMember({"channels-last", "nchw"}))
      ->delimiter(',');
  CLI11_PARSE(app, argc, argv);
  init_runtime(threads);
  torch::NoGradGuard no_grad;

  std::printf("threads %d\n", torch::get_num_threads());
  // The ceiling is the best one product achieves, so BLAS gets every thread
  // for it; the models run with BLAS on the calling thread, as init_runtime
  // leaves it (faster for a whole step, see there).
  set_blas_threads(torch::get_num_threads());
  const double ceiling_fp32 = gemm_ceiling(torch::kFloat);
  const double ceiling_bf16 = gemm_ceiling(torch::kBFloat16);
  set_blas_threads(1);
  std::printf("matmul ceiling (2048^3 GEMM): fp32 %.1f GFLOP/s, bf16 %.1f GFLOP/s\n", ceiling_fp32, ceiling_bf16);

  const std::vector<Scenario> all{{"plain", 0, false, 1.0},
                                  {"cn1", 1, false, 1.0},
                                  {"cn2", 2, false, 1.0},
                                  {"guess", 1, true, 1.0},
                                  {"half-window", 1, false, 0.5}};
  // Each selected scenario once per attention budget, labelled with it when several are compared.
  struct Run {
    Scenario scenario;
    int64_t budget;
    std::string label;
  };
  std::vector<Run> runs;
  for (const auto& scenario : all) {
    if (!only.empty() && std::find(only.begin(), only.end(), scenario.name) == only.end()) continue;
    for (const int64_t budget : budgets)
      runs.push_back({scenario, budget,
                      budgets.size() == 1 ? scenario.name
                                          : scenario.name + "@" + (budget ? std::to_string(budget >> 10) + "K" : "default")});
  }
  FlopCounter counter;
  OpProfile op_profile(profile);
  for (const auto& dtype_name : dtypes) {
    const auto dtype = dtype_name == "bf16" ? torch::kBFloat16 : torch::kFloat;
    const double ceiling = dtype == torch::kBFloat16 ? ceiling_bf16 : ceiling_fp32;
    auto start = Clock::now();
    models::UNetConfig config;  // the defaults are SD1.5's
    // Born in the compute dtype, as the pipeline builds its models.
    auto unet = construct_in(dtype, [&] { return models::UNet2DConditionModel(config); });
    std::vector<models::ControlNetModel> nets;
    for (int i = 0; i < 2; ++i)
      nets.push_back(construct_in(dtype, [&] { return models::ControlNetModel(models::ControlNetConfig::from_unet(config)); }));
    std::printf("\n== %s: models created in %.1f s, RSS %.0f MB\n", dtype_name.c_str(), seconds_since(start), rss_mb());
    std::printf("%-12s %5s %8s %8s %8s %8s %8s %10s %8s %9s %9s\n", "scenario", "size", "first s", "min s",
                "median s", "max s", "total s", "GFLOP/step", "GFLOP/s", "% ceiling", "RSS MB");
    for (int size : sizes) for (const auto& format : formats) {
      const auto memory_format = format == "nchw" ? torch::MemoryFormat::Contiguous : torch::MemoryFormat::ChannelsLast;
      nn::set_memory_format(*unet, memory_format);
      for (auto& net : nets) nn::set_memory_format(*net, memory_format);
      const int64_t latent = size / 8;
      auto context = torch::randn({1, 77, config.cross_attention_dim}).to(dtype);
      for (const auto& [scenario, budget, label] : runs) {
        nn::set_attention_slice_budget(budget);
        std::vector<pipeline::ActiveControlNet> controls;
        for (int i = 0; i < scenario.controlnets; ++i) {
          auto hint = torch::rand({1, 3, size, size}).to(dtype);
          controls.push_back({nets[i], nets[i]->embed_hint(hint), 1.0, 0.0, scenario.window_end, ControlMode::balanced});
        }
        pipeline::GuidedDenoiser denoiser(unet, {context, context}, 7.5, controls, scenario.guess_mode, steps);
        auto x = torch::randn({1, 4, latent, latent});
        std::vector<double> times, flops;
        std::vector<double> rss;
        for (int i = 0; i < steps; ++i) {
          FlopCounter::reset();
          if (i == 1) op_profile.reset();  // the first step (warm-up) is left out
          auto t0 = Clock::now();
          denoiser(x, torch::tensor(int64_t(999 - i * 50)), i);
          times.push_back(seconds_since(t0));
          flops.push_back(FlopCounter::total());
          rss.push_back(rss_mb());
        }
        const auto s = summarise(times);
        const double mean_flops = std::accumulate(flops.begin(), flops.end(), 0.0) / flops.size();
        const double gflops = mean_flops / 1e9;
        const double mean_time = s.total / steps;
        const auto name = formats.size() == 1 ? label : label + "/" + format;
        std::printf("%-12s %5d %8.3f %8.3f %8.3f %8.3f %8.2f %10.1f %8.1f %8.1f%% %5.0f-%.0f\n", name.c_str(),
                    size, s.first, s.min, s.median, s.max, s.total, gflops, gflops / mean_time,
                    100.0 * gflops / mean_time / ceiling,
                    *std::min_element(rss.begin() + 1, rss.end()), *std::max_element(rss.begin() + 1, rss.end()));
        if (op_profile.enabled()) std::printf("  self time: %s\n", op_profile.top(10).c_str());
        std::fflush(stdout);
      }
    }
  }
  std::printf("\npeak RSS %.0f MB\n", peak_rss_mb());
  return 0;
}
