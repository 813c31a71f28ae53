// The restricted unpickler: real checkpoints load, hostile pickles are refused.
#include <gtest/gtest.h>

#include "controlnet/error.h"
#include "io/pickle.h"
#include "support/golden.h"

using namespace cn;

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
