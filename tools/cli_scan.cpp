#include "tools/cli_scan.h"

#include <CLI/CLI.hpp>
#include <iostream>

#include "engine/scan/scan.h"
#include "models/scan/scan_kinds.h"

namespace dynsim::cli {

struct ScanArgs {
  CLI::App* scan = nullptr;
  CLI::App* expand = nullptr;
  CLI::App* shard = nullptr;
  std::string grid, dir, shard_spec;
  bool quiet = false;
};

ScanArgs* add_scan(CLI::App& app) {
  static ScanArgs a;
  a.scan = app.add_subcommand("scan", "parameter scans: expand a grid into a manifest of runs, "
                                      "list a shard's runs");
  a.scan->require_subcommand(1);
  a.expand = a.scan->add_subcommand(
      "expand", "validate every run of a grid file and write DIR/manifest.jsonl, runs.txt, "
                "scan.json (exit 78 naming the run, the key and the grid's line:col)");
  a.expand->add_option("grid", a.grid, "grid file (TOML: [scan], [scan.set], [[axis]])")
      ->required()
      ->check(CLI::ExistingFile);
  a.expand->add_option("-o,--output", a.dir, "scan folder")->required();
  a.expand->add_flag("--quiet,-q", a.quiet, "no summary");
  a.shard = a.scan->add_subcommand(
      "shard", "print the runs (index run_id) of one shard: index mod n == i; i/n default to "
               "the Slurm array task");
  a.shard->add_option("dir", a.dir, "scan folder (from scan expand)")->required();
  a.shard->add_option("--shard", a.shard_spec, "i/n");
  return &a;
}

bool scan_parsed(const ScanArgs* a) { return a && a->scan && a->scan->parsed(); }

int run_scan(const ScanArgs& a) {
  if (a.expand->parsed()) {
    const scan::Grid g = scan::read_grid(a.grid);
    const std::vector<scan::Run> runs = scan::expand(g, models::scan_validators());
    scan::write_manifest(a.dir, g, runs);
    if (!a.quiet) {
      std::cout << "dynsim scan expand: " << g.name << " (" << g.kind << "), " << runs.size()
                << " run(s)";
      for (const scan::Grid::Axis& ax : g.axes) std::cout << (&ax == &g.axes[0] ? " = " : " x ")
                                                          << ax.points.size() << " " << ax.name;
      std::cout << "\n  wrote " << a.dir << "/manifest.jsonl, runs.txt, scan.json\n";
    }
    return 0;
  }
  std::pair<int64_t, int64_t> s =
      a.shard_spec.empty() ? scan::slurm_shard() : scan::parse_shard(a.shard_spec);
  if (s.second == 0) s = {0, 1};
  const std::vector<nlohmann::json> m = scan::read_manifest(a.dir);
  for (int64_t k : scan::shard_indices(int64_t(m.size()), s.first, s.second))
    std::cout << k << " " << m[size_t(k)].at("run_id").get<std::string>() << "\n";
  return 0;
}

}  // namespace dynsim::cli
