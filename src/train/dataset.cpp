#include "train/dataset.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <opencv2/imgproc.hpp>
#include <numeric>
#include <random>

#include "controlnet/error.h"
#include "io/image.h"

namespace cn::train {
namespace {

namespace fs = std::filesystem;

// Short side to `r` (area filter down, cubic up), then the centred r x r crop.
cv::Mat square(const cv::Mat& rgb, int r) {
  const double scale = double(r) / std::min(rgb.cols, rgb.rows);
  cv::Mat resized;
  const int w = std::max(r, int(std::lround(rgb.cols * scale))), h = std::max(r, int(std::lround(rgb.rows * scale)));
  cv::resize(rgb, resized, {w, h}, 0, 0, scale < 1 ? cv::INTER_AREA : cv::INTER_CUBIC);
  return resized(cv::Rect((w - r) / 2, (h - r) / 2, r, r)).clone();
}

}  // namespace

PairDataset::PairDataset(const std::string& dir, int resolution) : dir_(dir), resolution_(resolution) {
  const auto index = fs::path(dir) / "prompt.json";
  std::ifstream in(index);
  if (!in) throw Error("dataset: cannot open " + index.string() + " (expected one JSON object per line)");
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      const auto j = nlohmann::json::parse(line);
      samples_.push_back({j.at("source"), j.at("target"), j.at("prompt")});
    } catch (const nlohmann::json::exception& e) {
      throw Error("dataset: " + index.string() + " line " + std::to_string(n) + ": " + e.what());
    }
  }
  if (samples_.empty()) throw Error("dataset: " + index.string() + " lists no samples");
}

Batch PairDataset::load(const std::vector<size_t>& indices) const {
  std::vector<torch::Tensor> images, hints;
  Batch b;
  for (size_t i : indices) {
    const auto& s = samples_.at(i);
    images.push_back(io::image_to_tensor(square(io::read_rgb_image((fs::path(dir_) / s.target).string()), resolution_)));
    hints.push_back(io::image_to_tensor(square(io::read_rgb_image((fs::path(dir_) / s.source).string()), resolution_)));
    b.prompts.push_back(s.prompt);
  }
  b.indices = indices;
  b.images = torch::cat(images) * 2 - 1;
  b.hints = torch::cat(hints);
  return b;
}

BatchStream::BatchStream(const PairDataset& data, int batch_size, uint64_t seed, int64_t start_step)
    : data_(data), batch_size_(batch_size), seed_(seed), step_(start_step) {
  batches_per_epoch_ = std::max<int64_t>(1, int64_t(data.size()) / batch_size);
  pending_ = std::async(std::launch::async, [this, idx = indices_for(step_)] { return data_.load(idx); });
}

std::vector<size_t> BatchStream::indices_for(int64_t step) {
  const int64_t epoch = step / batches_per_epoch_;
  if (epoch != epoch_) {
    order_.resize(data_.size());
    std::iota(order_.begin(), order_.end(), size_t{0});
    std::mt19937_64 rng(seed_ * 1000003 + uint64_t(epoch));
    std::shuffle(order_.begin(), order_.end(), rng);
    epoch_ = epoch;
  }
  const int64_t first = (step % batches_per_epoch_) * batch_size_;
  return std::vector<size_t>(order_.begin() + first, order_.begin() + first + batch_size_);
}

Batch BatchStream::next() {
  Batch current = pending_.get();
  ++step_;
  pending_ = std::async(std::launch::async, [this, idx = indices_for(step_)] { return data_.load(idx); });
  return current;
}

const std::vector<std::pair<std::string, std::array<uint8_t, 3>>>& fill_colours() {
  static const std::vector<std::pair<std::string, std::array<uint8_t, 3>>> colours = {
      {"red", {220, 30, 30}},     {"green", {40, 170, 60}},    {"blue", {30, 60, 220}},     {"yellow", {240, 220, 40}},
      {"orange", {245, 140, 20}}, {"purple", {130, 50, 170}},  {"pink", {245, 130, 190}},   {"brown", {120, 70, 30}},
      {"black", {15, 15, 15}},    {"white", {245, 245, 245}},  {"gray", {128, 128, 128}},   {"cyan", {40, 210, 220}},
      {"magenta", {220, 40, 200}}, {"lime", {160, 230, 50}},   {"navy", {20, 30, 110}},     {"teal", {20, 128, 128}},
      {"maroon", {120, 20, 40}},  {"olive", {128, 128, 20}},   {"beige", {225, 210, 170}},  {"violet", {170, 120, 240}}};
  return colours;
}

void write_fill_dataset(const std::string& dir, int64_t count, int size, uint64_t seed) {
  if (count < 1 || size < 16) throw Error("dataset fill: need --count >= 1 and --size >= 16");
  fs::create_directories(fs::path(dir) / "source");
  fs::create_directories(fs::path(dir) / "target");
  std::mt19937_64 rng(seed);
  const auto& colours = fill_colours();
  std::uniform_int_distribution<size_t> pick(0, colours.size() - 1);
  const auto tmp = (fs::path(dir) / "prompt.json.tmp").string();
  std::ofstream index(tmp);
  for (int64_t i = 0; i < count; ++i) {
    const size_t fill = pick(rng);
    size_t background = pick(rng);
    while (background == fill) background = pick(rng);
    std::uniform_real_distribution<double> radius_dist(0.12 * size, 0.4 * size);
    const double radius = radius_dist(rng);
    std::uniform_real_distribution<double> cx(radius, size - radius), cy(radius, size - radius);
    const cv::Point centre(int(std::lround(cx(rng))), int(std::lround(cy(rng))));
    const int r = int(std::lround(radius));
    auto colour = [&](size_t c) { return cv::Scalar(colours[c].second[0], colours[c].second[1], colours[c].second[2]); };
    cv::Mat source(size, size, CV_8UC3, cv::Scalar::all(0)), target(size, size, CV_8UC3, colour(background));
    cv::circle(source, centre, r, cv::Scalar::all(255), std::max(1, size / 64), cv::LINE_AA);
    cv::circle(target, centre, r, colour(fill), cv::FILLED, cv::LINE_AA);
    const auto name = std::to_string(i) + ".png";
    io::write_png((fs::path(dir) / "source" / name).string(), source);
    io::write_png((fs::path(dir) / "target" / name).string(), target);
    nlohmann::json line = {{"source", "source/" + name},
                           {"target", "target/" + name},
                           {"prompt", colours[fill].first + " circle with " + colours[background].first + " background"}};
    index << line.dump() << "\n";
  }
  index.close();
  fs::rename(tmp, fs::path(dir) / "prompt.json");
}

}  // namespace cn::train
