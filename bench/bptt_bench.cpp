// Reverse mode through time (engine/autograd/bptt.h) on the CPU, per memory policy (store-all,
// checkpoint every k steps): the bytes of the planned pools, the peak resident-memory increase of
// one training step (forward + loss + reverse sweep), the median train-step and forward-only times,
// and whether the gradients equal store-all's bitwise. Each policy runs in a fresh child process
// so that neither the allocator's free lists nor the peak-RSS counter carry over between policies.
// Usage: bptt_bench [--preset P] [--size HW] [--batch B] [--steps T] [--threads N] [--repeats R]
//                   [--policies store-all,ckpt-1,...[-unfused][-bf16]] [--all]
// A policy name with the suffix "-unfused" (store-all-unfused, ckpt-2-unfused) runs with
// BpttOptions::fused_tail off (the separate drive-sum, leak, ReLU and supralinearity nodes): the
// fused step tail's speed-up, and its gradients checked bitwise against store-all's. The suffix
// "-bf16" (store-all-bf16, ckpt-5-bf16) trains in bf16 storage (a bf16 input: the tape's values
// and gradients bf16, f32 parameters and gradients): its pool and peak against fp32 store-all's,
// and its gradients compared by cosine and norm ratio over all parameters (>= 0.99 to pass).
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#include "bench/bench_common.h"
#include "engine/autograd/bptt.h"
#include "models/dyrcnn/dyrcnn.h"

using namespace dynsim;

namespace {

struct Config {
  std::string preset = "DyRCNNx4";
  int size = 64;  // square input
  int64_t batch = 8;
  int steps = 20;  // real steps T (no idle steps)
};

struct Policy {
  std::string name;  // "store-all" or "ckpt-K"
  MemoryPolicy memory = MemoryPolicy::StoreAll;
  int every = 0;
  bool fused_tail = true;
  bool bf16 = false;
};

// What a child sends back through its pipe, followed by grad_bytes bytes: every trainable
// parameter's gradient after the first training step, concatenated in ParamStore order.
struct Measured {
  int threads = 0, n_params = 0;
  bool hwm_reset = false;  // VmHWM was reset to VmRSS just before the step
  int64_t pool_bytes = 0, rss_before_kb = 0, peak_kb = 0;
  double train_ms = 0, fwd_ms = 0, loss = 0;
  int64_t grad_bytes = 0, first_bytes = 0, first_numel = 0;
  char first_name[96] = {};
};

int64_t status_kb(const char* key) {
  FILE* f = std::fopen("/proc/self/status", "r");
  if (!f) return -1;
  char line[256];
  int64_t kb = -1;
  const size_t n = std::strlen(key);
  while (std::fgets(line, sizeof line, f))
    if (!std::strncmp(line, key, n) && line[n] == ':') kb = std::atoll(line + n + 1);
  std::fclose(f);
  return kb;
}

// Writing "5" to clear_refs sets VmHWM back to the current VmRSS (Linux >= 4.0), so the peak
// read after the step belongs to the step alone and not to the graph's construction.
bool reset_hwm() {
  const int fd = open("/proc/self/clear_refs", O_WRONLY);
  if (fd < 0) return false;
  const bool ok = write(fd, "5", 1) == 1;
  close(fd);
  return ok;
}

using bench::values;

// The child's work: build, one measured training step (it also plans and fills the pools, i.e. it
// is the warm-up), then the timed train steps and forward-only runs.
Measured measure(const Config& c, const Policy& p, int threads, int repeats,
                 std::vector<char>* grad_bytes) {
  models::DyRCNNOptions o;
  o.preset = c.preset;
  o.height = o.width = c.size;
  Graph g = models::build_dyrcnn(o);
  ContextOptions co;
  co.threads = threads;
  Context ctx(co);
  const DType dt = g.params.entries().at(0).value.dtype();
  Tensor input = values({c.batch, c.steps, o.in_channels, c.size, c.size}, 1);
  if (dt != DType::F32) input = input.to_dtype(dt);
  if (p.bf16) input = input.to_dtype(DType::BF16);
  Tensor labels = Tensor::empty({c.batch, c.steps}, DType::I32);
  for (int64_t i = 0; i < labels.numel(); ++i)
    labels.data<int32_t>()[i] = int32_t((i * 7) % o.n_classes);
  ParamStore grads = Bptt::zero_grads(ctx, g.params);
  Bptt bp(ctx, g, SolverSpec("euler"));
  BpttOptions opt;
  opt.memory = p.memory;
  opt.checkpoint_every = p.every;
  opt.fused_tail = p.fused_tail;
  const LossSpec loss;

  Measured m;
  m.threads = ctx.threads();
  m.hwm_reset = reset_hwm();
  m.rss_before_kb = status_kb("VmRSS");
  m.loss = bp.run(input, labels, {}, loss, opt, &grads).total;
  m.peak_kb = status_kb("VmHWM");
  m.pool_bytes = bp.pool_bytes();
  for (const auto& e : grads.entries()) {
    const char* b = static_cast<const char*>(e.value.raw());
    grad_bytes->insert(grad_bytes->end(), b, b + e.value.nbytes());
    if (m.n_params++ == 0) {
      m.first_bytes = int64_t(e.value.nbytes());
      m.first_numel = e.value.numel();
      std::snprintf(m.first_name, sizeof m.first_name, "%s", e.name.c_str());
    }
  }
  m.grad_bytes = int64_t(grad_bytes->size());
  m.train_ms =
      bench::median_ms(repeats, [&] { bp.run(input, labels, {}, loss, opt, &grads); });
  bp.run(input, labels, {}, loss, opt, nullptr);  // warm-up of the forward-only path
  m.fwd_ms = bench::median_ms(repeats, [&] { bp.run(input, labels, {}, loss, opt, nullptr); });
  return m;
}

bool write_all(int fd, const void* p, size_t n) {
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    const ssize_t w = write(fd, c, n);
    if (w <= 0) return false;
    c += w;
    n -= size_t(w);
  }
  return true;
}

