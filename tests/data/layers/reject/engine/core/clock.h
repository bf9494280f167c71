// Fixture for ctest layers.rejects_fixture: core reaching up into the dynamics (forbidden).
#pragma once
#include "engine/dynamics/scheduler.h"
#include "engine/core/tensor.h"
