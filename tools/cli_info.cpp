// `dynsim info` (tools/cli_info.h).
#include "tools/cli_info.h"

#include <omp.h>

#include <Eigen/Core>
#include <string>

#include "engine/core/context.h"
#include "engine/core/device.h"

namespace dynsim::cli {

int run_info(std::ostream& out, bool json) {
  const auto gpus = cuda_devices();
  const int cores = omp_get_num_procs();
  const std::string eigen = concat(EIGEN_WORLD_VERSION, ".", EIGEN_MAJOR_VERSION, ".",
                                EIGEN_MINOR_VERSION);
  if (json) {
    out << "{\"version\": \"" << DYNSIM_VERSION << "\", \"backends\": [\"cpu\""
        << (cuda_compiled() ? ", \"cuda\"" : "") << "], \"cpu_threads\": " << cores
        << ", \"hdf5\": " << (DYNSIM_WITH_HDF5 ? "true" : "false") << ", \"eigen\": \"" << eigen << "\", \"cuda\": \"" << cuda_versions()
        << "\", \"gpus\": [";
    for (size_t i = 0; i < gpus.size(); ++i)
      out << (i ? ", " : "") << "{\"index\": " << gpus[i].index << ", \"name\": \""
          << gpus[i].name << "\", \"sm\": \"" << gpus[i].sm_major << gpus[i].sm_minor
          << "\", \"memory_bytes\": " << gpus[i].memory_bytes << "}";
    out << "], \"precision\": {\"cpu\": [\"fp32\", \"fp64\", \"bf16\"], \"cuda\": [\"fp32\", "
           "\"tf32\", \"bf16\"]}}\n";
    return 0;
  }
  out << "dynsim " << DYNSIM_VERSION << "\n";
  out << "backends:   cpu (Eigen " << eigen << ", " << cores << " threads)"
      << (cuda_compiled() ? ", cuda (" + cuda_versions() + ")" : ", cuda not compiled") << "\n";
  if (gpus.empty()) {
    out << "devices:    cpu" << (cuda_compiled() ? "; no CUDA device found" : "") << "\n";
  } else {
    out << "devices:    cpu";
    for (const auto& g : gpus)
      out << "; cuda:" << g.index << " " << g.name << " (sm_" << g.sm_major << g.sm_minor << ", "
          << g.memory_bytes / (1 << 20) << " MiB)";
    out << "\n";
  }
  out << "precision:  cpu fp32 (default), fp64 (gradient checks), bf16 (simulation.precision, "
         "train.precision: bf16 storage, f32 math, emulated)"
      << (cuda_compiled() ? "; cuda fp32 (default, TF32 off), tf32, bf16 (simulation.precision, "
                            "train.precision)"
                          : "")
      << "\n";
  out << "outputs:    npy" << (DYNSIM_WITH_HDF5 ? ", hdf5" : " (hdf5 not compiled)") << "\n";
  out << "default:    " << (gpus.empty() ? "cpu" : "cuda:0") << "\n";
  return 0;
}

}  // namespace dynsim::cli
