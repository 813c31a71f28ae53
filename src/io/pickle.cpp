#include "io/pickle.h"

#include <caffe2/serialize/inline_container.h>

#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <set>

#include "controlnet/error.h"

namespace cn::io {
namespace {

struct Value;
using ValuePtr = std::shared_ptr<Value>;

struct Value {
  enum class Kind { none, boolean, integer, real, string, bytes, list, tuple, dict, tensor, storage, global, inert, mark };
  Kind kind = Kind::none;
  int64_t integer = 0;
  double real = 0;
  std::string text;  // string, bytes, global name
  std::vector<ValuePtr> items;
  std::vector<std::pair<ValuePtr, ValuePtr>> entries;
  torch::Tensor tensor;  // tensor or storage contents

  Value() = default;
  Value(const Value&) = delete;
  Value& operator=(const Value&) = delete;
  // Iterative, so that a hostile pickle nesting containers a million deep
  // cannot overflow the stack when it is freed.
  ~Value() {
    std::vector<ValuePtr> pending;
    auto release_children = [&pending](Value& v) {
      for (auto& item : v.items) pending.push_back(std::move(item));
      for (auto& [key, value] : v.entries) {
        pending.push_back(std::move(key));
        pending.push_back(std::move(value));
      }
      v.items.clear();
      v.entries.clear();
    };
    release_children(*this);
    while (!pending.empty()) {
      ValuePtr v = std::move(pending.back());
      pending.pop_back();
      if (v && v.use_count() == 1) release_children(*v);
    }
  }
};

ValuePtr make(Value::Kind kind) {
  auto v = std::make_shared<Value>();
  v->kind = kind;
  return v;
}

// Globals that build state dicts and tensors.
const std::map<std::string, torch::ScalarType> kStorages = {
    {"torch.FloatStorage", torch::kFloat},   {"torch.DoubleStorage", torch::kDouble}, {"torch.HalfStorage", torch::kHalf},
    {"torch.BFloat16Storage", torch::kBFloat16}, {"torch.LongStorage", torch::kLong}, {"torch.IntStorage", torch::kInt},
    {"torch.ShortStorage", torch::kShort},   {"torch.CharStorage", torch::kChar},     {"torch.ByteStorage", torch::kByte},
    {"torch.BoolStorage", torch::kBool}};
// Globals found in the non-weight parts of real checkpoints (Lightning
// callbacks and hyper-parameters, numpy scalars in training state): they may
// be "called", producing an inert placeholder; nothing is executed.
bool inert_allowed(const std::string& name) {
  static const char* prefixes[] = {"pytorch_lightning.", "lightning.", "lightning_fabric.", "numpy.core.multiarray.scalar",
                                   "numpy.dtype", "numpy.core.multiarray._reconstruct", "numpy.ndarray",
                                   "argparse.Namespace", "torch.torch_version.TorchVersion", "_codecs.encode",
                                   "builtins.set", "__builtin__.set", "omegaconf.", "typing."};
  for (const char* p : prefixes)
    if (name.rfind(p, 0) == 0) return true;
  return false;
}

class Unpickler {
 public:
  using StorageFn = std::function<torch::Tensor(const std::string&, torch::ScalarType, int64_t)>;
  Unpickler(const std::string& data, size_t pos, std::string source, StorageFn storage)
      : data_(data), pos_(pos), source_(std::move(source)), storage_(std::move(storage)) {}

