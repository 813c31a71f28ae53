#pragma once
// Training data in the Fill50K layout: DIR/prompt.json with one JSON object per
// line {"source": hint image, "target": image, "prompt": text}, paths relative
// to DIR. Images are resized (short side) and centre-cropped to the resolution.
#include <torch/torch.h>

#include <opencv2/core.hpp>
#include <array>
#include <functional>
#include <future>
#include <mutex>
#include <string>
#include <vector>

namespace cn::train {

struct Sample {
  std::string source, target, prompt;
  int line = 0;  // in prompt.json, for messages
};

struct Batch {
  torch::Tensor images;  // [B, 3, R, R] targets in [-1, 1]
  torch::Tensor hints;   // [B, 3, R, R] sources in [0, 1]
  std::vector<std::string> prompts;
  std::vector<size_t> indices;  // positions in the dataset, for per-sample caches
};

// Bad input (a line that is not JSON or lacks a string field, a missing,
// unreadable or undecodable image, source and target of different sizes) is an
// Error naming prompt.json's path and line. With `skip_bad` the sample is left
// out instead and `report` gets that message: lines and missing files when the
// index is read, images that do not decode when first loaded (a batch then
// takes the next good sample in index order in its place, the same on every
// rank and in every run).
class PairDataset {
 public:
  PairDataset(const std::string& dir, int resolution, bool skip_bad = false,
              std::function<void(const std::string&)> report = {});
  size_t size() const { return samples_.size(); }
  Batch load(const std::vector<size_t>& indices) const;
  // Lines skipped while reading the index.
  int64_t skipped_lines() const { return skipped_lines_; }
  // Per sample: 1 if it failed to load and was skipped so far.
  torch::Tensor failed_samples() const;

 private:
  // The sample's target and hint tensors, or an Error naming its line.
  std::pair<torch::Tensor, torch::Tensor> decode(const Sample& s) const;
  std::string index_path() const;
  std::string where(int line) const;  // "DIR/prompt.json:LINE"
  std::string dir_;
  int resolution_;
  bool skip_bad_;
  std::function<void(const std::string&)> report_;
  std::vector<Sample> samples_;
  int64_t skipped_lines_ = 0;
  mutable std::mutex failed_mutex_;
  mutable std::vector<bool> failed_;
};

// Seeded epoch order and batching, with the next batch decoded in a
// background thread while the current one trains. The order is a function of
// (seed, epoch), so a resumed run continues with the same batches. With
// several ranks, a global batch is `batch_size` x `ranks` samples and rank r
// loads its r-th slice of it.
class BatchStream {
 public:
  BatchStream(const PairDataset& data, int batch_size, uint64_t seed, int64_t start_step, int rank = 0, int ranks = 1);
  Batch next();
  int64_t epoch() const { return epoch_; }
  int64_t batches_per_epoch() const { return batches_per_epoch_; }

 private:
  std::vector<size_t> indices_for(int64_t step);
  const PairDataset& data_;
  int batch_size_, rank_, ranks_;
  uint64_t seed_;
  int64_t step_, epoch_ = -1, batches_per_epoch_;
  std::vector<size_t> order_;
  std::future<Batch> pending_;
};

// `controlnet dataset fill`: circles as in the paper's Fill50K sanity check.
// source = white circle outline on black, target = the disk in one named
// colour on a background of another, prompt "<fill> circle with <bg> background".
void write_fill_dataset(const std::string& dir, int64_t count, int size, uint64_t seed);

// One fill sample's RGB images, size x size: the outline (white on black,
// anti-aliased, size / 64 px wide) and the disk in `fill` on `background`,
// each pixel taking the fill in proportion to its covered area, so the
// disk's edge lies on the outline's centre line.
struct FillImages {
  cv::Mat source, target;
};
FillImages draw_fill_sample(int size, cv::Point centre, int radius, const std::array<uint8_t, 3>& fill,
                            const std::array<uint8_t, 3>& background);

// The named colours of the fill task (name, RGB).
const std::vector<std::pair<std::string, std::array<uint8_t, 3>>>& fill_colours();

}  // namespace cn::train
