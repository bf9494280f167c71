// engine/scan: grids, canonical configs, run ids, manifests, shards; with the models layer's
// simulate validator (models/scan/scan_kinds.h).
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "engine/core/errors.h"
#include "engine/scan/scan.h"
#include "models/scan/scan_kinds.h"
#include "tests/harness.h"

namespace fs = std::filesystem;
using namespace dynsim;
using dynsim::test::TempDir;
using dynsim::test::read_text;

namespace {

fs::path write(const fs::path& p, const std::string& text) {
  std::ofstream(p) << text;
  return p;
}

// A tiny simulate grid: the two-area custom graph at 8x8 would need a base file; the DyRCNNx2
// preset at 16x16 is the built-in default's cheapest graph.
const char* kHead = R"([scan]
kind = "simulate"
seeds = [0, 1]
[scan.set]
"model.preset" = "DyRCNNx2"
"model.input_height" = 16
"model.input_width" = 16
"simulation.steps" = 4
)";

std::vector<scan::Run> expand_text(const fs::path& dir, const std::string& body,
                                   const std::string& name = "grid.toml") {
  const fs::path p = write(dir / name, std::string(kHead) + body);
  return scan::expand(scan::read_grid(p.string()), models::scan_validators());
}

// The ConfigError message of expanding `body` ("" when it expands).
std::string expand_error(const fs::path& dir, const std::string& body) {
  try {
    expand_text(dir, body, "bad.toml");
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("scan: canonical text and XXH3-128 ids") {
  const nlohmann::json a = nlohmann::json::parse(R"({"b": 1, "a": {"y": -0.0, "x": 0.1}})");
  CHECK(scan::canonical(a) == R"({"a":{"x":0.1,"y":0.0},"b":1})");
  // XXH3-128 of the empty input (xxHash's published test value), high word first.
  CHECK(scan::xxh128_hex("") == "99aa06d3014798d86001c324468d497f");
  CHECK(scan::xxh128_hex("a") != scan::xxh128_hex("b"));
  CHECK(scan::xxh128_hex("dynsim").size() == 32);
}

TEST_CASE("scan: a cartesian grid with zipped and table axes expands in order, validated") {
  TempDir d;
  const std::string body = R"(
[[axis]]
key = "dynamics.tau"
values = [3, 5.0, 9]
[[axis]]
zip = { "stimulus.contrast" = [0.5, 1.0], "stimulus.onset" = [1, 2] }
[[axis]]
name = "rc"
tables = [{ "model.recurrence_type" = "full" }, { model = { recurrence_type = "self" }, "dynamics.t_recurrence" = 4 }]
)";
  const auto runs = expand_text(d.path(), body);
  REQUIRE(runs.size() == 3 * 2 * 2 * 2);
  std::set<std::string> ids;
  for (const auto& r : runs) ids.insert(r.run_id);
  CHECK(ids.size() == runs.size());
  // Row-major, seeds innermost; an integer tau (3) is normalised to the schema's double.
  CHECK(runs[0].axes["dynamics.tau"] == 3);
  CHECK(runs[0].config["config"]["dynamics"]["tau"].is_number_float());
  CHECK(runs[1].axes["model.seed"] == 1);
  CHECK(runs[2].axes["rc"]["model.recurrence_type"] == "self");
  CHECK(runs[2].config["config"]["dynamics"]["t_recurrence"] == 4.0);
  CHECK(runs[4].axes["zip1"]["stimulus.onset"] == 2);
  CHECK(runs[8].config["config"]["dynamics"]["tau"] == 5.0);
  CHECK(runs[0].config["config"]["simulation"]["output"] == "");  // not part of the identity

  // Expanding twice gives byte-identical files.
  scan::write_manifest((d.path() / "a").string(), scan::read_grid((d.path() / "grid.toml").string()), runs);
  const auto again = expand_text(d.path(), body);
  scan::write_manifest((d.path() / "b").string(), scan::read_grid((d.path() / "grid.toml").string()), again);
  for (const char* f : {"manifest.jsonl", "runs.txt", "scan.json"}) {
    CHECK(read_text(d.path() / "a" / f) == read_text(d.path() / "b" / f));
    CHECK(!read_text(d.path() / "a" / f).empty());
  }
  const auto m = scan::read_manifest((d.path() / "a").string());
  REQUIRE(m.size() == runs.size());
  CHECK(m[5]["run_id"] == runs[5].run_id);

  // Adding a value to an axis keeps every id already there.
  std::string more = body;
  more.replace(more.find("[3, 5.0, 9]"), 11, "[3, 5.0, 7, 9]");
  const auto bigger = expand_text(d.path(), more, "bigger.toml");
  CHECK(bigger.size() == 4 * 2 * 2 * 2);
  std::set<std::string> big_ids;
  for (const auto& r : bigger) big_ids.insert(r.run_id);
  for (const std::string& id : ids) CHECK(big_ids.count(id) == 1);
}

TEST_CASE("scan: bad grids exit 78 naming the run, the key and the location") {
  TempDir d;
  // Unknown key: the location of its value, the run and the key.
  std::string e = expand_error(d.path(), "[[axis]]\nkey = \"dynamics.tua\"\nvalues = [1.0, 2.0]\n");
  CHECK(e.find("bad.toml:11:11: run 0: key 'dynamics.tua'") != std::string::npos);
  CHECK(e.find("dynamics.tau") != std::string::npos);  // the suggestion
  // A wrong type in the second value of an axis: run 2 (seeds innermost).
  e = expand_error(d.path(), "[[axis]]\nkey = \"dynamics.tau\"\nvalues = [1.0, \"fast\"]\n");
  CHECK(e.find("bad.toml:11:16: run 2: key 'dynamics.tau'") != std::string::npos);
  // An out-of-range value.
  e = expand_error(d.path(), "[[axis]]\nkey = \"dynamics.dt\"\nvalues = [1.0, -2.0]\n");
  CHECK(e.find("bad.toml:11:16: run 2: key 'dynamics.dt'") != std::string::npos);
  // An empty axis.
  e = expand_error(d.path(), "[[axis]]\nkey = \"dynamics.tau\"\nvalues = []\n");
  CHECK(e.find("bad.toml:11:10: axis 'values' is empty") != std::string::npos);
  // A duplicate run (5 and 5.0 are the same tau).
  e = expand_error(d.path(), "[[axis]]\nkey = \"dynamics.tau\"\nvalues = [5, 5.0]\n");
  CHECK(e.find("runs 0 and 2 have the same config") != std::string::npos);
  // Zip lists of different lengths; an unknown axis field; an unknown kind.
  e = expand_error(d.path(), "[[axis]]\nzip = { \"dynamics.tau\" = [1.0, 2.0], \"dynamics.dt\" = [1.0] }\n");
  CHECK((e.find("has 2 values but 'dynamics.dt' has 1") != std::string::npos || e.find("has 1 values but 'dynamics.tau' has 2") != std::string::npos));
  e = expand_error(d.path(), "[[axis]]\nkey = \"dynamics.tau\"\nvalue = [1.0]\n");
  CHECK(e.find("unknown axis field 'value'") != std::string::npos);
  write(d.path() / "k.toml", "[scan]\nkind = \"dance\"\n");
  CHECK_THROWS_WITH_AS(scan::expand(scan::read_grid((d.path() / "k.toml").string()),
                                    models::scan_validators()),
                       doctest::Contains("scan.kind 'dance' is not one of retina, simulate, train"),
                       ConfigError);
  // A semantic error found by building the graph: an unknown area in a per-area tau.
  e = expand_error(d.path(), "[[axis]]\nkey = \"dynamics.tau\"\nvalues = [{ V9 = 3.0 }]\n");
  CHECK(e.find("run 0: key 'dynamics.tau'") != std::string::npos);
  CHECK(e.find("no area named 'V9'") != std::string::npos);
}

TEST_CASE("scan: shards partition the runs") {
  for (int64_t count : {0, 1, 81, 200}) {
    for (int64_t n : {1, 2, 3, 7, 16, 1000}) {
      std::vector<int> seen(size_t(count), 0);
      for (int64_t i = 0; i < n; ++i)
        for (int64_t k : scan::shard_indices(count, i, n)) {
          REQUIRE(k >= 0);
          REQUIRE(k < count);
          CHECK(k % n == i);
          ++seen[size_t(k)];
        }
      for (int s : seen) CHECK(s == 1);  // disjoint, and the union is every run
    }
  }
  CHECK(scan::parse_shard("3/7") == std::pair<int64_t, int64_t>{3, 7});
  for (const char* bad : {"7/7", "-1/3", "1", "a/b", "1/0", "1/2x"})
    CHECK_THROWS_AS(scan::parse_shard(bad), UsageError);
}
