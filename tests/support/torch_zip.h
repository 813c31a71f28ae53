#pragma once
// Writers of PyTorch zip checkpoints for tests: the archive layout torch.save
// uses (archive/data.pkl, archive/version, archive/data/<key>), with every
// header under the test's control so that hostile archives can be made too.
#include <torch/torch.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace cn::testing {

inline std::string le_bytes(uint64_t v, int n) {
  std::string out;
  for (int i = 0; i < n; ++i) out += char((v >> (8 * i)) & 0xff);
  return out;
}

struct ZipEntry {
  std::string name, data;
  uint16_t method = 0;        // 0 stored, 8 deflated (the data is not actually deflated)
  uint32_t claimed_size = 0;  // uncompressed size written in the headers (0: the data's)
};

inline void write_zip(const std::filesystem::path& path, const std::vector<ZipEntry>& entries) {
  std::string body, directory;
  for (const auto& e : entries) {
    const uint32_t crc = uint32_t(crc32(0, reinterpret_cast<const Bytef*>(e.data.data()), uInt(e.data.size())));
    const uint32_t size = e.claimed_size ? e.claimed_size : uint32_t(e.data.size());
    const std::string common = le_bytes(20, 2) + le_bytes(0, 2) + le_bytes(e.method, 2) + le_bytes(0, 4) +
                               le_bytes(crc, 4) + le_bytes(e.data.size(), 4) + le_bytes(size, 4) +
                               le_bytes(e.name.size(), 2) + le_bytes(0, 2);
    const uint32_t offset = uint32_t(body.size());
    body += "PK\x03\x04" + common + e.name + e.data;
    directory += "PK\x01\x02" + le_bytes(20, 2) + common + le_bytes(0, 2) + le_bytes(0, 2) + le_bytes(0, 2) +
                 le_bytes(0, 4) + le_bytes(offset, 4) + e.name;
  }
  const std::string end = "PK\x05\x06" + le_bytes(0, 2) + le_bytes(0, 2) + le_bytes(entries.size(), 2) +
                          le_bytes(entries.size(), 2) + le_bytes(directory.size(), 4) + le_bytes(body.size(), 4) +
                          le_bytes(0, 2);
  std::ofstream(path, std::ios::binary) << body << directory << end;
}

// Pickle (protocol 2) fragments: each pushes one value.
inline std::string pickle_string(const std::string& s) { return "X" + le_bytes(s.size(), 4) + s; }
inline std::string pickle_int(int64_t v) { return std::string("\x8a\x08", 2) + le_bytes(uint64_t(v), 8); }

// The OrderedDict of _rebuild_tensor_v2 calls torch.save writes for a state
// dict of contiguous CPU tensors; their storages are appended to `storages`
// as the archive's data records.
inline std::string pickle_state_dict(const io::TensorMap& tensors, std::vector<ZipEntry>& storages) {
  auto int_tuple = [&](c10::IntArrayRef values) {
    std::string out = "(";
    for (auto v : values) out += pickle_int(v);
    return out + "t";
  };
  const std::string ordered_dict = "ccollections\nOrderedDict\n)R";
  std::string pickle = ordered_dict;
  for (const auto& [name, tensor] : tensors) {
    const auto t = tensor.contiguous();
    const std::string key = std::to_string(storages.size());
    std::string storage_class = c10::toString(t.scalar_type());  // "Float", "Half", "BFloat16", ...
    pickle += pickle_string(name) + "ctorch._utils\n_rebuild_tensor_v2\n(" + "(" + pickle_string("storage") +
              "ctorch\n" + storage_class + "Storage\n" + pickle_string(key) + pickle_string("cpu") +
              pickle_int(t.numel()) + "tQ" + pickle_int(0) + int_tuple(t.sizes()) + int_tuple(t.strides()) + "\x89" +
              ordered_dict + "tRs";
    storages.push_back({"archive/data/" + key,
                        std::string(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size())});
  }
  return pickle;
}

// torch.save's zip archive of one pickled value (`value`, the fragment that
// pushes it) whose tensors' storages are `storages`.
inline void write_torch_archive(const std::filesystem::path& path, const std::string& value,
                                const std::vector<ZipEntry>& storages) {
  std::vector<ZipEntry> entries = {{"archive/data.pkl", std::string("\x80\x02", 2) + value + "."},
                                   {"archive/version", "3\n"}};
  entries.insert(entries.end(), storages.begin(), storages.end());
  write_zip(path, entries);
}

// torch.save(state_dict).
inline void write_torch_checkpoint(const std::filesystem::path& path, const io::TensorMap& tensors) {
  std::vector<ZipEntry> storages;
  const auto state_dict = pickle_state_dict(tensors, storages);
  write_torch_archive(path, state_dict, storages);
}

}  // namespace cn::testing