  ValuePtr run() {
    while (true) {
      const uint8_t op = byte();
      switch (op) {
        case 0x80: byte(); break;                      // PROTO
        case 0x95: read(8); break;                     // FRAME
        case '.': return pop();                        // STOP
        case '(': push(make(Value::Kind::mark)); break;  // MARK
        case 'N': push(make(Value::Kind::none)); break;
        case 0x88: push(boolean(true)); break;
        case 0x89: push(boolean(false)); break;
        case 'J': push(integer(int32_t(le(4)))); break;                // BININT
        case 'K': push(integer(le(1))); break;                         // BININT1
        case 'M': push(integer(le(2))); break;                         // BININT2
        case 0x8a: push(long_int(le(1))); break;                       // LONG1
        case 0x8b: push(long_int(le(4))); break;                       // LONG4
        case 'I': push(text_int(line())); break;                       // INT
        case 'L': push(text_int(line())); break;                       // LONG
        case 'G': { auto v = make(Value::Kind::real); uint64_t b = be(8); std::memcpy(&v->real, &b, 8); push(v); break; }
        case 'X': push(string(read(le(4)), Value::Kind::string)); break;   // BINUNICODE
        case 0x8c: push(string(read(le(1)), Value::Kind::string)); break;  // SHORT_BINUNICODE
        case 0x8d: push(string(read(le(8)), Value::Kind::string)); break;  // BINUNICODE8
        case 'T': push(string(read(le(4)), Value::Kind::string)); break;   // BINSTRING
        case 'U': push(string(read(le(1)), Value::Kind::string)); break;   // SHORT_BINSTRING
        case 'B': push(string(read(le(4)), Value::Kind::bytes)); break;    // BINBYTES
        case 'C': push(string(read(le(1)), Value::Kind::bytes)); break;    // SHORT_BINBYTES
        case 0x8e: push(string(read(le(8)), Value::Kind::bytes)); break;   // BINBYTES8
        case '}': push(make(Value::Kind::dict)); break;
        case ']': push(make(Value::Kind::list)); break;
        case ')': push(make(Value::Kind::tuple)); break;
        case 't': { auto t = make(Value::Kind::tuple); t->items = pop_to_mark(); push(t); break; }
        case 0x85: push(tuple(1)); break;
        case 0x86: push(tuple(2)); break;
        case 0x87: push(tuple(3)); break;
        case 'l': { auto l = make(Value::Kind::list); l->items = pop_to_mark(); push(l); break; }
        case 'd': { auto d = make(Value::Kind::dict); auto xs = pop_to_mark(); pairs_into(d, xs); push(d); break; }
        case 'a': { auto v = pop(); expect(top(), Value::Kind::list, "APPEND")->items.push_back(v); break; }
        case 'e': { auto xs = pop_to_mark(); auto& l = expect(top(), Value::Kind::list, "APPENDS")->items; l.insert(l.end(), xs.begin(), xs.end()); break; }
        case 's': { auto v = pop(); auto k = pop(); expect(top(), Value::Kind::dict, "SETITEM")->entries.emplace_back(k, v); break; }
        case 'u': { auto xs = pop_to_mark(); pairs_into(expect(top(), Value::Kind::dict, "SETITEMS"), xs); break; }
        case 'q': memo(le(1)); break;   // BINPUT
        case 'r': memo(le(4)); break;   // LONG_BINPUT
        case 0x94: memo(memo_.size()); break;  // MEMOIZE
        case 'h': push(recall(le(1))); break;  // BINGET
        case 'j': push(recall(le(4))); break;  // LONG_BINGET
        case '0': pop(); break;                // POP
        case '1': pop_to_mark(); break;        // POP_MARK
        case '2': push(top()); break;          // DUP
        case 'c': { auto module = line(); auto name = line(); push(global(module + "." + name)); break; }
        case 0x93: { auto name = pop(); auto module = pop(); push(global(module->text + "." + name->text)); break; }
        case 'R': { auto args = pop(); auto fn = pop(); push(call(fn, args)); break; }       // REDUCE
        case 0x81: { auto args = pop(); auto cls = pop(); push(call(cls, args)); break; }    // NEWOBJ
        case 0x92: { pop(); auto args = pop(); auto cls = pop(); push(call(cls, args)); break; }  // NEWOBJ_EX
        case 'i': {                                                                         // INST
          auto module = line();
          auto name = line();
          auto args = make(Value::Kind::tuple);
          args->items = pop_to_mark();
          push(call(global(module + "." + name), args));
          break;
        }
        case 'o': {                                                                         // OBJ
          auto items = pop_to_mark();
          if (items.empty()) fail("OBJ without a class");
          auto args = make(Value::Kind::tuple);
          args->items.assign(items.begin() + 1, items.end());
          push(call(items.front(), args));
          break;
        }
        case 'b': { auto state = pop(); build(top(), state); break; }                       // BUILD
        case 'Q': push(persistent(pop())); break;                                           // BINPERSID
        default: fail("unsupported pickle opcode 0x" + hex(op));
      }
    }
  }
  size_t position() const { return pos_; }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw Error(source_ + ": " + what + " (at byte " + std::to_string(pos_) + ")");
  }
  static std::string hex(uint8_t b) {
    const char* d = "0123456789abcdef";
    return {d[b >> 4], d[b & 15]};
  }
  uint8_t byte() {
    if (pos_ >= data_.size()) fail("truncated pickle");
    return uint8_t(data_[pos_++]);
  }
  std::string read(uint64_t n) {
    if (n > data_.size() - pos_) fail("a string or frame claims " + std::to_string(n) + " bytes past the end");
    auto s = data_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  uint64_t le(int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; ++i) v |= uint64_t(byte()) << (8 * i);
    return v;
  }
  uint64_t be(int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; ++i) v = (v << 8) | byte();
    return v;
  }
  std::string line() {
    const auto end = data_.find('\n', pos_);
    if (end == std::string::npos) fail("unterminated line");
    auto s = data_.substr(pos_, end - pos_);
    pos_ = end + 1;
    return s;
  }

