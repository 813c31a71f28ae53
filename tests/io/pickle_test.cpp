// The restricted unpickler: real checkpoints load, hostile pickles are refused.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "controlnet/error.h"
#include "io/pickle.h"
#include "support/golden.h"
#include "support/torch_zip.h"

using namespace cn;
using cn::testing::le_bytes;

namespace {

// A storage source that serves zeros of the asked size.
torch::Tensor zeros_storage(const std::string&, torch::ScalarType dtype, int64_t numel) {
  return torch::zeros({numel}, torch::dtype(dtype));
}

std::string expect_refused(const std::string& pickle) {
  try {
    io::unpickle_state_dict(pickle, "evil.pth", zeros_storage);
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "a hostile pickle was accepted";
  return "";
}

// Pickle bytes from pieces; hex escapes never run into the following text.
std::string bytes(std::initializer_list<std::string> pieces) {
  std::string out;
  for (const auto& p : pieces) out += p;
  return out;
}
std::string u8(int v) { return std::string(1, char(v)); }
std::string unicode(const std::string& s) {  // BINUNICODE
  const uint32_t n = s.size();
  return "X" + std::string(reinterpret_cast<const char*>(&n), 4) + s;
}

// {"w": _rebuild_tensor_v2(('storage', FloatStorage, '0', 'cpu', numel), 0, size, stride, False, {})}
std::string tensor_pickle(int32_t numel, const std::string& size_and_stride) {
  return bytes({u8(0x80), u8(2), "}", unicode("w"), "ctorch._utils\n_rebuild_tensor_v2\n", "(",
                "(", unicode("storage"), "ctorch\nFloatStorage\n", unicode("0"), unicode("cpu"), "J",
                std::string(reinterpret_cast<const char*>(&numel), 4), "t", "Q", "K", u8(0), size_and_stride, u8(0x89),
                "}", "t", "R", "s", "."});
}
std::string int_pair(int a, int b) { return bytes({"K", u8(a), "K", u8(b), u8(0x86)}); }

// {"w": a float tensor of `numel` elements viewing storage '0' of that size};
// numel as an 8-byte LONG1 so that it can claim more than 2^31.
std::string wide_tensor_pickle(int64_t numel) {
  return bytes({u8(0x80), u8(2), "}", unicode("w"), "ctorch._utils\n_rebuild_tensor_v2\n", "(", "(", unicode("storage"),
                "ctorch\nFloatStorage\n", unicode("0"), unicode("cpu"), u8(0x8a), u8(8), le_bytes(uint64_t(numel), 8),
                "t", "Q", "K", u8(0), u8(0x8a), u8(8), le_bytes(uint64_t(numel), 8), u8(0x85), "K", u8(1), u8(0x85),
                u8(0x89), "}", "t", "R", "s", "."});
}

std::filesystem::path write_zip(const std::string& file, const std::vector<cn::testing::ZipEntry>& entries) {
  const auto path = std::filesystem::temp_directory_path() / ("cn_pickle_" + file);
  cn::testing::write_zip(path, entries);
  return path;
}

std::string load_error(const std::filesystem::path& path) {
  try {
    io::load_torch_checkpoint(path.string());
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << path << " was accepted";
  return "";
}

}  // namespace

TEST(Pickle, ReadsTensorsFromAMinimalPickle) {
  // size (2, 3), stride (3, 1) on a 6-element storage
  auto t = io::unpickle_state_dict(tensor_pickle(6, int_pair(2, 3) + int_pair(3, 1)), "ok.pth",
                                   [](const std::string&, torch::ScalarType dtype, int64_t n) {
                                     return torch::arange(n, torch::dtype(dtype));
                                   });
  ASSERT_EQ(t.count("w"), 1u);
  EXPECT_TRUE(t["w"].equal(torch::arange(6, torch::kFloat).view({2, 3})));
}

TEST(Pickle, RefusesHostileInput) {
  // os.system("echo pwned") via GLOBAL + REDUCE
  auto msg = expect_refused(bytes({u8(0x80), u8(2), "cposix\nsystem\n", unicode("echo pwned"), u8(0x85), "R", "."}));
  EXPECT_NE(msg.find("refusing to call posix.system"), std::string::npos) << msg;
  EXPECT_NE(msg.find("evil.pth"), std::string::npos) << msg;
  msg = expect_refused(bytes({u8(0x80), u8(2), "cbuiltins\neval\n", unicode("1"), u8(0x85), "R", "."}));
  EXPECT_NE(msg.find("builtins.eval"), std::string::npos) << msg;
  // A tensor reaching past its storage: size 4x4 on 6 elements.
  msg = expect_refused(tensor_pickle(6, int_pair(4, 4) + int_pair(4, 1)));
  EXPECT_NE(msg.find("storage"), std::string::npos) << msg;
  const std::string head = bytes({u8(0x80), u8(2)});
  EXPECT_NE(expect_refused(head + "}h" + u8(5) + "."), "");                     // memo index never stored
  EXPECT_NE(expect_refused(head + "X" + u8(0xff) + u8(0xff) + u8(0xff) + u8(0x7f) + "abc."), "");  // string past the end
  EXPECT_NE(expect_refused(head + "}"), "");                                    // truncated
  EXPECT_NE(expect_refused(head + u8(0xff) + "."), "");                         // unknown opcode
  EXPECT_NE(expect_refused(head + "s."), "");                                   // stack underflow
}

TEST(Pickle, RefusesEveryWayOfCallingAGlobal) {
  const std::string head = bytes({u8(0x80), u8(2)});
  const std::string arg = unicode("echo pwned");
  const std::vector<std::pair<std::string, std::string>> cases = {
      // INST: module and name inline, arguments since the mark.
      {head + "(" + arg + "iposix\nsystem\n.", "refusing to call posix.system"},
      // OBJ: the class is the first item after the mark.
      {head + "(cbuiltins\nexec\n" + arg + "o.", "refusing to call builtins.exec"},
      // NEWOBJ and NEWOBJ_EX.
      {head + "cbuiltins\neval\n" + arg + u8(0x85) + u8(0x81) + ".", "refusing to call builtins.eval"},
      {head + "cbuiltins\neval\n" + arg + u8(0x85) + "}" + u8(0x92) + ".", "refusing to call builtins.eval"},
      // STACK_GLOBAL with the names on the stack, then REDUCE.
      {head + unicode("os") + unicode("system") + u8(0x93) + arg + u8(0x85) + "R.", "refusing to call os.system"},
      // BUILD: setting state on a function object (how __setstate__ attacks work).
      {head + "cbuiltins\nexec\n" + arg + "b.", "refusing to BUILD builtins.exec"},
  };
  for (const auto& [pickle, expected] : cases) {
    const auto message = expect_refused(pickle);
    EXPECT_NE(message.find(expected), std::string::npos) << message;
  }
}

TEST(Pickle, DeepNestingAndHugeMemoIndicesAreBounded) {
  const std::string head = bytes({u8(0x80), u8(2)});
  // A million lists, each appended into the one below: nested 10^6 deep. Must
  // be refused (the root is not a dict) and freed without a stack overflow.
  const int depth = 1000000;
  auto message = expect_refused(head + std::string(depth, ']') + std::string(depth - 1, 'a') + ".");
  EXPECT_NE(message.find("not a dict of tensors"), std::string::npos) << message;
  message = expect_refused(head + std::string(depth, '(') + "l.");
  EXPECT_NE(message.find("not a dict"), std::string::npos) << message;
  // LONG_BINPUT / LONG_BINGET at 2^32 - 1.
  message = expect_refused(head + "}r" + std::string(4, char(0xff)) + ".");
  EXPECT_NE(message.find("memo index 4294967295 out of bounds"), std::string::npos) << message;
  message = expect_refused(head + "j" + std::string(4, char(0xff)) + ".");
  EXPECT_NE(message.find("memo index 4294967295 was never stored"), std::string::npos) << message;
}

TEST(Pickle, ReadsWhatTorchSaveWrites) {
  io::TensorMap tensors = {{"a.weight", torch::randn({3, 4})},
                           {"b.half", torch::randn({5}).to(torch::kHalf)},
                           {"c.bf16", torch::randn({2, 2}).to(torch::kBFloat16)},
                           {"d.steps", torch::tensor({int64_t(7)})},
                           {"e.mask", torch::tensor({true, false})}};
  const auto path = std::filesystem::temp_directory_path() / "cn_pickle_written.pth";
  cn::testing::write_torch_checkpoint(path, tensors);
  const auto loaded = io::load_torch_checkpoint(path.string());
  ASSERT_EQ(loaded.size(), tensors.size());
  for (const auto& [name, t] : tensors) {
    ASSERT_EQ(loaded.count(name), 1u) << name;
    EXPECT_EQ(loaded.at(name).scalar_type(), t.scalar_type()) << name;
    EXPECT_TRUE(loaded.at(name).equal(t)) << name;
  }
}

TEST(Pickle, ZipArchivesAreCheckedBeforeAnythingIsRead) {
  const std::string version = "3\n";
  // A well-formed archive loads: the writer below is faithful enough.
  const std::string four_floats(16, '\0');
  auto path = write_zip("ok.pth", {{"archive/data.pkl", wide_tensor_pickle(4)}, {"archive/version", version},
                                   {"archive/data/0", four_floats}});
  const auto loaded = io::load_torch_checkpoint(path.string());
  ASSERT_EQ(loaded.count("w"), 1u);
  EXPECT_EQ(loaded.at("w").numel(), 4);
  // A storage claiming 100 GB (25e9 floats) in a 16-byte record: refused, nothing allocated.
  path = write_zip("claims_100gb.pth", {{"archive/data.pkl", wide_tensor_pickle(25000000000)},
                                        {"archive/version", version}, {"archive/data/0", four_floats}});
  auto start = std::chrono::steady_clock::now();
  auto message = load_error(path);
  EXPECT_NE(message.find("storage claims 25000000000 elements but holds 16 bytes"), std::string::npos) << message;
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  // A zip bomb: a deflated entry claiming 4 GB. Refused before inflating.
  path = write_zip("bomb.pth", {{"archive/data.pkl", wide_tensor_pickle(4)}, {"archive/version", version},
                                {"archive/data/0", std::string(64, 'x'), 8, 0xfffffff0u}});
  start = std::chrono::steady_clock::now();
  message = load_error(path);
  EXPECT_NE(message.find("archive/data/0 is compressed"), std::string::npos) << message;
  EXPECT_NE(message.find("zip bomb"), std::string::npos) << message;
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  // A stored entry whose claimed size exceeds the file.
  path = write_zip("oversized.pth", {{"archive/data.pkl", wide_tensor_pickle(4)}, {"archive/version", version},
                                     {"archive/data/0", four_floats, 0, 1u << 30}});
  message = load_error(path);
  EXPECT_NE(message.find("more than the file holds"), std::string::npos) << message;
  // A truncated archive (the central directory cut off).
  const auto full = std::filesystem::file_size(path);
  std::filesystem::resize_file(path, full - 30);
  message = load_error(path);
  EXPECT_NE(message.find(path.string()), std::string::npos) << message;
}

TEST(Pickle, ZipCheckpointEqualsItsSafetensorsTwin) {
  CN_REQUIRE_GOLDEN();
  const auto dir = cn::testing::golden_root() / "mini-sd15" / "ldm";
  if (!std::filesystem::exists(dir / "control_sd15_mini.pth")) GTEST_SKIP() << "no .pth in this fixture profile";
  auto pth = io::load_torch_checkpoint((dir / "control_sd15_mini.pth").string());
  auto st = io::load_safetensors((dir / "control_sd15_mini.safetensors").string());
  ASSERT_EQ(pth.size(), st.size());
  for (const auto& [name, t] : st) {
    ASSERT_TRUE(pth.count(name)) << name;
    EXPECT_TRUE(pth[name].equal(t)) << name;
  }
}

TEST(Pickle, LegacyCheckpointLoads) {
  CN_REQUIRE_GOLDEN();
  const auto file = cn::testing::golden_root() / "preprocess" / "weights" / "table5_pidinet.legacy.pth";
  if (!std::filesystem::exists(file)) GTEST_SKIP() << "no legacy checkpoint in this fixture set";
  auto t = io::load_torch_checkpoint(file.string());
  EXPECT_GT(t.size(), 10u);
  for (const auto& [name, v] : t) EXPECT_TRUE(v.isfinite().all().item<bool>()) << name;
}
