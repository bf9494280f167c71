// DyRCNNx4 on a CUDA device: the forward simulation (Scheduler::run, layer recording) at 64x64
// and 224x224, batch 64, T = 20 real steps, per precision mode (fp32 = TF32 off; tf32 = cuDNN
// and cuBLAS may use TF32 tensor ops; bf16 = bf16 storage of the input, parameters and
// activations with f32 math, TF32 off: the run's dtype, engine/dynamics/scheduler.h), then a
// training step per precision (Bptt: forward + CE loss + reverse sweep, no optimiser update;
// store-all up to 128x128, checkpoint every 5 steps above; bf16: the tape in bf16, f32 parameters
// and gradients). Per row: median ms per run and per step, steps/s and image-steps/s over R runs
// after one warm-up (host clock around a run; Scheduler::run returns after its final copy to the
// host, so the GPU work is included), and the peak device memory the engine allocated
// (device_memory(): tensors and scratch, without the CUDA context or library internals) next to
// cudaMemGetInfo's used bytes. One JSON line per row with --json FILE. fp32 also gets a
// "forward+graph" row: the same run with RunOptions::cuda_graph (the step loop captured once and
// replayed; two untimed runs first: the warm-up and the capture), whose note says whether its
// recording has the bits of the plain forward's. Without a CUDA device (or in a build without CUDA)
// it says so and exits 0; exit 70 when a row that should run failed. Usage: dyrcnn_gpu_bench
// [--sizes 64,224] [--batch 64] [--steps 20] [--repeats 5]
//                         [--solver euler] [--precisions fp32,tf32,bf16] [--no-train] [--json F]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bench/bench_common.h"
#include "engine/autograd/bptt.h"
#include "engine/core/device.h"
#include "kernels/dispatch.h"
#include "models/dyrcnn/dyrcnn.h"

using namespace dynsim;

namespace {

struct Options {
  std::vector<int> sizes{64, 224};
  int64_t batch = 64;
  int steps = 20, repeats = 5;
  std::string solver = "euler";
  std::vector<std::string> precisions{"fp32", "tf32", "bf16"};
  bool train = true;
  std::string json;
};

struct Row {
  std::string mode, precision, note;
  int size = 0;
  double run_ms = 0;
  size_t engine_peak = 0, used = 0;
};

double mib(size_t b) {
  return double(b) / (1024.0 * 1024.0);
}

std::string json_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += (c == '\n' || c == '\t') ? ' ' : c;
  }
  return out;
}

size_t device_used() {
  size_t free_b = 0, total_b = 0;
  device_memory_info(0, &free_b, &total_b);
  return total_b - free_b;
}

void print_row(const Options& o, const Row& r, FILE* json) {
  const double per_step = r.run_ms / o.steps;
  if (r.run_ms <= 0) {
    std::printf("%-8s %4d %-5s  %s\n", r.mode.c_str(), r.size, r.precision.c_str(), r.note.c_str());
  } else {
    std::printf("%-8s %4d %-5s %9.2f %9.3f %10.1f %12.0f %11.1f %10.1f  %s\n", r.mode.c_str(),
                r.size, r.precision.c_str(), r.run_ms, per_step, 1e3 / per_step,
                1e3 * double(o.batch) / per_step, mib(r.engine_peak), mib(r.used), r.note.c_str());
  }
  if (json)
    std::fprintf(json,
                 "{\"bench\": \"dyrcnn_gpu\", \"model\": \"DyRCNNx4\", \"mode\": \"%s\", "
                 "\"size\": %d, \"batch\": %lld, \"steps\": %d, \"solver\": \"%s\", "
                 "\"precision\": \"%s\", \"ran\": %s, \"run_ms\": %.4f, \"ms_per_step\": %.5f, "
                 "\"steps_per_s\": %.2f, \"engine_peak_bytes\": %zu, \"device_used_bytes\": %zu, "
                 "\"note\": \"%s\"}\n",
                 r.mode.c_str(), r.size, (long long)o.batch, o.steps, o.solver.c_str(),
                 r.precision.c_str(), r.run_ms > 0 ? "true" : "false", r.run_ms, per_step,
                 r.run_ms > 0 ? 1e3 / per_step : 0.0, r.engine_peak, r.used,
                 json_escape(r.note).c_str());
  std::fflush(stdout);
  if (json) std::fflush(json);  // rows survive a crash of a later one
}

Graph build(int size) {
  models::DyRCNNOptions m;
  m.preset = "DyRCNNx4";
  m.height = m.width = size;
  return models::build_dyrcnn(m);
}

