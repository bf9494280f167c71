// The cubic Hermite basis on [0, 1]: how a staged solver reads an area's history between two
// stored steps (value and slope at each end). One definition for the Scheduler's history reads
// (scheduler_rings.cpp) and the reverse mode's (engine/autograd/bptt_forward.cpp), so that the
// two give the same bits.
#pragma once

namespace dynsim {

struct Hermite {
  double h00, h10, h01, h11;
  explicit Hermite(double u)
      : h00(2 * u * u * u - 3 * u * u + 1),
        h10(u * u * u - 2 * u * u + u),
        h01(-2 * u * u * u + 3 * u * u),
        h11(u * u * u - u * u) {}
};

}  // namespace dynsim
