#pragma once
// Training data in the Fill50K layout: DIR/prompt.json with one JSON object per
// line {"source": hint image, "target": image, "prompt": text}, paths relative
// to DIR. Images are resized (short side) and centre-cropped to the resolution.
#include <torch/torch.h>

#include <array>
#include <future>
#include <string>
#include <vector>

namespace cn::train {

struct Sample {
  std::string source, target, prompt;
};

struct Batch {
  torch::Tensor images;  // [B, 3, R, R] targets in [-1, 1]
  torch::Tensor hints;   // [B, 3, R, R] sources in [0, 1]
  std::vector<std::string> prompts;
  std::vector<size_t> indices;  // positions in the dataset, for per-sample caches
};

class PairDataset {
 public:
  PairDataset(const std::string& dir, int resolution);
  size_t size() const { return samples_.size(); }
  Batch load(const std::vector<size_t>& indices) const;

 private:
  std::string dir_;
  int resolution_;
  std::vector<Sample> samples_;
};

// Seeded epoch order and batching, with the next batch decoded in a
// background thread while the current one trains. The order is a function of
// (seed, epoch), so a resumed run continues with the same batches.
class BatchStream {
 public:
  BatchStream(const PairDataset& data, int batch_size, uint64_t seed, int64_t start_step);
  Batch next();
  int64_t epoch() const { return epoch_; }
  int64_t batches_per_epoch() const { return batches_per_epoch_; }

 private:
  std::vector<size_t> indices_for(int64_t step);
  const PairDataset& data_;
  int batch_size_;
  uint64_t seed_;
  int64_t step_, epoch_ = -1, batches_per_epoch_;
  std::vector<size_t> order_;
  std::future<Batch> pending_;
};

// `controlnet dataset fill`: circles as in the paper's Fill50K sanity check.
// source = white circle outline on black, target = the disk in one named
// colour on a background of another, prompt "<fill> circle with <bg> background".
void write_fill_dataset(const std::string& dir, int64_t count, int size, uint64_t seed);

// The named colours of the fill task (name, RGB).
const std::vector<std::pair<std::string, std::array<uint8_t, 3>>>& fill_colours();

}  // namespace cn::train
