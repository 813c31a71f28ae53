#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "controlnet/error.h"

namespace cn::io {
namespace {

// The header is JSON text; real ones are a few hundred KiB. A bound keeps a
// lying length field from making us read or parse gigabytes.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

struct DtypeName {
  const char* name;
  torch::ScalarType dtype;
};
constexpr DtypeName kDtypes[] = {
    {"F64", torch::kFloat64}, {"F32", torch::kFloat32}, {"F16", torch::kFloat16},
    {"BF16", torch::kBFloat16}, {"I64", torch::kInt64}, {"I32", torch::kInt32},
    {"I16", torch::kInt16}, {"I8", torch::kInt8}, {"U8", torch::kUInt8},
    {"BOOL", torch::kBool},
};

[[noreturn]] void fail(const std::string& file, const std::string& what) {
  throw cn::Error(file + ": " + what);
}

torch::ScalarType parse_dtype(const std::string& s, const std::string& file, const std::string& tensor) {
  for (const auto& d : kDtypes)
    if (s == d.name) return d.dtype;
  fail(file, "tensor '" + tensor + "' has unsupported dtype '" + s + "'");
}

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

}  // namespace

std::string safetensors_dtype_name(torch::ScalarType dtype) {
  for (const auto& d : kDtypes)
    if (d.dtype == dtype) return d.name;
  throw cn::Error(std::string("safetensors cannot store dtype ") + c10::toString(dtype));
}

std::vector<TensorRecord> parse_safetensors_header(const std::string& json_text, uint64_t data_size,
                                                   const std::string& file, Metadata* metadata) {
  std::set<std::string> seen;
  std::string duplicate;
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(
        json_text,
        [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
          if (event == nlohmann::json::parse_event_t::key && depth == 1) {
            const auto& key = parsed.get_ref<const std::string&>();
            if (!seen.insert(key).second && duplicate.empty()) duplicate = key;
          }
          return true;
        });
  } catch (const nlohmann::json::exception& e) {
    fail(file, std::string("header is not valid JSON (") + e.what() + ")");
  }
  if (!duplicate.empty()) fail(file, "header names tensor '" + duplicate + "' twice");
  if (!header.is_object()) fail(file, "header is not a JSON object");

  std::vector<TensorRecord> records;
  records.reserve(header.size());
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const auto& entry = it.value();
    if (name == "__metadata__") {
      if (!entry.is_object()) fail(file, "__metadata__ is not an object");
      for (auto m = entry.begin(); m != entry.end(); ++m) {
        if (!m.value().is_string()) fail(file, "__metadata__ entry '" + m.key() + "' is not a string");
        if (metadata) (*metadata)[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    auto where = "tensor '" + name + "' ";
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") ||
        !entry.contains("data_offsets"))
      fail(file, where + "lacks dtype, shape or data_offsets");
    if (!entry["dtype"].is_string()) fail(file, where + "has a non-string dtype");
    TensorRecord r;
    r.name = name;
    r.dtype = parse_dtype(entry["dtype"].get<std::string>(), file, name);
    const auto& shape = entry["shape"];
    const auto& offsets = entry["data_offsets"];
    if (!shape.is_array()) fail(file, where + "has a shape that is not a list");
    if (shape.size() > 16) fail(file, where + "has more than 16 dimensions");
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
        !offsets[1].is_number_unsigned())
      fail(file, where + "has malformed data_offsets");
    uint64_t numel = 1;
    bool overflow = false;
    for (const auto& d : shape) {
      if (!d.is_number_unsigned()) fail(file, where + "has a negative or non-integer dimension");
      uint64_t dim = d.get<uint64_t>();
      if (dim > uint64_t(std::numeric_limits<int64_t>::max())) overflow = true;
      if (dim != 0 && numel > std::numeric_limits<uint64_t>::max() / dim) overflow = true;
      numel *= dim;
      r.shape.push_back(int64_t(dim));
    }
    const uint64_t elem = c10::elementSize(r.dtype);
    if (overflow || numel > std::numeric_limits<uint64_t>::max() / elem)
      fail(file, where + "has a shape whose size overflows 64 bits");
    r.begin = offsets[0].get<uint64_t>();
    r.end = offsets[1].get<uint64_t>();
    if (r.begin > r.end) fail(file, where + "has data_offsets that end before they begin");
    if (r.end > data_size)
      fail(file, where + "claims bytes " + std::to_string(r.begin) + ".." + std::to_string(r.end) +
                     " but the data area has only " + std::to_string(data_size) +
                     " bytes (truncated or corrupt file)");
    if (numel * elem != r.end - r.begin)
      fail(file, where + "has shape and dtype needing " + std::to_string(numel * elem) + " bytes but " +
                     std::to_string(r.end - r.begin) + " are stored");
    records.push_back(std::move(r));
  }

