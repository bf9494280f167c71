// `dynsim retina generate | fit | evaluate | score | transfer | figures | keys` (thin mains over
// models/retina/pipeline.h and figures.h).
#pragma once
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace dynsim::cli {

// Adds the `retina` subcommand tree to app; run_retina() runs whichever was parsed.
struct RetinaArgs;
RetinaArgs* add_retina(CLI::App& app);
bool retina_parsed(const RetinaArgs* a);
int run_retina(const RetinaArgs& a);

}  // namespace dynsim::cli