  static ValuePtr boolean(bool b) { auto v = make(Value::Kind::boolean); v->integer = b; return v; }
  static ValuePtr integer(int64_t i) { auto v = make(Value::Kind::integer); v->integer = i; return v; }
  static ValuePtr string(std::string s, Value::Kind kind) { auto v = make(kind); v->text = std::move(s); return v; }
  ValuePtr long_int(uint64_t n) {
    const auto bytes = read(n);
    if (n > 8) {
      // Only PyTorch's legacy magic number is this wide; keep its bytes.
      auto big = integer(0);
      big->text = bytes;
      return big;
    }
    int64_t v = 0;
    for (size_t i = 0; i < n; ++i) v |= int64_t(uint8_t(bytes[i])) << (8 * i);
    if (n > 0 && n < 8 && (uint8_t(bytes[n - 1]) & 0x80)) v -= int64_t(1) << (8 * n);  // two's complement
    return integer(v);
  }
  ValuePtr text_int(const std::string& s) {
    if (s == "01") return boolean(true);
    if (s == "00") return boolean(false);
    try {
      return integer(std::stoll(s.back() == 'L' ? s.substr(0, s.size() - 1) : s));
    } catch (...) {
      fail("bad integer literal");
    }
  }

  void push(ValuePtr v) {
    if (stack_.size() >= kMaxStack) fail("pickle stack deeper than " + std::to_string(kMaxStack));
    stack_.push_back(std::move(v));
  }
  ValuePtr pop() {
    if (stack_.empty()) fail("pickle stack underflow");
    auto v = stack_.back();
    stack_.pop_back();
    return v;
  }
  ValuePtr top() {
    if (stack_.empty()) fail("pickle stack underflow");
    return stack_.back();
  }
  std::vector<ValuePtr> pop_to_mark() {
    std::vector<ValuePtr> out;
    while (true) {
      auto v = pop();
      if (v->kind == Value::Kind::mark) break;
      out.push_back(v);
    }
    return {out.rbegin(), out.rend()};
  }
  ValuePtr tuple(size_t n) {
    auto t = make(Value::Kind::tuple);
    t->items.resize(n);
    for (size_t i = n; i-- > 0;) t->items[i] = pop();
    return t;
  }
  ValuePtr expect(ValuePtr v, Value::Kind kind, const char* op) {
    if (v->kind == Value::Kind::inert) return make(kind);  // writes into placeholders are dropped
    if (v->kind != kind) fail(std::string(op) + " on the wrong kind of object");
    return v;
  }
  void pairs_into(const ValuePtr& d, const std::vector<ValuePtr>& xs) {
    if (xs.size() % 2) fail("odd number of dict items");
    for (size_t i = 0; i < xs.size(); i += 2) d->entries.emplace_back(xs[i], xs[i + 1]);
  }
  void memo(uint64_t index) {
    if (index > kMaxMemo) fail("memo index " + std::to_string(index) + " out of bounds");
    memo_[index] = top();
  }
  ValuePtr recall(uint64_t index) {
    auto it = memo_.find(index);
    if (it == memo_.end()) fail("memo index " + std::to_string(index) + " was never stored");
    return it->second;
  }

