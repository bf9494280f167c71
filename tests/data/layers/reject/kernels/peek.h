// Fixture: a kernel header that includes the models (forbidden) and a core header (allowed).
#pragma once
#include "engine/core/context.h"
#include "models/train/trainer.h"
