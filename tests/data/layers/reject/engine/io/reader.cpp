// Fixture: the io layer reaching into training (forbidden) and into tools (forbidden).
#include "engine/io/npy.h"
#include "engine/autograd/bptt.h"
#include "tools/cli_train.h"