// Runs one policy in a fork()ed child. The parent never creates a Context, so no OpenMP thread
// pool exists at fork time. Returns false (with the child's message on stderr) on failure.
bool run_child(const Config& c, const Policy& p, int threads, int repeats, Measured* m,
               std::vector<char>* grads) {
  int fds[2];
  if (pipe(fds) != 0) return false;
  std::fflush(stdout);
  const pid_t pid = fork();
  if (pid < 0) return false;
  if (pid == 0) {
    close(fds[0]);
    int code = 0;
    try {
      std::vector<char> g;
      const Measured r = measure(c, p, threads, repeats, &g);
      if (!write_all(fds[1], &r, sizeof r) || !write_all(fds[1], g.data(), g.size())) code = 74;
    } catch (const Error& e) {
      std::fprintf(stderr, "bptt_bench: %s %s: %s\n", c.preset.c_str(), p.name.c_str(), e.what());
      code = int(e.code());
    } catch (const std::exception& e) {
      std::fprintf(stderr, "bptt_bench: %s %s: %s\n", c.preset.c_str(), p.name.c_str(), e.what());
      code = 70;
    }
    close(fds[1]);
    _exit(code);
  }
  close(fds[1]);
  // Read everything before waiting: the gradients are larger than the pipe's buffer.
  std::vector<char> all;
  char buf[1 << 16];
  for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0;) all.insert(all.end(), buf, buf + n);
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || all.size() < sizeof(Measured)) {
    std::fprintf(stderr, "bptt_bench: %s %s: child failed (status %d)\n", c.preset.c_str(),
                 p.name.c_str(), status);
    return false;
  }
  std::memcpy(m, all.data(), sizeof(Measured));
  if (int64_t(all.size() - sizeof(Measured)) != m->grad_bytes) return false;
  grads->assign(all.begin() + sizeof(Measured), all.end());
  return true;
}

