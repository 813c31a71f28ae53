#include "train/fill_metrics.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <opencv2/imgproc.hpp>

#include "controlnet/error.h"
#include "io/checkpoint.h"
#include "io/image.h"
#include "io/keymap.h"
#include "models/vae.h"
#include "nn/weights.h"
#include "train/dataset.h"

namespace cn::train {
namespace {

cv::Vec3d colour_of(const std::string& name) {
  for (const auto& [n, rgb] : fill_colours())
    if (n == name) return {double(rgb[0]), double(rgb[1]), double(rgb[2])};
  throw Error("fill metrics: unknown colour '" + name + "'");
}

std::string nearest_name(const cv::Vec3d& rgb) {
  std::string best;
  double best_d = 1e300;
  for (const auto& [n, c] : fill_colours()) {
    const double d = cv::norm(rgb - cv::Vec3d(c[0], c[1], c[2]));
    if (d < best_d) best_d = d, best = n;
  }
  return best;
}

}  // namespace

Circle fit_outline_circle(const cv::Mat& outline_rgb) {
  cv::Mat gray;
  cv::cvtColor(outline_rgb, gray, cv::COLOR_RGB2GRAY);
  // Least squares over x^2 + y^2 + D x + E y + F = 0 (Kasa's algebraic fit),
  // each pixel weighted by its intensity: an anti-aliased line's weighted
  // pixels centre on the line itself, and unlike a centroid the fit stays on
  // the circle where the image border cuts part of the line away.
  cv::Matx33d normal = cv::Matx33d::zeros();
  cv::Vec3d rhs(0, 0, 0);
  double total = 0;
  for (int y = 0; y < gray.rows; ++y)
    for (int x = 0; x < gray.cols; ++x) {
      const double w = gray.at<uint8_t>(y, x);
      if (w == 0) continue;
      const cv::Vec3d row(x, y, 1);
      normal += w * row * row.t();
      rhs += -w * (double(x) * x + double(y) * y) * row;
      total += w;
    }
  cv::Vec3d def;
  if (total <= 0 || !cv::solve(normal, rhs, def, cv::DECOMP_CHOLESKY))
    throw Error("fill metrics: the outline image holds no circle");
  Circle c{-def[0] / 2, -def[1] / 2, 0};
  const double r2 = c.cx * c.cx + c.cy * c.cy - def[2];
  if (!(r2 > 0)) throw Error("fill metrics: the outline image holds no circle");
  c.r = std::sqrt(r2);
  return c;
}

cv::Mat disk_mask(cv::Size size, const Circle& circle) {
  cv::Mat mask(size, CV_8U);
  for (int y = 0; y < size.height; ++y)
    for (int x = 0; x < size.width; ++x)
      mask.at<uint8_t>(y, x) = std::hypot(x - circle.cx, y - circle.cy) <= circle.r ? 255 : 0;
  return mask;
}

FillScore score_fill(const cv::Mat& generated_rgb, const cv::Mat& outline_rgb, const std::string& prompt) {
  const auto first = prompt.find(' '), with = prompt.find(" with "), bg_end = prompt.find(" background");
  if (first == std::string::npos || with == std::string::npos || bg_end == std::string::npos)
    throw Error("fill metrics: prompt is not '<fill> circle with <background> background': " + prompt);
  const auto fill_name = prompt.substr(0, first), background_name = prompt.substr(with + 6, bg_end - with - 6);
  const auto fill = colour_of(fill_name), background = colour_of(background_name);
  // The outline's circle in the generated image's pixel coordinates (pixel
  // centres map as (x + 0.5) * scale - 0.5).
  auto circle = fit_outline_circle(outline_rgb);
  const double sx = double(generated_rgb.cols) / outline_rgb.cols, sy = double(generated_rgb.rows) / outline_rgb.rows;
  circle = {(circle.cx + 0.5) * sx - 0.5, (circle.cy + 0.5) * sy - 0.5, circle.r * std::sqrt(sx * sy)};
  const cv::Mat truth = disk_mask(generated_rgb.size(), circle);
  cv::Mat painted(generated_rgb.size(), CV_8U);
  for (int y = 0; y < generated_rgb.rows; ++y)
    for (int x = 0; x < generated_rgb.cols; ++x) {
      const auto p = generated_rgb.at<cv::Vec3b>(y, x);
      const cv::Vec3d v(p[0], p[1], p[2]);
      painted.at<uint8_t>(y, x) = cv::norm(v - fill) < cv::norm(v - background) ? 255 : 0;
    }
  FillScore s;
  s.prompt = prompt;
  s.radius = circle.r;
  const double inter = cv::countNonZero(truth & painted), uni = cv::countNonZero(truth | painted);
  s.iou = uni > 0 ? inter / uni : 0.0;
  // Dominant colours away from the edge, where anti-aliasing mixes the two.
  constexpr double kEdge = 1.5;
  cv::Mat inner = disk_mask(generated_rgb.size(), {circle.cx, circle.cy, circle.r - kEdge});
  if (cv::countNonZero(inner) == 0) inner = truth;
  const cv::Mat outer = ~disk_mask(generated_rgb.size(), {circle.cx, circle.cy, circle.r + kEdge});
  const cv::Scalar inside = cv::mean(generated_rgb, inner), outside = cv::mean(generated_rgb, outer);
  s.fill_seen = nearest_name({inside[0], inside[1], inside[2]});
  s.background_seen = nearest_name({outside[0], outside[1], outside[2]});
  s.colours_right = s.fill_seen == fill_name && s.background_seen == background_name;
  return s;
}

double FillFidelity::mean_iou(const std::vector<FillScore>& scores) {
  double sum = 0;
  for (const auto& s : scores) sum += s.iou;
  return scores.empty() ? 0.0 : sum / double(scores.size());
}

double FillFidelity::colour_accuracy(const std::vector<FillScore>& scores) {
  const auto right = std::count_if(scores.begin(), scores.end(), [](const FillScore& s) { return s.colours_right; });
  return scores.empty() ? 0.0 : double(right) / double(scores.size());
}

FillFidelity measure_fill_fidelity(Pipeline& pipeline, const std::string& model_dir, int count, uint64_t seed,
                                   const GenerateOptions& settings) {
  namespace fs = std::filesystem;
  const auto data = fs::temp_directory_path() / ("cn_fill_heldout_" + std::to_string(seed) + "_" + std::to_string(count));
  write_fill_dataset(data.string(), count, 64, seed);
  FillFidelity result;
  // The VAE alone (the pipeline keeps its own copy private).
  const auto vae_dir = fs::path(model_dir) / "vae";
  const auto vae_file = (vae_dir / "diffusion_pytorch_model.safetensors").string();
  models::AutoencoderKL vae(models::VaeConfig::from_json(io::read_json((vae_dir / "config.json").string())));
  nn::load_weights(*vae, io::read_tensor_file(vae_file), vae_file);
  vae->eval();
  // Encode the posterior mean and decode, in float32 (the pipeline's dtype
  // on the CPU): a uint8 image comes back.
  auto round_trip = [&](const cv::Mat& rgb) {
    torch::NoGradGuard no_grad;
    auto x = io::image_to_tensor(rgb).mul(2).sub(1);
    auto y = vae->decode(vae->encode(x).mean).add(1).div(2).clamp(0, 1);
    return io::tensor_to_image(y[0]);
  };
  double error_sum = 0;
  std::ifstream index(data / "prompt.json");
  std::string line;
  for (int i = 0; std::getline(index, line); ++i) {
    const auto j = nlohmann::json::parse(line);
    const auto source = (data / j["source"].get<std::string>()).string();
    const auto outline = io::read_rgb_image(source);
    const auto target = io::read_rgb_image((data / j["target"].get<std::string>()).string());
    result.targets.push_back(score_fill(target, outline, j["prompt"]));
    const auto through_vae = round_trip(target);
    result.vae_round_trip.push_back(score_fill(through_vae, outline, j["prompt"]));
    cv::Mat diff;
    cv::absdiff(through_vae, target, diff);
    error_sum += cv::mean(diff.reshape(1))[0];
    for (bool with : {true, false}) {
      GenerateOptions o = settings;
      o.prompt = j["prompt"];
      o.seed = i;
      o.controls.clear();
      if (with) o.controls.push_back({(fs::path(model_dir) / "controlnet").string(), source});
      auto out = pipeline.generate(o).at(0);
      cv::Mat rgb(out.image.height, out.image.width, CV_8UC3, out.image.rgb.data());
      (with ? result.with_controlnet : result.without_controlnet).push_back(score_fill(rgb, outline, o.prompt));
    }
  }
  fs::remove_all(data);
  if (!result.targets.empty()) result.vae_round_trip_error = error_sum / double(result.targets.size());
  return result;
}

}  // namespace cn::train
