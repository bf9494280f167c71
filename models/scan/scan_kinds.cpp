#include "models/scan/scan_kinds.h"

#include "engine/io/config.h"
#include "models/config/sim_config.h"
#include "models/retina/pipeline.h"
#include "models/train/trainer.h"

namespace dynsim::models {

namespace {

nlohmann::json validate(const ConfigSchema& schema, const char* output_key,
                        const std::string& base, const std::vector<std::string>& overrides) {
  const Config cfg = base.empty() ? Config::parse("", "(built-in defaults)", schema, overrides)
                                  : Config::load(base, schema, overrides);
  nlohmann::json j = cfg.to_json();
  if (!output_key) {  // retina: the generator's and the fit's semantic checks
    (void)retina::generator_spec(cfg);
    (void)retina::fit_options(cfg);
    return j;
  }
  (void)build_graph(cfg);
  nlohmann::json* o = &j;
  std::string key = output_key;
  for (size_t dot; (dot = key.find('.')) != std::string::npos; key = key.substr(dot + 1))
    o = &(*o)[key.substr(0, dot)];
  (*o)[key] = "";
  return j;
}

}  // namespace

const scan::Validators& scan_validators() {
  static const scan::Validators v = {
      {"simulate",
       [](const std::string& base, const std::vector<std::string>& o) {
         return validate(simulate_schema(), "simulation.output", base, o);
       }},
      {"train",
       [](const std::string& base, const std::vector<std::string>& o) {
         return validate(train_schema(), "train.output", base, o);
       }},
      {"retina",
       [](const std::string& base, const std::vector<std::string>& o) {
         return validate(retina::retina_schema(), nullptr, base, o);
       }},
  };
  return v;
}

}  // namespace dynsim::models
