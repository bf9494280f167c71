// Training checkpoints: one directory per checkpoint, written atomically (files into a temporary
// directory beside the target, each fsync'd, then a manifest with the size and checksum of every
// file, the directory fsync'd, renamed into place, the parent fsync'd). Reading verifies the
// manifest: a truncated, bit-flipped, missing or extra file is refused with a DataError naming
// the checkpoint and the file. Retention keeps the newest `keep_last` plus the best.
#pragma once
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "engine/core/params.h"
#include "engine/core/tensor.h"

namespace dynsim {

struct CheckpointData {
  int64_t epoch = 0;  // completed epochs
  int64_t step = 0;   // optimiser steps taken
  int64_t batch_in_epoch = 0;  // batches of the current epoch already consumed
  double metric = std::numeric_limits<double>::quiet_NaN();  // "best" = highest; NaN: none
  ParamStore weights;  // host tensors, DynVision names (weights.safetensors)
  std::vector<std::pair<std::string, Tensor>> optimizer_state;  // optimizer.safetensors
  std::string trainer_json;  // the trainer's own state (RNG seeds and offsets, lr, ...) as JSON
  std::string config_toml;   // the effective config
};

// Writes <dir>/<name> (e.g. "step-000120"); creates dir. An existing <dir>/<name> is replaced
// atomically. IoError on failure, leaving no temporary directory behind.
void write_checkpoint(const std::string& dir, const std::string& name, const CheckpointData& d);

// Reads and verifies a checkpoint directory. NoInputError when it does not exist; DataError
// naming the checkpoint and the file when anything fails verification.
CheckpointData read_checkpoint(const std::string& path);

struct CheckpointInfo {
  std::string path;
  int64_t step = 0;
  double metric = std::numeric_limits<double>::quiet_NaN();
};
// Complete checkpoints under dir (those with a manifest), oldest step first; temporary
// directories are ignored. Content is not verified here.
std::vector<CheckpointInfo> list_checkpoints(const std::string& dir);

// The newest checkpoint under dir that verifies; each one refused on the way is described in
// *refused (path and reason). Empty string when none verifies.
std::string latest_valid_checkpoint(const std::string& dir, std::vector<std::string>* refused);

// Deletes all but the newest keep_last checkpoints and the one with the highest metric (ties:
// the older one); leftover temporary directories from crashed writes are removed too.
void prune_checkpoints(const std::string& dir, int keep_last);

// The SHA-256 of n bytes as 64 lowercase hex digits (the manifest's checksum).
std::string sha256_hex(const void* data, size_t n);

}  // namespace dynsim
