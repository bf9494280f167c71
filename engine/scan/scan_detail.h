// Shared inside engine/scan: TOML <-> JSON conversions with locations.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <toml++/toml.h>

namespace dynsim::scan::detail {

std::string where(const toml::node& n, const std::string& fallback);
// A TOML value as JSON (integers stay integers, -0.0 becomes 0.0); ConfigError for non-finite
// numbers and dates.
nlohmann::json to_json(const toml::node& n, const std::string& at);
// A JSON value as TOML value text (strings quoted, doubles with a '.', objects inline).
std::string toml_text(const nlohmann::json& j);

}  // namespace dynsim::scan::detail