// The forward: one Scheduler per precision, the input on the device before the timing; with
// `graph` the step loop replayed as a CUDA graph (RunOptions::cuda_graph).
Row forward_row(const Options& o, int size, Precision p, bool graph = false, bool bf16 = false) {
  Row r{graph ? "forward+graph" : "forward", bf16 ? "bf16" : precision_name(p), "", size};
  Graph g = build(size);
  ContextOptions co;
  co.device = Device::Cuda;
  co.precision = p;
  Context ctx(co);
  const Tensor host_input = bench::values({o.batch, o.steps, 3, size, size}, 1);
  const Tensor input = ctx.to_device(bf16 ? host_input.to_dtype(DType::BF16) : host_input);
  Scheduler sched(ctx, g, SolverSpec(o.solver));
  RunOptions ro;
  ro.record = RecordMode::Layer;
  ro.cuda_graph = graph;
  reset_device_memory_peak(0);
  sched.run(input, ro);  // warm-up: allocation, cuDNN plans, parameter copies
  Recording replayed;
  if (graph) replayed = sched.run(input, ro);  // the capture (and its first launch)
  r.run_ms = bench::median_ms(o.repeats, [&] { sched.run(input, ro); });
  r.engine_peak = device_memory(0).peak;
  r.used = device_used();
  r.note = "layer recording; peak includes the " + std::to_string(int(mib(input.nbytes()))) +
           " MiB input";
  if (bf16) {
    const ops::Conv2dBf16Refusal& refusal = ctx.plans().get_or_create<ops::Conv2dBf16Refusal>(
        PlanKey("conv2d_bf16_refused"),
        [] { return std::make_shared<ops::Conv2dBf16Refusal>(); });
    r.note += refusal.refused ? "; cuDNN refused bf16 convs, run on f32 copies: " + refusal.why
                              : "; native cuDNN bf16 convs";
  }
  if (graph) {
    replayed = sched.run(input, ro);
    RunOptions plain_ro = ro;
    plain_ro.cuda_graph = false;
    Scheduler plain(ctx, g, SolverSpec(o.solver));
    const Recording want = plain.run(input, plain_ro);
    bool same = std::memcmp(replayed.logits.raw(), want.logits.raw(), want.logits.nbytes()) == 0;
    for (size_t a = 0; a < want.mean_abs.size(); ++a)
      same = same &&
             std::memcmp(replayed.mean_abs[a].raw(), want.mean_abs[a].raw(),
                         want.mean_abs[a].nbytes()) == 0 &&
             std::memcmp(replayed.std_abs[a].raw(), want.std_abs[a].raw(),
                         want.std_abs[a].nbytes()) == 0;
    r.note += same ? "; replay has the forward's bits" : "; REPLAY DIFFERS from the forward";
  }
  return r;
}

// A training step on CUDA (the parameters moved to the device, a deterministic context as
// dynsim train makes it), or the reason it cannot run. Store-all up to 128x128; above, the
// checkpoint policy every 5 steps (store-all of DyRCNNx4 224x224 at batch 64, T 20 would need
// ~60 GB: ~12x the pixels and 8x the batch of the 605 MiB measured at 64x64, batch 8).
Row train_row(const Options& o, int size, Precision p, bool bf16 = false) {
  Row r{"train", bf16 ? "bf16" : precision_name(p), "", size};
  try {
    Graph g = build(size);
    ContextOptions co;
    co.device = Device::Cuda;
    co.precision = p;
    co.deterministic = true;
    Context ctx(co);
    for (auto& e : g.params.entries()) e.value = ctx.to_device(e.value);
    const Tensor host_input = bench::values({o.batch, o.steps, 3, size, size}, 1);
    const Tensor input = ctx.to_device(bf16 ? host_input.to_dtype(DType::BF16) : host_input);
    Tensor labels = Tensor::empty({o.batch, o.steps}, DType::I32);
    for (int64_t i = 0; i < labels.numel(); ++i) labels.data<int32_t>()[i] = int32_t((i * 7) % 10);
    ParamStore grads = Bptt::zero_grads(ctx, g.params);
    Bptt bp(ctx, g, SolverSpec(o.solver));
    BpttOptions bo;
    const bool checkpoint = size > 128;
    if (checkpoint) bo.memory = MemoryPolicy::Checkpoint, bo.checkpoint_every = 5;
    const LossSpec loss;
    reset_device_memory_peak(0);
    bp.run(input, labels, {}, loss, bo, &grads);
    ctx.synchronize();
    r.run_ms = bench::median_ms(o.repeats, [&] {
      bp.run(input, labels, {}, loss, bo, &grads);
      ctx.synchronize();
    });
    r.engine_peak = device_memory(0).peak;
    r.used = device_used();
    r.note = std::string("Bptt ") + (checkpoint ? "checkpoint every 5" : "store-all") +
             ", deterministic, CE loss, no optimiser update";
  } catch (const Error& e) {
    r.note = std::string("training step failed on CUDA (") + e.what() + ")";
  }
  return r;
}

