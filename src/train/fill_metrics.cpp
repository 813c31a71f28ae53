#include "train/fill_metrics.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <opencv2/imgproc.hpp>

#include "controlnet/error.h"
#include "io/image.h"
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

cv::Mat disk_from_outline(const cv::Mat& outline_rgb) {
  cv::Mat gray, walls;
  cv::cvtColor(outline_rgb, gray, cv::COLOR_RGB2GRAY);
  cv::threshold(gray, walls, 64, 255, cv::THRESH_BINARY);
  // Flood the outside from the border; what it cannot reach is the disk.
  cv::Mat outside = walls.clone();
  cv::Mat pad;
  cv::copyMakeBorder(outside, pad, 1, 1, 1, 1, cv::BORDER_CONSTANT, 0);
  cv::floodFill(pad, cv::Point(0, 0), 128);
  cv::Mat reached = pad(cv::Rect(1, 1, outline_rgb.cols, outline_rgb.rows)) == 128;
  return ~reached;
}

FillScore score_fill(const cv::Mat& generated_rgb, const cv::Mat& outline_rgb, const std::string& prompt) {
  const auto first = prompt.find(' '), with = prompt.find(" with "), bg_end = prompt.find(" background");
  if (first == std::string::npos || with == std::string::npos || bg_end == std::string::npos)
    throw Error("fill metrics: prompt is not '<fill> circle with <background> background': " + prompt);
  const auto fill = colour_of(prompt.substr(0, first)), background = colour_of(prompt.substr(with + 6, bg_end - with - 6));
  cv::Mat outline;
  cv::resize(outline_rgb, outline, generated_rgb.size(), 0, 0, cv::INTER_NEAREST);
  const cv::Mat truth = disk_from_outline(outline);
  cv::Mat painted(generated_rgb.size(), CV_8U);
  for (int y = 0; y < generated_rgb.rows; ++y)
    for (int x = 0; x < generated_rgb.cols; ++x) {
      const auto p = generated_rgb.at<cv::Vec3b>(y, x);
      const cv::Vec3d v(p[0], p[1], p[2]);
      painted.at<uint8_t>(y, x) = cv::norm(v - fill) < cv::norm(v - background) ? 255 : 0;
    }
  FillScore s;
  const double inter = cv::countNonZero(truth & painted), uni = cv::countNonZero(truth | painted);
  s.iou = uni > 0 ? inter / uni : 0.0;
  const cv::Scalar inside = cv::mean(generated_rgb, truth), outside = cv::mean(generated_rgb, ~truth);
  s.fill_seen = nearest_name({inside[0], inside[1], inside[2]});
  s.background_seen = nearest_name({outside[0], outside[1], outside[2]});
  s.colours_right = s.fill_seen == prompt.substr(0, first) && s.background_seen == prompt.substr(with + 6, bg_end - with - 6);
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
  std::ifstream index(data / "prompt.json");
  std::string line;
  for (int i = 0; std::getline(index, line); ++i) {
    const auto j = nlohmann::json::parse(line);
    const auto source = (data / j["source"].get<std::string>()).string();
    const auto outline = io::read_rgb_image(source);
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
  return result;
}

}  // namespace cn::train
