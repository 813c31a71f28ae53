#pragma once
// Safetensors (https://github.com/huggingface/safetensors format): an 8-byte
// little-endian header length, a JSON header {name: {dtype, shape, data_offsets}}
// with an optional "__metadata__" map of strings, then the raw tensor bytes.
//
// The reader memory-maps the file and validates the whole header before any
// tensor is touched, so a hostile file is refused with one message naming the
// file and the tensor, without allocating what it claims.
#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace cn::io {

using TensorMap = std::map<std::string, torch::Tensor>;
using Metadata = std::map<std::string, std::string>;

struct TensorRecord {
  std::string name;
  torch::ScalarType dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets inside the data area
  uint64_t end = 0;
};

class SafetensorsFile {
 public:
  // Opens and validates `path`; throws cn::Error on any inconsistency.
  static std::shared_ptr<SafetensorsFile> open(const std::string& path);

  const std::string& path() const { return path_; }
  const std::vector<TensorRecord>& records() const { return records_; }
  const Metadata& metadata() const { return metadata_; }
  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  const TensorRecord& record(const std::string& name) const;

  // A tensor viewing the mapped bytes (copy-on-write mapping: writing to it
  // never changes the file). The view keeps the mapping alive.
  torch::Tensor tensor(const std::string& name) const;
  // Every tensor, as views.
  TensorMap tensors() const;

  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

 private:
  SafetensorsFile() = default;
  std::string path_;
  void* mapping_ = nullptr;
  size_t mapping_size_ = 0;
  const uint8_t* data_ = nullptr;  // start of the data area
  std::vector<TensorRecord> records_;
  std::map<std::string, size_t> index_;
  Metadata metadata_;
  std::weak_ptr<SafetensorsFile> self_;
};

// Parses and validates a header (the JSON text) against a data area of
// `data_size` bytes. Exposed for tests and the fuzzer.
std::vector<TensorRecord> parse_safetensors_header(const std::string& json_text, uint64_t data_size,
                                                   const std::string& file_for_errors,
                                                   Metadata* metadata);

// Every tensor of the file, as views of the mapping.
TensorMap load_safetensors(const std::string& path, Metadata* metadata = nullptr);

// Writes tensors (made contiguous, CPU) with optional metadata. Written to
// `path`.tmp and renamed, so an interrupted write never leaves a partial file.
void save_safetensors(const std::string& path, const TensorMap& tensors, const Metadata& metadata = {});

// Name of a dtype in safetensors' spelling ("F32", "BF16", ...).
std::string safetensors_dtype_name(torch::ScalarType dtype);

}  // namespace cn::io
