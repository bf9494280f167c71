// DynVision's DyRCNN family as graphs (spec §2-3): DyRCNNx2 (layer1, layer2), DyRCNNx4 (V1, V2,
// V4, IT with single convs) and DyRCNNx8 (two-stage areas), with every recurrence type and
// target, skip V1->V4 / V2->IT, feedback V4->V1 / IT->V2 (additive or multiplicative),
// supralinearity, the retina front-end and feedforward_only. Parameters carry DynVision's
// state_dict names and are initialised as DynVision actually does it (spec §6), seeded.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "engine/dynamics/graph.h"

namespace dynsim::models {

struct DyRCNNOptions {
  std::string preset = "DyRCNNx4";  // DyRCNNx2 | DyRCNNx4 | DyRCNNx8
  int n_classes = 10;
  int in_channels = 3, height = 64, width = 64;
  // full | self | depthpointwise | pointdepthwise | local | localdepthwise | none
  std::string recurrence_type = "full";
  std::string recurrence_target = "output";  // output | input | middle (x8 only)
  bool skip = true;
  std::string feedback = "none";  // none | add | mul
  bool feedforward_only = false;
  double supralinearity = 1.0;
  bool retina = false;
  bool bias = true;
  double max_weight_init = 1e-3;
  uint64_t seed = 0;
  DelaySettings delays;                 // dt and the four delays in ms (DynVision defaults)
  double tau = 5.0;
  std::map<std::string, double> tau_per_area;  // overrides by area name
  bool train_tau = false;
  bool tau_softplus = false;  // positive parametrisation tau = softplus(s) (opt-in)
  // Channels per area instead of DynVision's (e.g. {4, 6, 8, 10} for a small DyRCNNx4-shaped
  // graph in gradient checks); a two-stage area's middle width follows its output width.
  std::vector<int> channels;
};

// Builds, initialises and resolves the delays (warnings in graph.warnings).
Graph build_dyrcnn(const DyRCNNOptions& o);

}  // namespace dynsim::models
