// `dynsim scan` (thin mains over engine/scan and models/scan).
#pragma once
#include <string>

namespace CLI {
class App;
}

namespace dynsim::cli {

struct ScanArgs;
// Adds `scan expand` and `scan shard` to app; returns the parsed arguments' holder.
ScanArgs* add_scan(CLI::App& app);
bool scan_parsed(const ScanArgs* a);
int run_scan(const ScanArgs& a);

}  // namespace dynsim::cli
