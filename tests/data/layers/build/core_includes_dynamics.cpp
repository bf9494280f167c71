// Fixture for ctest layers.build_rejects: compiled as part of the core layer, this include must
// not be found (the core's include root holds engine/core alone).
#include "engine/core/tensor.h"
#include "engine/dynamics/scheduler.h"
