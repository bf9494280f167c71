// Fixture: a kernel header that includes the models and the dynamics (both forbidden) and a
// core header (allowed).
#pragma once
#include "engine/core/context.h"
#include "models/train/trainer.h"
#include "engine/dynamics/scheduler.h"