  ValuePtr global(const std::string& name) {
    auto v = make(Value::Kind::global);
    v->text = name;
    return v;
  }

  ValuePtr call(const ValuePtr& fn, const ValuePtr& args) {
    if (fn->kind == Value::Kind::inert) return fn;
    if (fn->kind != Value::Kind::global) fail("call of a non-global object");
    const auto& name = fn->text;
    if (name == "collections.OrderedDict") return make(Value::Kind::dict);
    if (name == "torch._utils._rebuild_parameter") return arg(args, 0, name);
    if (name == "torch._utils._rebuild_tensor_v2" || name == "torch._utils._rebuild_tensor") return rebuild_tensor(args);
    if (inert_allowed(name)) return make(Value::Kind::inert);
    fail("refusing to call " + name);
  }
  ValuePtr arg(const ValuePtr& args, size_t i, const std::string& fn) {
    if (args->kind != Value::Kind::tuple || args->items.size() <= i) fail(fn + ": missing argument " + std::to_string(i));
    return args->items[i];
  }
  std::vector<int64_t> ints(const ValuePtr& v, const char* what) {
    if (v->kind != Value::Kind::tuple && v->kind != Value::Kind::list) fail(std::string(what) + " is not a tuple");
    std::vector<int64_t> out;
    for (const auto& x : v->items) {
      if (x->kind != Value::Kind::integer || x->integer < 0) fail(std::string(what) + " holds a non-integer");
      out.push_back(x->integer);
    }
    return out;
  }
  ValuePtr rebuild_tensor(const ValuePtr& args) {
    const std::string fn = "_rebuild_tensor_v2";
    auto storage = arg(args, 0, fn);
    if (storage->kind != Value::Kind::storage) fail(fn + ": first argument is not a storage");
    auto offset_v = arg(args, 1, fn);
    if (offset_v->kind != Value::Kind::integer || offset_v->integer < 0) fail(fn + ": bad storage offset");
    const auto size = ints(arg(args, 2, fn), "size"), stride = ints(arg(args, 3, fn), "stride");
    if (size.size() != stride.size()) fail(fn + ": size and stride differ in length");
    // The furthest element must lie inside the storage.
    int64_t extent = offset_v->integer;
    bool empty = false;
    for (size_t i = 0; i < size.size(); ++i) {
      if (size[i] == 0) empty = true;
      if (size[i] > 0 && stride[i] > 0 && size[i] - 1 > (INT64_MAX - extent) / stride[i]) fail(fn + ": size overflows");
      if (size[i] > 0) extent += (size[i] - 1) * stride[i];
    }
    const auto& data = storage->tensor;
    if (!empty && extent >= data.numel())
      fail(fn + ": tensor of size " + c10::str(size) + " reaches element " + std::to_string(extent) +
           " of a storage of " + std::to_string(data.numel()));
    auto v = make(Value::Kind::tensor);
    v->tensor = empty ? torch::empty(size, data.options()) : data.as_strided(size, stride, offset_v->integer);
    return v;
  }
  ValuePtr persistent(const ValuePtr& id) {
    // ('storage', StorageClass, key, location, numel[, view_metadata])
    if (id->kind != Value::Kind::tuple || id->items.size() < 5 || id->items[0]->text != "storage")
      fail("unsupported persistent id");
    const auto& cls = id->items[1];
    auto it = cls->kind == Value::Kind::global ? kStorages.find(cls->text) : kStorages.end();
    if (it == kStorages.end()) fail("unknown storage type " + cls->text);
    const auto& key = id->items[2];
    const auto& numel = id->items[4];
    if (numel->kind != Value::Kind::integer || numel->integer < 0) fail("bad storage size");
    auto v = make(Value::Kind::storage);
    const std::string key_text = key->kind == Value::Kind::integer ? std::to_string(key->integer) : key->text;
    auto cached = storages_.find(key_text);
    v->tensor = cached != storages_.end() ? cached->second : storage_(key_text, it->second, numel->integer);
    storages_[key_text] = v->tensor;
    return v;
  }
  void build(const ValuePtr& obj, const ValuePtr& state) {
    // Only placeholders and OrderedDicts (whose BUILD state is empty) are built.
    if (obj->kind == Value::Kind::inert || obj->kind == Value::Kind::dict) return;
    if (obj->kind == Value::Kind::tensor) return;  // _rebuild_parameter's extra state
    if (obj->kind == Value::Kind::global) fail("refusing to BUILD " + obj->text);
    fail("BUILD on an unsupported object");
  }

