// Fixture for ctest layers.build_accepts: the control case, a core file including core headers
// compiles with the core layer's include root.
#include "engine/core/tensor.h"
#include "engine/core/context.h"
int layers_fixture_control() { return 0; }
