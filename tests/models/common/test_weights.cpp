// Weight interchange (models/common/weights.h): export_weights then import_weights into a graph
// built with another seed restores every parameter bit for bit and the simulation's logits and
// rates; DynVision's alias keys and buffers are ignored; wrong shapes, unknown and missing keys are
// errors naming the key (and both shapes). Torch suite: a DynVision-style state dict made by
// torch (tests/python/torch_ref_weights.py), converted by tools/python/export_dynvision.py,
// imports with every value intact, in-process and through `dynsim simulate --weights`.
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <set>

#include "engine/dynamics/scheduler.h"
#include "engine/io/config.h"
#include "engine/io/npy.h"
#include "engine/io/safetensors.h"
#include "models/common/weights.h"
#include "models/config/sim_config.h"
#include "models/dyrcnn/dyrcnn.h"
#include "tests/harness.h"

using namespace dynsim;
using namespace dynsim::test;
namespace fs = std::filesystem;

namespace {

// A per-process folder for the files these tests write, removed when the test binary exits.
struct ScratchDir {
  fs::path path = fs::temp_directory_path() / ("dynsim_test_weights_" + std::to_string(::getpid()));
  ScratchDir() { fs::create_directories(path); }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

std::string tmp_path(const std::string& name) {
  static const ScratchDir dir;
  return (dir.path / name).string();
}

// The graphs exercised: DyRCNN presets over recurrence types, skip and feedback, plus a custom
// graph from a config (its parameters are named after its connections).
struct Model {
  std::string label;
  models::DyRCNNOptions opt;
  std::string custom_toml;  // non-empty: build from this config instead
};

std::vector<Model> models_under_test() {
  auto dy = [](const std::string& preset, const std::string& rec, const std::string& fb) {
    Model m;
    m.label = preset + " " + rec + " feedback " + fb;
    m.opt.preset = preset;
    m.opt.height = m.opt.width = 16;
    m.opt.n_classes = 5;
    m.opt.recurrence_type = rec;
    m.opt.feedback = fb;
    m.opt.delays.t_feedback = 4;
    m.opt.max_weight_init = 0.05;
    return m;
  };
  std::vector<Model> ms = {dy("DyRCNNx4", "full", "add"), dy("DyRCNNx4", "self", "none"),
                           dy("DyRCNNx2", "depthpointwise", "mul"), dy("DyRCNNx8", "local", "none"),
                           dy("DyRCNNx4", "localdepthwise", "add")};
  Model c;
  c.label = "custom graph";
  c.custom_toml = R"(
[model]
preset = "custom"
n_classes = 3
input_channels = 1
input_height = 8
input_width = 8
[[area]]
name = "A"
channels = 4
height = 8
width = 8
[[area]]
name = "B"
channels = 6
height = 4
width = 4
[[connection]]
name = "A.conv"
source = "input"
target = "A"
[[connection]]
name = "A.recurrence"
source = "A"
target = "A"
kind = "recurrent"
operator = "self"
[[connection]]
name = "B.conv"
source = "A"
target = "B"
operator = "twostage"
mid_channels = 5
stride = 2
)";
  ms.push_back(c);
  return ms;
}

Graph build(const Model& m, uint64_t seed) {
  if (m.custom_toml.empty()) {
    models::DyRCNNOptions o = m.opt;
    o.seed = seed;
    return models::build_dyrcnn(o);
  }
  const Config cfg = Config::parse(m.custom_toml, "custom.toml", models::simulate_schema(),
                                   {"model.seed=" + std::to_string(seed)});
  return models::build_graph(cfg);
}

Recording simulate(Graph& g) {
  Context ctx;
  Scheduler s(ctx, g);
  RunOptions ro;
  ro.record = RecordMode::Full;
  const Tensor x = random_uniform(Shape{2, 6, g.input_channels, g.input_height, g.input_width}, 0,
                                  1, 77, DType::F32);
  return s.run(x, ro);
}

TensorFile exported(const Graph& g) {
  const std::string path = tmp_path("export.safetensors");
  models::export_weights(g, path);
  return load_safetensors(path);
}

}  // namespace

