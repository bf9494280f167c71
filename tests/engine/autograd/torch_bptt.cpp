// Reverse mode through time (engine/autograd/bptt.h) on DyRCNNx4 against PyTorch autograd of the
// independent re-implementation (tests/python/torch_ref_bptt.py, f32): the same weights, input
// [2, T, 3, 16, 16] and labels [B, T] (-1 masked); loss = CE (ignore -1) + activity_weight *
// legacy activity loss, with idle steps, TBPTT and trainable tau in some cases. Compared: the
// loss (1e-5 relative), the logits, and every trainable parameter's gradient by
// ||g_dynsim - g_torch|| / ||g_torch|| < 1e-4 (absolutely, < 1e-7, where torch's is all zero).
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <set>

#include "engine/autograd/bptt.h"
#include "models/dyrcnn/dyrcnn.h"
#include "tests/harness.h"

using namespace dynsim;
using namespace dynsim::test;

namespace dynsim::test {
// Defined in torch_dyrcnn.cpp: options from the first 11 option values of a reference case, and
// the import of its weights.safetensors (every parameter of the graph, names checked).
models::DyRCNNOptions dyrcnn_ref_options(const std::string& name, const Tensor& v, bool* exact,
                                         std::string* label);
void load_ref_weights(Graph& g, const std::string& name);
}  // namespace dynsim::test

namespace {

struct GradDiff {
  double rel = 0;   // ||got - want|| / ||want|| (or max |got| when want is all zero)
  double norm = 0;  // ||want||
  bool absolute = false;
};

GradDiff grad_diff(const Tensor& got, const Tensor& want) {
  REQUIRE(got.shape() == want.shape());
  double d2 = 0, w2 = 0, max_abs = 0;
  for (int64_t i = 0; i < got.numel(); ++i) {
    const double g = got.item(i), w = want.item(i);
    d2 += (g - w) * (g - w);
    w2 += w * w;
    max_abs = std::max(max_abs, std::abs(g));
  }
  GradDiff d;
  d.norm = std::sqrt(w2);
  d.absolute = w2 == 0;
  d.rel = d.absolute ? max_abs : std::sqrt(d2) / d.norm;
  return d;
}

double rel_err(double got, double want) {
  return std::abs(got - want) / std::max(std::abs(want), 1e-30);
}

}  // namespace

TEST_CASE("BPTT gradients of DyRCNNx4 agree with PyTorch autograd" * doctest::test_suite("torch")) {
  int cases = 0;
  for (;; ++cases) {
    const std::string name = "bptt_" + std::to_string(cases);
    if (!std::filesystem::exists(torch_refs_dir() + "/" + name)) break;
    // options = the 11 of torch_dyrcnn.cpp, then [idle, tbptt, activity_weight, train_tau]
    const Tensor v = torch_ref(name, "options");
    REQUIRE(v.numel() == 15);
    bool exact = false;
    std::string label;
    models::DyRCNNOptions o = dyrcnn_ref_options(name, v, &exact, &label);
    const int idle = int(v.item(11)), tbptt = int(v.item(12));
    const double activity_weight = v.item(13);
    o.train_tau = v.item(14) != 0;
    label += concat(" idle ", idle, " tbptt ", tbptt, " activity ", activity_weight,
                    o.train_tau ? " train_tau" : "");
    CAPTURE(label);

    Graph g = models::build_dyrcnn(o);
    load_ref_weights(g, name);
    Context ctx;
    Bptt bptt(ctx, g);
    LossSpec loss;
    loss.ce_weight = 1;
    loss.activity_weight = activity_weight;
    loss.activity_mode = ActivityMode::Legacy;
    BpttOptions opt;
    opt.run.idle_steps = idle;
    opt.tbptt = tbptt;
    ParamStore grads = Bptt::zero_grads(ctx, g.params);
    const Tensor input = torch_ref(name, "input");
    const Tensor labels = torch_ref(name, "labels");
    REQUIRE(labels.dtype() == DType::I32);
    const LossValues lv = bptt.run(input, labels, {}, loss, opt, &grads);

    // Loss: [total, ce, activity] (activity computed by torch even where its weight is 0).
    const Tensor want_loss = torch_ref(name, "loss");
    REQUIRE(want_loss.numel() == 3);
    CHECK_MESSAGE(rel_err(lv.total, want_loss.item(0)) < 1e-5, "loss ", lv.total, " vs torch ",
                  want_loss.item(0));
    CHECK_MESSAGE(rel_err(lv.ce, want_loss.item(1)) < 1e-5, "ce ", lv.ce, " vs torch ",
                  want_loss.item(1));
    if (activity_weight != 0)
      CHECK_MESSAGE(rel_err(lv.activity, want_loss.item(2)) < 1e-5, "activity ", lv.activity,
                    " vs torch ", want_loss.item(2));

    // Logits, with the tolerance of the forward agreement test (summation order only).
    const Tensor want_logits = torch_ref(name, "logits");
    REQUIRE(lv.logits.shape() == want_logits.shape());
    double scale = 0, logit_diff = 0;
    for (int64_t i = 0; i < want_logits.numel(); ++i) {
      scale = std::max(scale, std::abs(want_logits.item(i)));
      logit_diff = std::max(logit_diff, std::abs(lv.logits.item(i) - want_logits.item(i)));
    }
    require_close(lv.logits, want_logits, 1e-5 * std::max(scale, 1.0), 1e-5, label + " logits");

    // Gradients: torch wrote one file per trainable parameter; the two name sets must be equal.
    std::set<std::string> torch_names;
    for (const auto& e :
         std::filesystem::directory_iterator(torch_refs_dir() + "/" + name + "/grads"))
      torch_names.insert(e.path().stem().string());
    std::set<std::string> ours;
    for (const ParamStore::Entry& e : grads.entries()) ours.insert(e.name);
    CHECK(ours == torch_names);
    std::string worst = "-";
    double worst_rel = 0, worst_abs = 0;
    int zero = 0;
    for (const ParamStore::Entry& e : grads.entries()) {
      if (!torch_names.count(e.name)) continue;
      const Tensor got = ctx.host_view(e.value);
      const GradDiff d = grad_diff(got, torch_ref(name, "grads/" + e.name));
      if (d.absolute) {
        CHECK_MESSAGE(d.rel < 1e-7, e.name, ": torch's gradient is zero, dynsim's max |g| ", d.rel);
        worst_abs = std::max(worst_abs, d.rel);
        ++zero;
        continue;
      }
      CHECK_MESSAGE(d.rel < 1e-4, e.name, ": ||g - g_torch|| / ||g_torch|| = ", d.rel,
                    " (||g_torch|| ", d.norm, ")");
      if (d.rel >= worst_rel) {
        worst_rel = d.rel;
        worst = e.name;
      }
    }
    MESSAGE(
        label, ": loss ", lv.total, " (torch ", want_loss.item(0), ", rel ",
        rel_err(lv.total, want_loss.item(0)), "); logits max|diff| ", logit_diff, "; ",
        grads.entries().size(), " grads, max rel ", worst_rel, " (", worst, ")",
        zero ? concat("; ", zero, " zero in torch, dynsim's max |g| ", worst_abs) : std::string());
  }
  CHECK(cases >= 11);
}
