#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "controlnet/error.h"
#include "io/safetensors.h"
#include "support/golden.h"

namespace fs = std::filesystem;
using cn::io::SafetensorsFile;

namespace {

fs::path temp_path(const std::string& name) {
  auto dir = fs::temp_directory_path() / "controlnet_io_test";
  fs::create_directories(dir);
  return dir / name;
}

// Writes a raw safetensors file: header text and `data_bytes` zero bytes.
fs::path write_raw(const std::string& name, const std::string& header, size_t data_bytes,
                   int64_t claimed_len = -1) {
  auto path = temp_path(name);
  std::ofstream out(path, std::ios::binary);
  uint64_t len = claimed_len >= 0 ? uint64_t(claimed_len) : header.size();
  for (int i = 0; i < 8; ++i) out.put(char((len >> (8 * i)) & 0xff));
  out << header;
  out << std::string(data_bytes, '\0');
  return path;
}

std::string open_error(const fs::path& path) {
  try {
    SafetensorsFile::open(path.string());
  } catch (const cn::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Safetensors, RoundTripsEveryDtypeAndMetadata) {
  cn::io::TensorMap tensors;
  tensors["f32"] = torch::randn({3, 5});
  tensors["f16"] = torch::randn({4}).to(torch::kFloat16);
  tensors["bf16"] = torch::randn({2, 2}).to(torch::kBFloat16);
  tensors["f64"] = torch::randn({7}, torch::kFloat64);
  tensors["i64"] = torch::arange(10);
  tensors["i32"] = torch::arange(3).to(torch::kInt32);
  tensors["i16"] = torch::arange(3).to(torch::kInt16);
  tensors["i8"] = torch::arange(3).to(torch::kInt8);
  tensors["u8"] = torch::arange(3).to(torch::kUInt8);
  tensors["bool"] = torch::tensor({true, false});
  tensors["scalar"] = torch::tensor(3.5f);
  tensors["empty"] = torch::empty({0, 4});
  auto path = temp_path("roundtrip.safetensors");
  cn::io::save_safetensors(path.string(), tensors, {{"format", "pt"}, {"note", "hello"}});
  cn::io::Metadata meta;
  auto loaded = cn::io::load_safetensors(path.string(), &meta);
  EXPECT_EQ(meta.at("note"), "hello");
  ASSERT_EQ(loaded.size(), tensors.size());
  for (const auto& [name, t] : tensors) {
    SCOPED_TRACE(name);
    EXPECT_EQ(loaded.at(name).scalar_type(), t.scalar_type());
    EXPECT_EQ(loaded.at(name).sizes(), t.sizes());
    EXPECT_TRUE(torch::equal(loaded.at(name), t));
  }
  EXPECT_FALSE(fs::exists(path.string() + ".tmp"));
}

TEST(Safetensors, TensorsViewTheMappingAndOutliveTheFileObject) {
  auto path = temp_path("view.safetensors");
  cn::io::save_safetensors(path.string(), {{"x", torch::arange(16, torch::kFloat32)}});
  torch::Tensor x;
  {
    auto file = SafetensorsFile::open(path.string());
    x = file->tensor("x");
  }
  EXPECT_FLOAT_EQ(x[15].item<float>(), 15.f);
  x.mul_(2);  // copy-on-write: the file is unchanged
  EXPECT_FLOAT_EQ(SafetensorsFile::open(path.string())->tensor("x")[15].item<float>(), 15.f);
}

struct HostileCase {
  const char* name;
  std::string header;
  size_t data_bytes;
  int64_t claimed_len;
  const char* expected;
};

TEST(Safetensors, RefusesHostileHeadersWithOneClearMessage) {
  const std::vector<HostileCase> cases = {
      {"header_beyond_file", R"({})", 0, 1 << 20, "exceeds the file size"},
      {"not_json", R"({"a": )", 0, -1, "not valid JSON"},
      {"not_object", R"([1,2])", 0, -1, "not a JSON object"},
      {"offsets_out_of_range", R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8, -1,
       "tensor 'w' claims bytes 0..16 but the data area has only 8"},
      {"reversed_offsets", R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", 8, -1,
       "end before they begin"},
      {"overlap",
       R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
       12, -1, "tensors 'a' and 'b' overlap"},
      {"byte_length_mismatch", R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8, -1,
       "needing 12 bytes but 8 are stored"},
      {"dtype_unknown", R"({"w":{"dtype":"F8_E9","shape":[1],"data_offsets":[0,1]}})", 1, -1,
       "unsupported dtype 'F8_E9'"},
      {"shape_overflow",
       R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,4]}})", 4, -1,
       "overflows 64 bits"},
      {"claimed_100GB", R"({"w":{"dtype":"F32","shape":[25000000000],"data_offsets":[0,100000000000]}})",
       16, -1, "tensor 'w' claims bytes 0..100000000000"},
      {"negative_dim", R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4, -1,
       "negative or non-integer dimension"},
      {"duplicate_key",
       R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"w":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
       2, -1, "names tensor 'w' twice"},
      {"non_utf8_name", std::string("{\"w\xff\xfe\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}"), 1,
       -1, "not valid JSON"},
      {"missing_fields", R"({"w":{"dtype":"U8"}})", 0, -1, "lacks dtype, shape or data_offsets"},
      {"metadata_not_strings", R"({"__metadata__":{"a":1}})", 0, -1, "is not a string"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    auto path = write_raw(std::string(c.name) + ".safetensors", c.header, c.data_bytes, c.claimed_len);
    auto start = std::chrono::steady_clock::now();
    auto message = open_error(path);
    auto elapsed = std::chrono::steady_clock::now() - start;
    EXPECT_NE(message.find(path.string()), std::string::npos) << message;
    EXPECT_NE(message.find(c.expected), std::string::npos) << message;
    EXPECT_LT(elapsed, std::chrono::seconds(2));
  }
}

TEST(Safetensors, RefusesTruncatedFiles) {
  auto path = temp_path("full.safetensors");
  cn::io::save_safetensors(path.string(), {{"w", torch::ones({64})}});
  const auto size = fs::file_size(path);
  for (uintmax_t keep : {uintmax_t(0), uintmax_t(5), uintmax_t(20), size - 1}) {
    SCOPED_TRACE(keep);
    auto cut = temp_path("truncated.safetensors");
    fs::copy_file(path, cut, fs::copy_options::overwrite_existing);
    fs::resize_file(cut, keep);
    auto message = open_error(cut);
    EXPECT_FALSE(message.empty());
    EXPECT_NE(message.find(cut.string()), std::string::npos) << message;
  }
}

TEST(Safetensors, MissingFileIsAClearError) {
  auto message = open_error("/nonexistent/model.safetensors");
  EXPECT_NE(message.find("/nonexistent/model.safetensors: cannot open"), std::string::npos) << message;
}

TEST(Safetensors, ReadsEveryGoldenFile) {
  CN_REQUIRE_GOLDEN();
  size_t files = 0;
  for (const auto& entry : fs::recursive_directory_iterator(cn::testing::golden_root())) {
    if (entry.path().extension() != ".safetensors") continue;
    auto file = SafetensorsFile::open(entry.path().string());
    EXPECT_FALSE(file->records().empty()) << entry.path();
    for (const auto& r : file->records()) ASSERT_TRUE(file->tensor(r.name).defined());
    ++files;
  }
  EXPECT_GT(files, 10u);
}