TEST_CASE("weights: export, then import into a graph with another seed, restores the model") {
  for (const Model& m : models_under_test()) {
    CAPTURE(m.label);
    Graph a = build(m, 1);
    Graph b = build(m, 2);
    // Another seed draws other weights; the sentinel then proves that import writes them all.
    bool any_differs = false;
    for (const auto& e : a.params.entries())
      for (int64_t i = 0; i < e.value.numel() && !any_differs; ++i)
        any_differs = e.value.item(i) != b.params.get(e.name).item(i);
    CHECK(any_differs);
    for (auto& e : b.params.entries()) e.value.fill(-7.0);

    const TensorFile file = exported(a);
    CHECK(file.tensors.size() == a.params.entries().size());
    CHECK(file.metadata.at("format") == "dynvision-state-dict");
    models::import_weights(b, file, "export.safetensors");
    REQUIRE(b.params.entries().size() == a.params.entries().size());
    for (const auto& e : a.params.entries()) {
      const Tensor& got = b.params.get(e.name);
      CHECK(got.shape() == e.value.shape());
      require_equal(got, e.value, m.label + " " + e.name);
    }
    const Recording ra = simulate(a), rb = simulate(b);
    require_equal(rb.logits, ra.logits, m.label + " logits");
    for (size_t i = 0; i < ra.rates.size(); ++i)
      require_equal(rb.rates[i], ra.rates[i], m.label + " rates " + ra.areas[i]);
  }
}

TEST_CASE("weights: DynVision's alias keys and buffers are ignored") {
  for (const char* key : {"addskip_V4.source.conv.weight", "addskip_IT.source.recurrence.conv.bias",
                          "addfeedback_V1.source.conv.weight", "tstep_V1.tau",
                          "V1.recurrence.local_conv.flat_plane_mapping",
                          "V2.recurrence.local_conv.flat_layer_mapping", "n_residual_timesteps"})
    CHECK_MESSAGE(models::is_ignored_dynvision_key(key), key);
  for (const char* key : {"V1.conv.weight", "addskip_V4.conv.weight", "addfeedback_V1.conv.bias",
                          "tau_V1", "classifier.2.weight", "V1.recurrence.local_conv.conv.weight"})
    CHECK_MESSAGE(!models::is_ignored_dynvision_key(key), key);

  models::DyRCNNOptions o;
  o.height = o.width = 16;
  Graph src = models::build_dyrcnn(o);
  TensorFile file = exported(src);
  // Alias values that differ from the real parameters: were any of them applied, the
  // comparison below would fail.
  Tensor v1 = file.tensors.at("V1.conv.weight").clone();
  v1.fill(1e6);
  file.tensors["addskip_V4.source.conv.weight"] = v1;
  file.tensors["tstep_V1.tau"] = Tensor::from(Shape{}, {123.0});
  file.tensors["V1.recurrence.local_conv.flat_plane_mapping"] =
      Tensor::from(Shape{36}, std::vector<double>(36, 5.0), DType::I32);
  file.tensors["n_residual_timesteps"] = Tensor::from(Shape{}, {7}, DType::I32);
  Graph dst = models::build_dyrcnn(o);
  for (auto& e : dst.params.entries()) e.value.fill(0.0);
  models::import_weights(dst, file, "aliases.safetensors");
  for (const auto& e : src.params.entries()) require_equal(dst.params.get(e.name), e.value, e.name);
}