  static constexpr size_t kMaxStack = 1 << 20;
  static constexpr uint64_t kMaxMemo = 1 << 24;
  const std::string& data_;
  size_t pos_;
  std::string source_;
  StorageFn storage_;
  std::vector<ValuePtr> stack_;
  std::map<uint64_t, ValuePtr> memo_;
  std::map<std::string, torch::Tensor> storages_;
};

void flatten(const ValuePtr& dict, const std::string& prefix, TensorMap& out, int depth = 0) {
  if (depth > 8) return;
  for (const auto& [k, v] : dict->entries) {
    if (k->kind != Value::Kind::string) continue;
    const auto name = prefix.empty() ? k->text : prefix + "." + k->text;
    if (v->kind == Value::Kind::tensor) out[name] = v->tensor;
    else if (v->kind == Value::Kind::dict) flatten(v, name, out, depth + 1);
  }
}

TensorMap state_dict_of(const ValuePtr& root, const std::string& source) {
  if (root->kind != Value::Kind::dict) throw Error(source + ": the checkpoint is not a dict of tensors");
  for (const auto& [k, v] : root->entries)
    if (k->kind == Value::Kind::string && k->text == "state_dict" && v->kind == Value::Kind::dict) {
      TensorMap out;
      flatten(v, "", out);
      return out;
    }
  TensorMap out;
  flatten(root, "", out);
  return out;
}

