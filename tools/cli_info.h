// `dynsim info`: version, backends compiled in, devices found, precision modes.
#pragma once
#include <ostream>

namespace dynsim::cli {
int run_info(std::ostream& out, bool json);
}