TEST_CASE("weights: wrong shapes, unknown and missing keys are errors naming the key") {
  models::DyRCNNOptions o;
  o.height = o.width = 16;
  Graph g = models::build_dyrcnn(o);
  const TensorFile good = exported(g);

  TensorFile f = good;
  f.tensors["V2.recurrence.conv.weight"] = Tensor::zeros(Shape{64, 64, 5, 5});
  CHECK_THROWS_WITH_AS(models::import_weights(g, f, "w.safetensors"),
                       doctest::Contains("w.safetensors: key 'V2.recurrence.conv.weight' has shape "
                                         "[64,64,5,5] but the model's parameter is [64,64,3,3]"),
                       DataError);
  f = good;
  f.tensors["classifier.2.bias"] = Tensor::zeros(Shape{11});
  CHECK_THROWS_WITH_AS(models::import_weights(g, f, "w.safetensors"),
                       doctest::Contains("'classifier.2.bias' has shape [11] but the model's "
                                         "parameter is [10]"),
                       DataError);
  f = good;
  f.tensors["V1.conv.bias"] = Tensor::zeros(Shape{36}, DType::I32);
  CHECK_THROWS_WITH_AS(models::import_weights(g, f, "w.safetensors"),
                       doctest::Contains("'V1.conv.bias' holds integers"), DataError);
  f = good;
  f.tensors["V3.conv.weight"] = Tensor::zeros(Shape{2, 2});
  CHECK_THROWS_WITH_AS(models::import_weights(g, f, "w.safetensors"),
                       doctest::Contains("key 'V3.conv.weight' (shape [2,2]) is not a parameter"),
                       DataError);
  f = good;
  f.tensors.erase("addskip_IT.conv.bias");
  CHECK_THROWS_WITH_AS(
      models::import_weights(g, f, "w.safetensors"),
      doctest::Contains("parameter 'addskip_IT.conv.bias' (shape [256]) is missing"), DataError);
  // A checkpoint of another configuration: the model without skips has no addskip_* parameters.
  models::DyRCNNOptions no_skip = o;
  no_skip.skip = false;
  Graph h = models::build_dyrcnn(no_skip);
  CHECK_THROWS_WITH_AS(models::import_weights(h, good, "w.safetensors"),
                       doctest::Contains("key 'addskip_IT.conv.bias'"), DataError);
  // The CLI path: model.weights names a file that is not there.
  const Config cfg = Config::parse("", "(test)", models::simulate_schema(),
                                   {"model.weights=" + tmp_path("absent.safetensors")});
  CHECK_THROWS_WITH_AS(models::build_graph(cfg), doctest::Contains("absent.safetensors"),
                       NoInputError);
}

TEST_CASE("weights: a DynVision state dict exported by export_dynvision.py imports exactly" *
          doctest::test_suite("torch")) {
  const std::string dir = torch_refs_dir() + "/weights_dyrcnnx4";
  REQUIRE(fs::exists(dir + "/weights.safetensors"));
  models::DyRCNNOptions o;
  o.preset = "DyRCNNx4";
  o.height = o.width = 32;
  o.n_classes = 10;
  o.recurrence_type = "full";
  o.skip = true;
  for (const char* file : {"weights.safetensors", "checkpoint.safetensors"}) {
    CAPTURE(file);
    const TensorFile tf = load_safetensors(dir + "/" + file);
    // The file holds DynVision's alias keys and buffers besides the parameters.
    int aliases = 0;
    for (const auto& [key, t] : tf.tensors) aliases += models::is_ignored_dynvision_key(key);
    CHECK(aliases >= 10);
    CHECK(tf.tensors.count("n_residual_timesteps") == 1);
    CHECK(tf.tensors.count("tstep_IT.tau") == 1);
    CHECK(tf.tensors.count("addskip_V4.source.conv.weight") == 1);
    Graph g = models::build_dyrcnn(o);
    for (auto& e : g.params.entries()) e.value.fill(-7.0);
    models::import_weights(g, tf, file);
    CHECK(tf.tensors.size() == g.params.entries().size() + size_t(aliases));
    for (const auto& e : g.params.entries())
      require_equal(e.value, torch_ref("weights_dyrcnnx4/params", e.name), e.name);
  }

  // End to end: `dynsim simulate --weights` runs the imported model; its logits equal an
  // in-process run of the same graph on the same stimulus.
  const std::string out = tmp_path("simulate_weights");
  fs::remove_all(out);
  const std::string cmd = std::string(DYNSIM_CLI) + " simulate -q --preset DyRCNNx4 " +
                          "--set model.input_height=32 --set model.input_width=32 --steps 8 " +
                          "--stimulus flash --onset 1 --weights " + dir +
                          "/weights.safetensors -o " + out + " --set simulation.batch=2";
  const int status = std::system(cmd.c_str());
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  const Config cfg = Config::load(out + "/config.toml", models::simulate_schema());
  Graph g = models::build_graph(cfg);  // imports model.weights again
  const Tensor input = models::build_stimulus(cfg, g);
  Context ctx;
  Scheduler s(ctx, g, models::solver_spec(cfg));
  const Recording r = s.run(input, models::run_options(cfg));
  require_equal(load_npy(out + "/logits.npy"), r.logits, "logits of dynsim simulate --weights");
  for (const auto& e : g.params.entries())
    require_equal(e.value, torch_ref("weights_dyrcnnx4/params", e.name), e.name);
  fs::remove_all(out);
}
