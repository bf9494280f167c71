// CUDA graphs of one stream's work (the Scheduler's opt-in replay, RunOptions::cuda_graph):
// begin a capture on a stream, end it into an instantiated executable graph, launch that graph
// on a stream. Opaque handles, so CPU code never includes CUDA headers. Captures use
// cudaStreamCaptureModeThreadLocal: a cudaMalloc, cudaFree or stream sync issued by the
// capturing thread while it captures is an error (a graph must not see an allocation: its
// kernels would keep pointers into freed memory) instead of passing silently as in Relaxed
// mode, and other threads (another Context, another Scheduler) are not disturbed as they would
// be in Global mode. Without the CUDA backend every call that would touch a GPU throws
// NotImplemented.
#pragma once

namespace dynsim {

// An instantiated graph (cudaGraphExec_t); empty until cuda_graph_end_capture fills it.
class CudaGraph {
 public:
  CudaGraph() = default;
  ~CudaGraph();
  CudaGraph(CudaGraph&& o) noexcept;
  CudaGraph& operator=(CudaGraph&& o) noexcept;
  CudaGraph(const CudaGraph&) = delete;
  CudaGraph& operator=(const CudaGraph&) = delete;
  bool ready() const { return exec_ != nullptr; }
  // Enqueues the whole graph on `stream` (a cudaStream_t); Error when empty.
  void launch(void* stream) const;
  void reset() noexcept;  // destroys the executable graph

 private:
  friend CudaGraph cuda_graph_end_capture(void* stream);
  void* exec_ = nullptr;
};

// Starts capturing the work enqueued on `stream` (thread-local mode; see above).
void cuda_graph_begin_capture(void* stream);
// Ends the capture and instantiates it. Error naming the cause when the capture was
// invalidated (an allocation, a sync, a foreign stream joined it).
CudaGraph cuda_graph_end_capture(void* stream);
// Ends a capture in progress and throws its graph away (after an exception inside the captured
// region); a no-op when `stream` is not capturing.
void cuda_graph_abort_capture(void* stream) noexcept;

}  // namespace dynsim
