// Parameter scans (engine/scan/README.md): a grid file (TOML) names a base config and axes;
// expand() turns it into one canonical config per run, each with a run id (XXH3-128 of the
// canonical text, 32 hex digits: the same on every machine), validated at expand time through
// the kind's validator (the models layer supplies one per kind), and writes DIR/manifest.jsonl,
// DIR/runs.txt and DIR/scan.json. Shards take the runs whose index mod n is i.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace dynsim::scan {

// The canonical text of a JSON value: object keys sorted, no spaces, -0.0 written as 0.0,
// doubles in their shortest round-trip form (nlohmann's). Hashing it gives the run id.
std::string canonical(const nlohmann::json& j);
// XXH3-128 of text as 32 lowercase hex digits (high 64 bits first: XXH128's canonical form).
std::string xxh128_hex(const std::string& text);

// One override a run applies to the base config, with where its value was written.
struct Override {
  std::string key;    // dotted config key ("dynamics.tau", "area[1].tau")
  std::string value;  // TOML value text ("5.0", "\"self\"", "[1.0, 2.0]")
  std::string where;  // GRID:LINE:COL of the value
};

struct Run {
  int64_t index = 0;
  std::string run_id;
  std::vector<Override> overrides;  // fixed [scan.set] first, then one per axis key, in order
  nlohmann::json axes;              // axis column -> value (JSON), the run's coordinates
  nlohmann::json config;            // the canonical effective config (what is hashed)
};

struct Grid {
  std::string path;         // the grid file
  std::string name;         // [scan] name (default: the file's stem)
  std::string kind;         // simulate | train | ...
  std::string base;         // base config path, resolved against the grid's folder ("" = none)
  std::vector<Override> fixed;  // [scan.set]
  struct Axis {
    std::string name;                              // column name
    std::vector<std::string> keys;                 // one for key/values, several for zip/tables
    std::vector<std::vector<Override>> points;     // the overrides of each value of the axis
    std::vector<nlohmann::json> labels;            // the JSON value of each point (the column)
    std::string where;                             // the axis's [[axis]] header
  };
  std::vector<Axis> axes;  // cartesian product, the first axis outermost
};

// Reads and checks a grid file's structure (not yet the runs' configs). ConfigError (78) with
// GRID:LINE:COL for an unknown [scan] key, an empty axis, zip lists of different lengths, ...
Grid read_grid(const std::string& path);

// Validates one run: base config path ("" = built-in defaults) plus "key=value" overrides ->
// the effective config as JSON (throws ConfigError naming the key; an override's location is
// the text "--set key=value").
using Validator = std::function<nlohmann::json(const std::string& base,
                                               const std::vector<std::string>& overrides)>;
// Kind name -> validator. The models layer registers simulate, train, ...
using Validators = std::map<std::string, Validator>;

// Every run of the grid, validated, with its id. ConfigError (78): "GRID:LINE:COL: run K: key
// 'k' = v: <the validator's message>" for a bad axis value, and duplicate runs (two points that
// give the same canonical config) naming both indices.
// Runs are validated on `threads` threads (0: every core); the result does not depend on it.
std::vector<Run> expand(const Grid& g, const Validators& validators, int threads = 0);

// Writes DIR/manifest.jsonl (one line per run: index, run_id, kind, axes, config, dynsim
// version), DIR/runs.txt ("index run_id" per line) and DIR/scan.json (the grid: kind, base,
// axes) atomically; the same grid gives byte-identical files.
void write_manifest(const std::string& dir, const Grid& g, const std::vector<Run>& runs);

// A manifest run's config as TOML text that Config::parse reads back to the same config (one
// inline table per section; nulls, i.e. absent optional keys, left out).
std::string config_toml(const nlohmann::json& config);

// Manifest lines read back (DataError for a malformed line, with its number).
std::vector<nlohmann::json> read_manifest(const std::string& dir);

// "i/n" -> {i, n}; UsageError unless 0 <= i < n.
std::pair<int64_t, int64_t> parse_shard(const std::string& text);
// The shard from SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN and SLURM_ARRAY_TASK_COUNT, when
// set ({-1, 0} otherwise).
std::pair<int64_t, int64_t> slurm_shard();
// The run indices of shard i of n among `count` runs: index mod n == i, ascending.
std::vector<int64_t> shard_indices(int64_t count, int64_t i, int64_t n);

}  // namespace dynsim::scan