torch::Tensor bytes_to_storage(const char* data, size_t bytes, torch::ScalarType dtype, int64_t numel,
                               const std::string& what) {
  const size_t element = c10::elementSize(dtype);
  if (numel < 0 || uint64_t(numel) > bytes / element)
    throw Error(what + ": storage claims " + std::to_string(numel) + " elements but holds " + std::to_string(bytes) + " bytes");
  auto t = torch::empty({numel}, torch::dtype(dtype));
  std::memcpy(t.data_ptr(), data, numel * element);
  return t;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot open " + path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// torch.save writes every archive entry stored (uncompressed). Checking the
// central directory first means a compressed entry - a zip bomb claiming
// gigabytes from a few bytes - is refused before anything is inflated, and no
// entry may claim more bytes than the file has.
void check_zip_entries(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  in.seekg(0, std::ios::end);
  const uint64_t file_size = uint64_t(in.tellg());
  auto read_at = [&](uint64_t offset, size_t n) {
    if (offset > file_size || n > file_size - offset) throw Error(path + ": zip directory points past the end of the file");
    std::string bytes(n, '\0');
    in.seekg(std::streamoff(offset));
    in.read(bytes.data(), std::streamsize(n));
    return bytes;
  };
  auto le = [](const std::string& b, size_t at, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; ++i) v |= uint64_t(uint8_t(b[at + i])) << (8 * i);
    return v;
  };
  // End of central directory: 22 bytes plus a comment of up to 64 KiB.
  const uint64_t tail_size = std::min<uint64_t>(file_size, 22 + 65535);
  const std::string tail = read_at(file_size - tail_size, tail_size);
  const auto eocd = tail.rfind(std::string("PK\x05\x06", 4));
  if (eocd == std::string::npos || eocd + 22 > tail.size()) throw Error(path + ": not a zip archive (no end of central directory)");
  uint64_t entries = le(tail, eocd + 10, 2), directory = le(tail, eocd + 16, 4);
  if (entries == 0xffff || directory == 0xffffffff) {  // zip64: the locator sits right before
    const uint64_t eocd_offset = file_size - tail_size + eocd;
    if (eocd_offset < 20) throw Error(path + ": truncated zip64 directory");
    const std::string locator = read_at(eocd_offset - 20, 20);
    if (le(locator, 0, 4) != 0x07064b50) throw Error(path + ": zip64 locator missing");
    const std::string record = read_at(le(locator, 8, 8), 56);
    if (le(record, 0, 4) != 0x06064b50) throw Error(path + ": zip64 directory record missing");
    entries = le(record, 32, 8);
    directory = le(record, 48, 8);
  }
  uint64_t at = directory;
  for (uint64_t i = 0; i < entries; ++i) {
    const std::string header = read_at(at, 46);
    if (le(header, 0, 4) != 0x02014b50) throw Error(path + ": corrupt zip central directory");
    const uint64_t name_len = le(header, 28, 2), extra_len = le(header, 30, 2), comment_len = le(header, 32, 2);
    const std::string name_and_extra = read_at(at + 46, name_len + extra_len);
    const std::string name = name_and_extra.substr(0, name_len);
    uint64_t compressed = le(header, 20, 4), size = le(header, 24, 4);
    // Sizes of 0xffffffff are in the zip64 extra field (id 1), uncompressed first.
    for (size_t e = name_len; e + 4 <= name_and_extra.size();) {
      const uint64_t id = le(name_and_extra, e, 2), len = le(name_and_extra, e + 2, 2);
      size_t field = e + 4;
      if (id == 1) {
        if (size == 0xffffffff && field + 8 <= name_and_extra.size()) {
          size = le(name_and_extra, field, 8);
          field += 8;
        }
        if (compressed == 0xffffffff && field + 8 <= name_and_extra.size()) compressed = le(name_and_extra, field, 8);
      }
      e += 4 + len;
    }
    if (le(header, 10, 2) != 0)
      throw Error(path + ": archive entry " + name +
                  " is compressed; PyTorch checkpoints store entries uncompressed, so this file is refused "
                  "(a compressed entry can expand far beyond the file: zip bomb)");
    if (size != compressed || size > file_size)
      throw Error(path + ": archive entry " + name + " claims " + std::to_string(size) +
                  " bytes, more than the file holds");
    at += 46 + name_len + extra_len + comment_len;
  }
}

}  // namespace

TensorMap unpickle_state_dict(const std::string& data, const std::string& source,
                              const std::function<torch::Tensor(const std::string&, torch::ScalarType, int64_t)>& storage) {
  Unpickler u(data, 0, source, storage);
  return state_dict_of(u.run(), source);
}