bool parse(int argc, char** argv, Options* o) {
  auto list = [](const std::string& s) {
    std::vector<std::string> out;
    for (size_t at = 0; at <= s.size();) {
      const size_t end = std::min(s.find(',', at), s.size());
      if (end > at) out.push_back(s.substr(at, end - at));
      at = end + 1;
    }
    return out;
  };
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--no-train") {
      o->train = false;
      continue;
    }
    if (i + 1 >= argc) return false;
    const std::string v = argv[++i];
    if (a == "--sizes") {
      o->sizes.clear();
      for (const std::string& s : list(v)) o->sizes.push_back(std::atoi(s.c_str()));
    } else if (a == "--batch") {
      o->batch = std::atoll(v.c_str());
    } else if (a == "--steps") {
      o->steps = std::atoi(v.c_str());
    } else if (a == "--repeats") {
      o->repeats = std::atoi(v.c_str());
    } else if (a == "--solver") {
      o->solver = v;
    } else if (a == "--precisions") {
      o->precisions = list(v);
    } else if (a == "--json") {
      o->json = v;
    } else {
      return false;
    }
  }
  for (int s : o->sizes)
    if (s < 8 || s % 8) return false;
  for (const std::string& p : o->precisions)
    if (p != "fp32" && p != "tf32" && p != "bf16") return false;
  return o->batch >= 1 && o->steps >= 1 && o->repeats >= 1;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (!parse(argc, argv, &o)) {
    std::fprintf(stderr,
                 "usage: %s [--sizes 64,224] [--batch B] [--steps T] [--repeats R] [--solver S] "
                 "[--precisions fp32,tf32,bf16] [--no-train] [--json FILE]\n",
                 argv[0]);
    return 64;
  }
  if (cuda_device_count() == 0) {
    std::printf("dyrcnn_gpu_bench: skipped: no CUDA device (%s)\n",
                cuda_compiled() ? "none found" : "this build has no CUDA backend");
    return 0;
  }
  FILE* json = o.json.empty() ? nullptr : std::fopen(o.json.c_str(), "a");
  if (!o.json.empty() && !json) {
    std::fprintf(stderr, "dyrcnn_gpu_bench: cannot open %s\n", o.json.c_str());
    return 74;
  }
  const GpuInfo gpu = cuda_devices().front();
  std::printf(
      "# dyrcnn_gpu_bench: DyRCNNx4, batch %lld, T = %d real steps, solver %s, on %s "
      "(%s); median of %d after 1 warm-up\n",
      (long long)o.batch, o.steps, o.solver.c_str(), gpu.name.c_str(), cuda_versions().c_str(),
      o.repeats);
  std::printf("%-8s %4s %-5s %9s %9s %10s %12s %11s %10s  %s\n", "mode", "size", "prec", "run ms",
              "ms/step", "steps/s", "img-steps/s", "peak MiB", "used MiB", "note");
  int failed = 0;
  for (int size : o.sizes) {
    for (const std::string& p : o.precisions) {
      try {
        print_row(o,
                  forward_row(o, size, p == "tf32" ? Precision::TF32 : Precision::FP32, false,
                              p == "bf16"),
                  json);
      } catch (const Error& e) {
        ++failed;
        print_row(o, Row{"forward", p, std::string("FAILED: ") + e.what(), size}, json);
      }
      if (p != "fp32") continue;
      try {
        print_row(o, forward_row(o, size, Precision::FP32, true), json);
      } catch (const Error& e) {
        ++failed;
        print_row(o, Row{"forward+graph", p, std::string("FAILED: ") + e.what(), size}, json);
      }
    }
    if (o.train)
      for (const std::string& p : o.precisions) {
        const Row r =
            train_row(o, size, p == "tf32" ? Precision::TF32 : Precision::FP32, p == "bf16");
        if (r.run_ms <= 0) ++failed;  // the note says why
        print_row(o, r, json);
      }
  }
  if (json) std::fclose(json);
  return failed ? 70 : 0;
}
