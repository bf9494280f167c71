// Atomic file writes: the bytes go to a unique temporary file beside the target, which is
// fsync'd and renamed into place (then the directory is fsync'd), so a reader sees the old file
// or the complete new one, never half of it. Failures throw IoError and leave no temporary file.
#pragma once
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

namespace dynsim {

// The file's content as consecutive chunks (pointer, size), written in order.
using Chunks = std::vector<std::pair<const void*, size_t>>;
void write_file_atomic(const std::string& path, const Chunks& chunks);
inline void write_file_atomic(const std::string& path, const std::string& text) {
  write_file_atomic(path, Chunks{{text.data(), text.size()}});
}

}  // namespace dynsim
