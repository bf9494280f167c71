// CUDA graph capture and replay (engine/core/cuda_graph.h). Like engine/core/device.cpp, this file
// is compiled with and without the CUDA backend and switches on DYNSIM_WITH_CUDA.
#include "engine/core/cuda_graph.h"

#include <utility>

#include "engine/core/errors.h"
#if DYNSIM_WITH_CUDA
#include "engine/core/cuda_check.h"
#endif

namespace dynsim {

CudaGraph::~CudaGraph() { reset(); }
CudaGraph::CudaGraph(CudaGraph&& o) noexcept : exec_(std::exchange(o.exec_, nullptr)) {}
CudaGraph& CudaGraph::operator=(CudaGraph&& o) noexcept {
  if (this != &o) {
    reset();
    exec_ = std::exchange(o.exec_, nullptr);
  }
  return *this;
}

#if DYNSIM_WITH_CUDA
void CudaGraph::reset() noexcept {
  if (exec_) cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec_));
  exec_ = nullptr;
}

void CudaGraph::launch(void* stream) const {
  if (!exec_) throw Error("CUDA graph: launch of an empty graph (nothing was captured)");
  DYNSIM_CUDA_CHECK(
      cudaGraphLaunch(static_cast<cudaGraphExec_t>(exec_), static_cast<cudaStream_t>(stream)));
}

void cuda_graph_begin_capture(void* stream) {
  DYNSIM_CUDA_CHECK(cudaStreamBeginCapture(static_cast<cudaStream_t>(stream),
                                           cudaStreamCaptureModeThreadLocal));
}

CudaGraph cuda_graph_end_capture(void* stream) {
  cudaGraph_t graph = nullptr;
  const cudaError_t e = cudaStreamEndCapture(static_cast<cudaStream_t>(stream), &graph);
  if (e != cudaSuccess) {
    if (graph) cudaGraphDestroy(graph);
    cudaGetLastError();  // capture errors are not sticky; clear the last-error slot
    throw Error(concat("CUDA graph: the capture failed: ", cudaGetErrorString(e),
                       " (an allocation, a host sync or another stream inside the captured "
                       "work)"));
  }
  cudaGraphExec_t exec = nullptr;
  const cudaError_t ie = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);  // the executable graph holds its own copy
  if (ie != cudaSuccess)
    throw Error(concat("CUDA graph: instantiation failed: ", cudaGetErrorString(ie)));
  CudaGraph g;
  g.exec_ = exec;
  return g;
}

void cuda_graph_abort_capture(void* stream) noexcept {
  auto s = static_cast<cudaStream_t>(stream);
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(s, &status) != cudaSuccess || status == cudaStreamCaptureStatusNone) {
    cudaGetLastError();
    return;
  }
  cudaGraph_t graph = nullptr;
  cudaStreamEndCapture(s, &graph);
  if (graph) cudaGraphDestroy(graph);
  cudaGetLastError();
}
#else
static const char* kNoCudaGraphs = "CUDA graphs: this dynsim was built without CUDA";
void CudaGraph::reset() noexcept { exec_ = nullptr; }
void CudaGraph::launch(void*) const { throw NotImplemented(kNoCudaGraphs); }
void cuda_graph_begin_capture(void*) { throw NotImplemented(kNoCudaGraphs); }
CudaGraph cuda_graph_end_capture(void*) { throw NotImplemented(kNoCudaGraphs); }
void cuda_graph_abort_capture(void*) noexcept {}
#endif

}  // namespace dynsim
