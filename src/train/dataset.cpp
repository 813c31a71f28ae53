#include "train/dataset.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <opencv2/imgproc.hpp>
#include <algorithm>
#include <cmath>
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

PairDataset::PairDataset(const std::string& dir, int resolution, bool skip_bad,
                         std::function<void(const std::string&)> report)
    : dir_(dir), resolution_(resolution), skip_bad_(skip_bad), report_(std::move(report)) {
  const auto index = fs::path(dir) / "prompt.json";
  std::ifstream in(index);
  if (!in) throw Error("dataset: cannot open " + index.string() + " (expected one JSON object per line)");
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    std::string problem;
    Sample sample;
    sample.line = n;
    try {
      const auto j = nlohmann::json::parse(line);
      if (!j.is_object()) throw Error("not a JSON object");
      for (const char* field : {"source", "target", "prompt"})
        if (!j.contains(field) || !j.at(field).is_string())
          throw Error(std::string(j.contains(field) ? "field \"" : "no field \"") + field + "\"" +
                      (j.contains(field) ? " is not a string" : ""));
      sample.source = j.at("source");
      sample.target = j.at("target");
      sample.prompt = j.at("prompt");
      for (const auto* image : {&sample.source, &sample.target})
        if (!fs::is_regular_file(fs::path(dir) / *image))
          throw Error(std::string(image == &sample.source ? "source" : "target") + " image " +
                      (fs::path(dir) / *image).string() + " does not exist");
    } catch (const nlohmann::json::exception& e) {
      problem = std::string("not valid JSON (") + e.what() + ")";
    } catch (const Error& e) {
      problem = e.what();
    }
    if (problem.empty()) {
      samples_.push_back(std::move(sample));
      continue;
    }
    const auto message = "dataset: " + where(n) + ": " + problem;
    if (!skip_bad) throw Error(message + " (--skip-bad leaves such samples out)");
    ++skipped_lines_;
    if (report_) report_(message);
  }
  if (samples_.empty()) throw Error("dataset: " + index.string() + " lists no usable samples");
  failed_.assign(samples_.size(), false);
}

std::string PairDataset::index_path() const { return (fs::path(dir_) / "prompt.json").string(); }

std::string PairDataset::where(int line) const { return index_path() + ":" + std::to_string(line); }

std::pair<torch::Tensor, torch::Tensor> PairDataset::decode(const Sample& s) const {
  try {
    const auto target = io::read_rgb_image((fs::path(dir_) / s.target).string());
    const auto source = io::read_rgb_image((fs::path(dir_) / s.source).string());
    if (target.size() != source.size())
      throw Error("source " + s.source + " is " + std::to_string(source.cols) + "x" + std::to_string(source.rows) +
                  " but target " + s.target + " is " + std::to_string(target.cols) + "x" + std::to_string(target.rows));
    return {io::image_to_tensor(square(target, resolution_)), io::image_to_tensor(square(source, resolution_))};
  } catch (const Error& e) {
    throw Error("dataset: " + where(s.line) + ": " + e.what());
  } catch (const cv::Exception& e) {
    throw Error("dataset: " + where(s.line) + ": " + e.what());
  }
}

Batch PairDataset::load(const std::vector<size_t>& indices) const {
  std::vector<torch::Tensor> images, hints;
  Batch b;
  for (size_t wanted : indices) {
    // A sample that fails is replaced by the next one in index order that loads.
    for (size_t i = wanted, tried = 0;; i = (i + 1) % samples_.size(), ++tried) {
      if (tried == samples_.size()) throw Error("dataset: no sample listed in " + index_path() + " loads");
      {
        std::lock_guard<std::mutex> lock(failed_mutex_);
        if (failed_[i]) continue;
      }
      try {
        auto [image, hint] = decode(samples_[i]);
        images.push_back(image);
        hints.push_back(hint);
        b.prompts.push_back(samples_[i].prompt);
        b.indices.push_back(i);
        break;
      } catch (const Error& e) {
        if (!skip_bad_) throw Error(std::string(e.what()) + " (--skip-bad leaves such samples out)");
        {
          std::lock_guard<std::mutex> lock(failed_mutex_);
          failed_[i] = true;
        }
        if (report_) report_(e.what());
      }
    }
  }
  b.images = torch::cat(images) * 2 - 1;
  b.hints = torch::cat(hints);
  return b;
}

torch::Tensor PairDataset::failed_samples() const {
  std::lock_guard<std::mutex> lock(failed_mutex_);
  auto flags = torch::zeros({int64_t(failed_.size())}, torch::kInt);
  for (size_t i = 0; i < failed_.size(); ++i) flags[int64_t(i)] = int(failed_[i]);
  return flags;
}

BatchStream::BatchStream(const PairDataset& data, int batch_size, uint64_t seed, int64_t start_step, int rank,
                         int ranks)
    : data_(data), batch_size_(batch_size), rank_(rank), ranks_(ranks), seed_(seed), step_(start_step) {
  if (int64_t(data.size()) < int64_t(batch_size) * ranks)
    throw Error("dataset: " + std::to_string(data.size()) + " samples are fewer than one global batch (" +
                std::to_string(batch_size) + " x " + std::to_string(ranks) + " ranks)");
  batches_per_epoch_ = int64_t(data.size()) / (int64_t(batch_size) * ranks);
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
  const int64_t first = ((step % batches_per_epoch_) * ranks_ + rank_) * batch_size_;
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

FillImages draw_fill_sample(int size, cv::Point centre, int radius, const std::array<uint8_t, 3>& fill,
                            const std::array<uint8_t, 3>& background) {
  FillImages images{cv::Mat(size, size, CV_8UC3, cv::Scalar::all(0)), cv::Mat(size, size, CV_8UC3)};
  cv::circle(images.source, centre, radius, cv::Scalar::all(255), std::max(1, size / 64), cv::LINE_AA);
  // By covered area: OpenCV's filled anti-aliased circle ends about 0.6 px
  // inside the outline of the same radius.
  for (int y = 0; y < size; ++y)
    for (int x = 0; x < size; ++x) {
      const double cover = std::clamp(radius + 0.5 - std::hypot(x - centre.x, y - centre.y), 0.0, 1.0);
      for (int c = 0; c < 3; ++c)
        images.target.at<cv::Vec3b>(y, x)[c] =
            cv::saturate_cast<uint8_t>(cover * fill[size_t(c)] + (1 - cover) * background[size_t(c)]);
    }
  return images;
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
    const auto [source, target] = draw_fill_sample(size, centre, r, colours[fill].second, colours[background].second);
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