  std::vector<const TensorRecord*> by_offset;
  for (const auto& r : records)
    if (r.end > r.begin) by_offset.push_back(&r);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const TensorRecord* a, const TensorRecord* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_offset.size(); ++i)
    if (by_offset[i]->begin < by_offset[i - 1]->end)
      fail(file, "tensors '" + by_offset[i - 1]->name + "' and '" + by_offset[i]->name + "' overlap");
  return records;
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, std::string("cannot open (") + std::strerror(errno) + ")");
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, "not a regular file");
  }
  const uint64_t size = uint64_t(st.st_size);
  if (size < 8) {
    ::close(fd);
    fail(path, "too short to be a safetensors file (" + std::to_string(size) + " bytes)");
  }
  // Private and writable: tensors viewing the file may be modified in place by
  // callers without touching the file (copy on write).
  void* map = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) fail(path, std::string("cannot map (") + std::strerror(errno) + ")");

  std::shared_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  file->mapping_ = map;
  file->mapping_size_ = size;
  file->self_ = file;
  const auto* bytes = static_cast<const uint8_t*>(map);
  const uint64_t header_len = read_u64_le(bytes);
  if (header_len > size - 8)
    fail(path, "header length " + std::to_string(header_len) + " exceeds the file size " +
                   std::to_string(size) + " (truncated or not a safetensors file)");
  if (header_len > kMaxHeaderBytes) fail(path, "header of " + std::to_string(header_len) + " bytes is too large");
  std::string json_text(reinterpret_cast<const char*>(bytes + 8), header_len);
  file->data_ = bytes + 8 + header_len;
  file->records_ = parse_safetensors_header(json_text, size - 8 - header_len, path, &file->metadata_);
  for (size_t i = 0; i < file->records_.size(); ++i) file->index_[file->records_[i].name] = i;
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_) munmap(mapping_, mapping_size_);
}

const TensorRecord& SafetensorsFile::record(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) fail(path_, "has no tensor '" + name + "'");
  return records_[it->second];
}

torch::Tensor SafetensorsFile::tensor(const std::string& name) const {
  const auto& r = record(name);
  auto options = torch::TensorOptions().dtype(r.dtype);
  uint8_t* ptr = const_cast<uint8_t*>(data_ + r.begin);
  const size_t elem = c10::elementSize(r.dtype);
  if (r.end == r.begin) return torch::empty(r.shape, options);
  if (reinterpret_cast<uintptr_t>(ptr) % elem != 0) {
    // Misaligned data (legal in the format): copy into aligned memory.
    auto out = torch::empty(r.shape, options);
    std::memcpy(out.data_ptr(), ptr, r.end - r.begin);
    return out;
  }
  auto keep_alive = self_.lock();
  return torch::from_blob(ptr, r.shape, [keep_alive](void*) {}, options);
}

TensorMap SafetensorsFile::tensors() const {
  TensorMap out;
  for (const auto& r : records_) out.emplace(r.name, tensor(r.name));
  return out;
}

TensorMap load_safetensors(const std::string& path, Metadata* metadata) {
  auto file = SafetensorsFile::open(path);
  if (metadata) *metadata = file->metadata();
  return file->tensors();
}

void save_safetensors(const std::string& path, const TensorMap& tensors, const Metadata& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<torch::Tensor> contiguous;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    auto c = t.detach().to(torch::kCPU).contiguous();
    const uint64_t bytes = uint64_t(c.numel()) * c.element_size();
    header[name] = {{"dtype", safetensors_dtype_name(c.scalar_type())},
                    {"shape", c.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    contiguous.push_back(std::move(c));
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keeps the data area 8-byte aligned
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw cn::Error(path + ": cannot write (" + std::strerror(errno) + ")");
    uint8_t len[8];
    for (int i = 0; i < 8; ++i) len[i] = uint8_t(uint64_t(text.size()) >> (8 * i));
    out.write(reinterpret_cast<const char*>(len), 8);
    out.write(text.data(), std::streamsize(text.size()));
    for (const auto& c : contiguous)
      out.write(static_cast<const char*>(c.data_ptr()), std::streamsize(c.numel() * c.element_size()));
    out.flush();
    if (!out) {
      std::remove(tmp.c_str());
      throw cn::Error(path + ": write failed (disk full?)");
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw cn::Error(path + ": cannot rename the written file into place (" + std::strerror(errno) + ")");
  }
}

}  // namespace cn::io
