// safetensors files (the weight format shared with PyTorch/DynVision state dicts): an 8-byte
// little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets}, and an
// optional "__metadata__": {str: str}}, then the raw little-endian data, fully covered by the
// tensors without holes. Loads F32, F64, I32; I64/I16/I8/U8/BOOL become I32 (range-checked) and
// BF16/F16 become F32 (exactly). Saves F32/F64/I32 host tensors, atomically (temp file, fsync,
// rename), so a failed write never leaves a half-written file.
#pragma once
#include <map>
#include <string>

#include "engine/core/tensor.h"

namespace dynsim {

struct TensorFile {
  std::map<std::string, Tensor> tensors;
  std::map<std::string, std::string> metadata;  // "__metadata__"; empty when the file has none
};

// NoInputError when the file is missing; DataError (naming the file and tensor) when malformed.
TensorFile load_safetensors(const std::string& path);

// Tensors are laid out in name order (bf16 as BF16); the header is padded with spaces to a
// multiple of 8 bytes.
// Error for undefined or device tensors and the reserved name "__metadata__"; IoError on failure.
void save_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace dynsim
