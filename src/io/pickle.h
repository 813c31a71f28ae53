#pragma once
// PyTorch checkpoints (.pth / .ckpt / .pt) read by a restricted unpickler.
//
// A pickle is a program: a general unpickler calls whatever global the file
// names (os.system, eval, ...). This one knows only the globals tensors and
// state dicts need (OrderedDict, torch._utils._rebuild_tensor_v2 /
// _rebuild_parameter, the typed storages); known-harmless globals of
// Lightning checkpoints and numpy scalars become inert placeholders that are
// never called; any other global used as a callable is refused with an error
// naming it. Storages are bounds-checked against the archive; memo indices,
// stack depth and sizes are bounded by the input.
#include <string>

#include "io/safetensors.h"

namespace cn::io {

// Every tensor of the checkpoint's state dict (a Lightning checkpoint's
// "state_dict" entry, else the top-level dict; nested dicts are flattened
// with '.'), from the zip format (torch >= 1.6) or the legacy tar-less format.
TensorMap load_torch_checkpoint(const std::string& path);

// Unpickles `data` (one pickle) whose persistent ids refer to storages read by
// `storage(key, dtype, numel)`; returns the tensors as above. Exposed for tests.
TensorMap unpickle_state_dict(const std::string& data, const std::string& source,
                              const std::function<torch::Tensor(const std::string& key, torch::ScalarType dtype,
                                                                int64_t numel)>& storage);

}  // namespace cn::io