// The machine may be shared: the load average next to the timings says how far to trust them.
std::string loadavg() {
  char buf[64] = "?";
  if (FILE* f = std::fopen("/proc/loadavg", "r")) {
    if (!std::fgets(buf, sizeof buf, f)) buf[0] = 0;
    std::fclose(f);
  }
  std::string s = buf;
  const size_t third = s.find(' ', s.find(' ', s.find(' ') + 1) + 1);
  return third == std::string::npos ? s : s.substr(0, third);  // 1, 5 and 15 minutes
}

double mib(double bytes) {
  return bytes / (1024.0 * 1024.0);
}

// One table; returns false when a child failed or a gradient differs from store-all's.
bool run_config(const Config& c, const std::vector<Policy>& policies, int threads, int repeats) {
  std::printf(
      "\n## %s %dx%d, batch %lld, T = %d real steps, euler, CE loss; median of %d after "
      "1 warm-up; load average %s\n",
      c.preset.c_str(), c.size, c.size, (long long)c.batch, c.steps, repeats, loadavg().c_str());
  std::printf("%-17s %3s %9s %10s %9s %8s %8s %8s %8s %8s  %s\n", "policy", "thr", "pool MiB",
              "peak+ MiB", "train ms", "fwd ms", "trn/fwd", "time/SA", "pool/SA", "peak/SA",
              "grads vs store-all");
  bool ok = true;
  Measured ref;
  std::vector<char> ref_grads;
  for (const Policy& p : policies) {
    Measured m;
    std::vector<char> g;
    if (!run_child(c, p, threads, repeats, &m, &g)) {
      ok = false;
      continue;
    }
    const double peak = mib(double(m.peak_kb - m.rss_before_kb) * 1024.0);
    std::string same = "reference";
    if (&p == &policies.front()) {  // store-all, fused: the reference
      // Equal gradients mean something only if they are not all zero.
      const size_t es = size_t(m.first_bytes / std::max<int64_t>(m.first_numel, 1));
      const std::vector<char> zero(es, 0);
      int64_t nonzero = 0;
      for (int64_t i = 0; i < m.first_numel; ++i)
        nonzero += std::memcmp(g.data() + i * es, zero.data(), es) != 0;
      same += " (" + std::string(m.first_name) + ": " + std::to_string(nonzero) + " of " +
              std::to_string(m.first_numel) + " entries nonzero)";
      ref = m;
      ref_grads = g;
    } else if (p.bf16) {
      // f32 gradients of an f32 graph: cosine and norm ratio against store-all's.
      double dot = 0, na = 0, nb = 0;
      const size_t n = std::min(g.size(), ref_grads.size()) / sizeof(float);
      for (size_t i = 0; i < n; ++i) {
        float a, b;
        std::memcpy(&a, ref_grads.data() + i * sizeof(float), sizeof a);
        std::memcpy(&b, g.data() + i * sizeof(float), sizeof b);
        dot += double(a) * b, na += double(a) * a, nb += double(b) * b;
      }
      const double cosine = na > 0 && nb > 0 ? dot / std::sqrt(na * nb) : 0;
      char buf[160];
      std::snprintf(buf, sizeof buf, "bf16: all %d params, cosine %.5f, norm ratio %.4f",
                    m.n_params, cosine, na > 0 ? std::sqrt(nb / na) : 0.0);
      same = buf;
      ok = ok && g.size() == ref_grads.size() && cosine >= 0.99;
    } else {
      const bool first = g.size() == ref_grads.size() &&
                         !std::memcmp(g.data(), ref_grads.data(), size_t(m.first_bytes));
      const bool every = first && !std::memcmp(g.data(), ref_grads.data(), g.size());
      same = std::string(first ? "bitwise equal" : "DIFFERENT") + " (" + m.first_name + "; all " +
             std::to_string(m.n_params) + " params " + (every ? "equal" : "NOT equal") + ")";
      ok = ok && first && every;
    }
    const double ref_peak = mib(double(ref.peak_kb - ref.rss_before_kb) * 1024.0);
    std::printf("%-17s %3d %9.1f %10.1f %9.1f %8.1f %8.2f %8.2f %8.3f %8.3f  %s\n", p.name.c_str(),
                m.threads, mib(double(m.pool_bytes)), peak, m.train_ms, m.fwd_ms,
                m.train_ms / m.fwd_ms, m.train_ms / ref.train_ms,
                double(m.pool_bytes) / double(ref.pool_bytes), peak / ref_peak, same.c_str());
    if (!m.hwm_reset) std::printf("  (VmHWM could not be reset: the peak includes the setup)\n");
    std::fflush(stdout);
  }
  std::printf("(load average 1/5/15 min after this table: %s)\n", loadavg().c_str());
  return ok;
}

