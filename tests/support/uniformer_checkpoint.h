#pragma once
// Stand-ins for upernet_global_small.pth (lllyasviel/Annotators), whose
// network has no golden fixture: its state dict layout written out here from
// the annotator's model definition (UniFormer-S backbone, UperHead, and the
// auxiliary FCN head the file also holds), and mmcv's checkpoint container.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace cn::testing {

struct TensorLayout {
  std::string name;
  std::vector<int64_t> shape;  // {} for BatchNorm's num_batches_tracked (int64)
};

// Every tensor of the file's state_dict, by its key.
std::vector<TensorLayout> uniformer_checkpoint_layout();

// That layout with float32 values drawn from `seed` (convolution and linear
// weights uniform within 1/sqrt(fan-in), norms near 1, running variances in
// [0.5, 1.5]) and num_batches_tracked as int64.
io::TensorMap uniformer_random_state_dict(uint64_t seed);

// torch.save of mmcv's save_checkpoint: {'meta': {...}, 'state_dict':
// OrderedDict}. The meta holds what mmseg's training leaves there (versions,
// the config text, CLASSES as a tuple of names, PALETTE as a list of lists,
// seed, epoch/iter, hook_msgs with a numpy float64 best score), with
// stand-in values.
void write_mmcv_checkpoint(const std::filesystem::path& path, const io::TensorMap& state_dict);

}  // namespace cn::testing