TensorMap load_torch_checkpoint(const std::string& path) {
  std::ifstream probe(path, std::ios::binary);
  char magic[2] = {};
  probe.read(magic, 2);
  if (magic[0] == 'P' && magic[1] == 'K') {
    check_zip_entries(path);
    std::unique_ptr<caffe2::serialize::PyTorchStreamReader> reader;
    try {
      reader = std::make_unique<caffe2::serialize::PyTorchStreamReader>(path);
    } catch (const c10::Error& e) {
      throw Error(path + ": not a readable PyTorch zip checkpoint: " + e.what_without_backtrace());
    }
    auto [pickle_ptr, pickle_size] = reader->getRecord("data.pkl");
    const std::string pickle(static_cast<const char*>(pickle_ptr.get()), pickle_size);
    return unpickle_state_dict(pickle, path, [&](const std::string& key, torch::ScalarType dtype, int64_t numel) {
      const auto record = "data/" + key;
      if (!reader->hasRecord(record)) throw Error(path + ": storage " + key + " is missing from the archive");
      auto [ptr, size] = reader->getRecord(record);
      return bytes_to_storage(static_cast<const char*>(ptr.get()), size, dtype, numel, path + " storage " + key);
    });
  }
  // Legacy format: magic, protocol and sys-info pickles, the object pickle,
  // the sorted storage keys, then each storage as int64 element count + data.
  const std::string data = read_file(path);
  size_t pos = 0;
  auto no_storage = [&](const std::string&, torch::ScalarType, int64_t) -> torch::Tensor {
    throw Error(path + ": unexpected storage reference outside the object pickle");
  };
  auto skip_pickle = [&] {
    Unpickler u(data, pos, path, no_storage);
    auto v = u.run();
    pos = u.position();
    return v;
  };
  // 0x1950a86a20f9469cfc6c, little-endian.
  static const std::string kLegacyMagic("\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19", 10);
  auto magic_value = skip_pickle();
  if (magic_value->kind != Value::Kind::integer || magic_value->text != kLegacyMagic)
    throw Error(path + ": not a PyTorch checkpoint (bad magic number)");
  skip_pickle();  // protocol version
  skip_pickle();  // sys info
  struct Pending { torch::ScalarType dtype; int64_t numel; torch::Tensor tensor; };
  std::map<std::string, std::shared_ptr<Pending>> pending;
  // Storages are filled after the object pickle, so hand out empty tensors
  // now and copy the data into them once it is read.
  Unpickler objects(data, pos, path, [&](const std::string& key, torch::ScalarType dtype, int64_t numel) {
    if (numel > int64_t(data.size())) throw Error(path + ": storage " + key + " larger than the file");
    auto p = std::make_shared<Pending>(Pending{dtype, numel, torch::empty({numel}, torch::dtype(dtype))});
    pending[key] = p;
    return p->tensor;
  });
  auto root = objects.run();
  pos = objects.position();
  Unpickler keys_pickle(data, pos, path, no_storage);
  auto keys = keys_pickle.run();
  pos = keys_pickle.position();
  for (const auto& k : keys->items) {
    const std::string key = k->kind == Value::Kind::integer ? std::to_string(k->integer) : k->text;
    if (pos + 8 > data.size()) throw Error(path + ": truncated before storage " + key);
    int64_t numel = 0;
    std::memcpy(&numel, data.data() + pos, 8);
    pos += 8;
    auto it = pending.find(key);
    if (it == pending.end()) throw Error(path + ": storage " + key + " is not referenced");
    auto& p = *it->second;
    const size_t bytes = size_t(p.numel) * c10::elementSize(p.dtype);
    if (numel != p.numel || bytes > data.size() - pos) throw Error(path + ": storage " + key + " is truncated or mis-sized");
    std::memcpy(p.tensor.data_ptr(), data.data() + pos, bytes);
    pos += bytes;
  }
  return state_dict_of(root, path);
}

}  // namespace cn::io