bool parse_policies(const std::string& list, std::vector<Policy>* out) {
  out->assign(1, Policy{"store-all", MemoryPolicy::StoreAll, 0});  // always first: the reference
  size_t at = 0;
  while (at <= list.size()) {
    const size_t end = std::min(list.find(',', at), list.size());
    const std::string name = list.substr(at, end - at);
    at = end + 1;
    std::string s = name;
    auto strip = [&](const std::string& suffix) {
      const bool has = s.size() > suffix.size() &&
                       s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
      if (has) s.resize(s.size() - suffix.size());
      return has;
    };
    const bool bf16 = strip("-bf16");
    const bool unfused = strip("-unfused");
    if (s == "store-all") {
      if (unfused || bf16) out->push_back(Policy{name, MemoryPolicy::StoreAll, 0, !unfused, bf16});
      continue;
    }
    if (s.rfind("ckpt-", 0) != 0 || std::atoi(s.c_str() + 5) < 1) return false;
    out->push_back(
        Policy{name, MemoryPolicy::Checkpoint, std::atoi(s.c_str() + 5), !unfused, bf16});
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  Config c;
  int threads = 0, repeats = 3;
  bool all = false;
  std::string policy_list = "store-all,ckpt-1,ckpt-2,ckpt-5,ckpt-10";
  bool bad = false;
  for (int i = 1; i < argc && !bad; ++i) {
    const std::string a = argv[i];
    if (a == "--all") {
      all = true;
      continue;
    }
    if (i + 1 >= argc) {
      bad = true;
      break;
    }
    const char* v = argv[++i];
    if (a == "--preset")
      c.preset = v;
    else if (a == "--size")
      c.size = std::atoi(v);
    else if (a == "--batch")
      c.batch = std::atoll(v);
    else if (a == "--steps")
      c.steps = std::atoi(v);
    else if (a == "--threads")
      threads = std::atoi(v);
    else if (a == "--repeats")
      repeats = std::atoi(v);
    else if (a == "--policies")
      policy_list = v;
    else
      bad = true;
  }
  std::vector<Policy> policies;
  bad = bad || c.size < 1 || c.batch < 1 || c.steps < 1 || repeats < 1 || threads < 0 ||
        !parse_policies(policy_list, &policies);
  if (bad) {
    std::fprintf(stderr,
                 "usage: %s [--preset P] [--size HW] [--batch B] [--steps T] [--threads N] "
                 "[--repeats R] [--policies store-all,ckpt-K,...[-unfused][-bf16]] [--all]\n"
                 "  store-all always runs first (the reference of the ratios and gradients)\n",
                 argv[0]);
    return 64;
  }
  char host[256] = "?", date[64] = "?";
  gethostname(host, sizeof host);
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S UTC", std::gmtime(&now));
  std::printf("# bptt_bench on %s, %s, --threads %d (0 = all cores; thr = threads used)\n", host,
              date, threads);
  std::printf(
      "# peak+ = VmHWM after the first training step - VmRSS before it (VmHWM reset "
      "via /proc/self/clear_refs; one fresh child process per policy);\n"
      "# pool = Bptt::pool_bytes(); SA = store-all in the same run; trn/fwd = train step "
      "/ forward-only (grads = nullptr)\n");
  bool ok = run_config(c, policies, threads, repeats);
  if (all) {
    const Config small{"DyRCNNx2", 32, 16, 10};
    ok = run_config(small, policies, threads, repeats) && ok;
  }
  if (!ok) std::printf("\nFAILED: a policy did not run or its gradients differ from store-all's\n");
  return ok ? 0 : 70;
}
