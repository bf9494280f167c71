// NumPy .npy files (format 1.0/2.0/3.0, little-endian, C order): f32, f64, i32, plus i64 read
// as i32 (range-checked) and bool/u8 read as i32. Writes go to a temporary file that is renamed
// into place, so a failed write never leaves a half-written file.
#pragma once
#include <string>

#include "engine/core/tensor.h"

namespace dynsim {
Tensor load_npy(const std::string& path);  // NoInputError / DataError
// Parses the bytes of a whole .npy file (e.g. a member of an .npz archive); `what` names it in
// errors. descr (optional) receives the stored dtype string, e.g. "|u1" or "<f4".
Tensor parse_npy(const std::string& bytes, const std::string& what, std::string* descr = nullptr);
void save_npy(const std::string& path, const Tensor& t);  // host tensor (bf16 as <f4); IoError
// Any raw little-endian C-order array: descr is NumPy's ("|u1", "|i1", "<f4", ...), bytes the
// data (product of shape times the item size). Atomic like save_npy.
void save_npy_raw(const std::string& path, const std::string& descr, const Shape& shape,
                  const void* data, size_t bytes);
}  // namespace dynsim
