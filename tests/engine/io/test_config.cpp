// ConfigSchema / Config: valid files, defaults vs explicit keys, every error class with its exact
// FILE:LINE:COL on the bad-input corpus in tests/data/config/, --set overrides, number-or-map
// keys, arrays of tables, the TOML round trip and the JSON output.
#include <doctest/doctest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/core/errors.h"
#include "engine/io/config.h"

using namespace dynsim;
namespace fs = std::filesystem;

namespace {

// A small schema shaped like dynsim's own: sections, every key type, two arrays of tables.
ConfigSchema test_schema() {
  ConfigSchema area;
  area.add_string("name", "", "area name").required();
  area.add_int("channels", 16, "output channels").at_least(1);
  area.add_int("delay", 0, "recurrent delay in steps").at_least(0).optional();
  ConfigSchema conn;
  conn.add_string("from", "", "source area").required();
  conn.add_string("to", "", "target area").required();
  conn.add_enum("kind", {"feedforward", "feedback", "skip"}, "feedforward", "connection kind");
  conn.add_int("delay", 1, "delay in steps").at_least(0);

  ConfigSchema s;
  s.add_string("run.name", "run", "run name");
  s.add_bool("run.verbose", false, "log every step");
  s.add_int("run.seed", 0, "random seed").at_least(0);
  s.add_double("dynamics.dt", 2.0, "integration step (ms)").greater_than(0);
  s.add_double("dynamics.t_max", 100.0, "simulated time (ms)").greater_than(0);
  s.add_enum("dynamics.solver", {"euler", "rk4"}, "euler", "ODE solver");
  s.add_enum("model.recurrence_type", {"full", "self", "depthpointwise", "none"}, "full",
             "recurrent connection type");
  s.add_enum("model.feedback", {"add", "multiply", "none"}, "none", "feedback mode");
  s.add_number_or_map("model.tau", 5.0, "time constant (ms), one or per area").greater_than(0);
  s.add_map("model.gain", {{"V1", 1.0}}, "gain per area").range(0, 10);
  s.add_int("model.delay", 0, "feedback delay (steps)").at_least(0).optional();
  s.add_string("data.path", "", "dataset directory").required();
  s.add_doubles("data.mean", {0.5, 0.5, 0.5}, "per-channel mean").length(3);
  s.add_strings("data.classes", {}, "class names");
  s.add_table_array("area", area, "areas, input to output").min_length(1);
  s.add_table_array("connection", conn, "extra connections");
  return s;
}

const std::string kMinimal = "[data]\npath = \"x\"\n[[area]]\nname = \"V1\"\n";

std::string data(const std::string& name) {
  return std::string(DYNSIM_TEST_DATA) + "/config/" + name;
}

// The message of the ConfigError that loading `file` throws ("" if none); file paths are cut
// down to the file name so that expected messages read like the corpus.
std::string load_error(const std::string& file, const std::vector<std::string>& overrides = {}) {
  try {
    Config::load(data(file), test_schema(), overrides);
  } catch (const ConfigError& e) {
    std::string m = e.what();
    const std::string dir = data("");
    for (size_t p; (p = m.find(dir)) != std::string::npos;) m.erase(p, dir.size());
    return m;
  }
  return "";
}

std::string parse_error(const std::string& text, const std::vector<std::string>& overrides) {
  try {
    Config::parse(text, "t.toml", test_schema(), overrides);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

std::string tmp_path(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("dynsim_test_config_" + std::to_string(::getpid()));
  fs::create_directories(d);
  return (d / name).string();
}

}  // namespace

TEST_CASE("config: a valid file gives typed values, defaults filled in") {
  Config c = Config::load(data("valid.toml"), test_schema());
  CHECK(c.get_string("run.name") == "valid run");
  CHECK(c.get_int("run.seed") == 7);
  CHECK(c.get_bool("run.verbose") == false);
  CHECK(c.get_double("dynamics.dt") == 1.0);  // written as the integer 1
  CHECK(c.get_double("dynamics.t_max") == 100.0);
  CHECK(c.get_string("dynamics.solver") == "rk4");
  CHECK(c.get_string("model.recurrence_type") == "self");
  CHECK(c.get_string("model.feedback") == "none");
  CHECK(c.get_doubles("data.mean") == std::vector<double>{0.485, 0.456, 0.406});
  CHECK(c.get_strings("data.classes") == std::vector<std::string>{"cat", "dog"});
  CHECK(c.get_map("model.gain") == std::map<std::string, double>{{"V1", 1.0}});
  CHECK(c.get_int("model.delay") == 0);
  CHECK(c.source_name() == data("valid.toml"));

  const std::vector<Config>& areas = c.tables("area");
  REQUIRE(areas.size() == 2);
  CHECK(areas[0].get_string("name") == "V1");
  CHECK(areas[0].get_int("channels") == 64);
  CHECK_FALSE(areas[0].has("delay"));
  CHECK(areas[1].get_string("name") == "IT");
  CHECK(areas[1].get_int("channels") == 16);
  CHECK(areas[1].get_int("delay") == 2);
  REQUIRE(c.tables("connection").size() == 1);
  CHECK(c.tables("connection")[0].get_string("kind") == "feedback");
  CHECK(c.tables("connection")[0].get_int("delay") == 1);
}

TEST_CASE("config: has() tells given keys from defaults; optional keys may be absent") {
  Config c = Config::parse(kMinimal, "min.toml", test_schema());
  CHECK(c.has("data.path"));
  CHECK_FALSE(c.has("dynamics.dt"));
  CHECK(c.get_double("dynamics.dt") == 2.0);
  CHECK(c.get_string("run.name") == "run");
  CHECK(c.get_strings("data.classes").empty());
  CHECK(c.has("area"));
  CHECK_FALSE(c.has("connection"));
  CHECK(c.tables("connection").empty());
  // An optional key without a default: absent is not zero.
  CHECK_FALSE(c.has("model.delay"));
  CHECK_THROWS_WITH_AS(c.get_int("model.delay"), doctest::Contains("check has()"), Error);
  Config z = Config::parse(kMinimal + "[model]\ndelay = 0\n", "z.toml", test_schema());
  CHECK(z.has("model.delay"));
  CHECK(z.get_int("model.delay") == 0);
  // Where values come from.
  CHECK(c.where("data.path") == "min.toml:2:8");
  CHECK(c.where("dynamics.dt") == "min.toml");
  CHECK(c.tables("area")[0].where("channels") == "min.toml:3:1");
}

TEST_CASE("config: unknown keys, with a suggestion") {
  CHECK(load_error("unknown_key.toml") ==
        "unknown_key.toml:5:1: key 'model.recurence_type': unknown key (did you mean "
        "'model.recurrence_type'?)");
  // A key put in the wrong section points to the section that has it.
  CHECK(load_error("wrong_section.toml") ==
        "wrong_section.toml:5:1: key 'model.dt': unknown key (did you mean 'dynamics.dt'?)");
  CHECK(parse_error(kMinimal + "[modle]\nfeedback = \"add\"\n", {}) ==
        "t.toml:5:2: key 'modle': unknown key (did you mean 'model'?)");
  CHECK(parse_error("zzzzzz = 1\n" + kMinimal, {}) == "t.toml:1:1: key 'zzzzzz': unknown key");
}

TEST_CASE("config: wrong types, enum values, ranges, array lengths") {
  CHECK(load_error("wrong_type.toml") ==
        "wrong_type.toml:4:6: key 'dynamics.dt': expected a number, got a string\n"
        "wrong_type.toml:6:8: key 'run.seed': expected an integer, got a floating-point number\n"
        "wrong_type.toml:7:11: key 'run.verbose': expected a boolean, got a string");
  CHECK(load_error("bad_enum.toml") ==
        "bad_enum.toml:4:10: key 'dynamics.solver': 'rk5' is not allowed (allowed: 'euler', "
        "'rk4'); did you mean 'rk4'?");
  CHECK(load_error("out_of_range.toml") ==
        "out_of_range.toml:4:6: key 'dynamics.dt': 0 is out of range (must be > 0)\n"
        "out_of_range.toml:6:8: key 'run.seed': -3 is out of range (must be >= 0)\n"
        "out_of_range.toml:8:15: key 'model.gain.V1': 11 is out of range (must be in [0, 10])");
  CHECK(load_error("array_errors.toml") ==
        "array_errors.toml:3:14: key 'data.mean[1]': expected a number, got a string\n"
        "array_errors.toml:4:19: key 'data.classes[1]': expected a string, got an integer");
  CHECK(load_error("array_length.toml") ==
        "array_length.toml:3:8: key 'data.mean': expected exactly 3 element(s), got 2");
  CHECK(parse_error(kMinimal + "[dynamics]\ndt = nan\n", {}) ==
        "t.toml:6:6: key 'dynamics.dt': nan is not allowed");
  CHECK(parse_error(kMinimal + "[dynamics.dt]\nx = 1\n", {}) ==
        "t.toml:5:1: key 'dynamics.dt': expected a number, got a table");
  CHECK(parse_error("run = 3\n" + kMinimal, {}) ==
        "t.toml:1:7: key 'run': expected a table, got an integer");
}

TEST_CASE("config: missing keys, syntax errors, unreadable files") {
  CHECK(load_error("missing_required.toml") ==
        "missing_required.toml: key 'data.path': missing required key");
  CHECK(load_error("no_areas.toml") ==
        "no_areas.toml: key 'area': missing: at least 1 [[area]] table(s) required");
  CHECK(parse_error("area = []\n[data]\npath = \"x\"\n", {}) ==
        "t.toml:1:8: key 'area': expected at least 1 [[area]] table(s), got 0");
  CHECK(load_error("syntax_error.toml") ==
        "syntax_error.toml:4:6: TOML syntax error: Error while parsing value: could not determine "
        "value type");
  CHECK(load_error("duplicate_key.toml") ==
        "duplicate_key.toml:3:6: TOML syntax error: Error while parsing key-value pair: cannot "
        "redefine existing floating-point 'dt'");
  CHECK_THROWS_WITH_AS(Config::load(data("no_such_file.toml"), test_schema()),
                       doctest::Contains("no_such_file.toml: cannot read config file"),
                       NoInputError);
  CHECK_THROWS_WITH_AS(Config::load(data(""), test_schema()), doctest::Contains("is a directory"),
                       NoInputError);
  try {
    Config::load(data("bad_enum.toml"), test_schema());
  } catch (const ConfigError& e) {
    CHECK(e.code() == ExitCode::Config);
    CHECK(int(e.code()) == 78);
  }
}

TEST_CASE("config: arrays of tables validate each element against its schema") {
  CHECK(load_error("area_errors.toml") ==
        "area_errors.toml:6:1: key 'area[0].chanels': unknown key (did you mean "
        "'area[0].channels'?)\n"
        "area_errors.toml:8:1: key 'area[1].name': missing required key\n"
        "area_errors.toml:9:12: key 'area[1].channels': 0 is out of range (must be >= 1)\n"
        "area_errors.toml:14:8: key 'connection[0].kind': 'lateral' is not allowed (allowed: "
        "'feedforward', 'feedback', 'skip')");
  CHECK(load_error("area_not_array.toml") ==
        "area_not_array.toml:3:1: key 'area': expected an array of tables ([[area]]), got a table");
  CHECK(parse_error("connection = [1, 2]\n" + kMinimal, {}) ==
        "t.toml:1:14: key 'connection': expected an array of tables ([[connection]]), got an "
        "array");
  // Semantic checks by the caller name the element.
  Config c = Config::load(data("valid.toml"), test_schema());
  const Config& it = c.tables("area")[1];
  CHECK_THROWS_WITH_AS(it.fail("name", "no such area"),
                       doctest::Contains("valid.toml:25:8: key 'area[1].name': no such area"),
                       ConfigError);
  CHECK_THROWS_WITH_AS(it.fail("channels", "too many"),
                       doctest::Contains("valid.toml:24:1: key 'area[1].channels': too many"),
                       ConfigError);
}

TEST_CASE("config: number_or_map keys take a number or a table of numbers") {
  Config one = Config::parse(kMinimal + "[model]\ntau = 4\n", "t.toml", test_schema());
  CHECK_FALSE(one.is_map("model.tau"));
  CHECK(one.get_double("model.tau") == 4.0);
  CHECK(one.get_double_for("model.tau", "V1") == 4.0);
  CHECK_THROWS_WITH_AS(one.get_map("model.tau"),
                       doctest::Contains("t.toml:6:7: key 'model.tau': expected a table"),
                       ConfigError);

  Config per = Config::load(data("valid.toml"), test_schema());
  CHECK(per.is_map("model.tau"));
  CHECK(per.get_map("model.tau") == std::map<std::string, double>{{"IT", 3.0}, {"V1", 5.0}});
  CHECK(per.get_double_for("model.tau", "IT") == 3.0);
  CHECK_THROWS_WITH_AS(per.get_double_for("model.tau", "V4"),
                       doctest::Contains("valid.toml:12:7: key 'model.tau': no entry for 'V4'"),
                       ConfigError);
  CHECK_THROWS_WITH_AS(per.get_double("model.tau"),
                       doctest::Contains("expected a single number here, got a table"),
                       ConfigError);
  CHECK(per.get_double_for("model.gain", "V1") == 1.0);

  Config def = Config::parse(kMinimal, "t.toml", test_schema());
  CHECK(def.get_double("model.tau") == 5.0);
  CHECK(load_error("map_errors.toml") ==
        "map_errors.toml:4:14: key 'model.tau.V1': expected a number, got a string\n"
        "map_errors.toml:4:27: key 'model.tau.V2': -1 is out of range (must be > 0)\n"
        "map_errors.toml:5:8: key 'model.gain': expected a table of numbers, got a "
        "floating-point number");
  CHECK(parse_error(kMinimal + "[model]\ntau = \"x\"\n", {}) ==
        "t.toml:6:7: key 'model.tau': expected a number or a table of numbers, got a string");
}

TEST_CASE("config: --set overrides replace or add values") {
  Config c =
      Config::load(data("valid.toml"), test_schema(),
                   {"dynamics.dt=0.5", "model.feedback=\"add\"", "model.recurrence_type=none",
                    "run.name=2024", "area[1].channels=8", "model.gain.V4=2", "model.tau.V2=4",
                    "connection[0].kind=skip", "data.mean=[1, 2, 3]", "run.verbose = true"});
  CHECK(c.get_double("dynamics.dt") == 0.5);
  CHECK(c.where("dynamics.dt") == "--set dynamics.dt=0.5");
  CHECK(c.get_string("model.feedback") == "add");
  CHECK(c.get_string("model.recurrence_type") == "none");  // bare text for enum keys
  CHECK(c.get_string("run.name") == "2024");               // and for string keys
  CHECK(c.tables("area")[1].get_int("channels") == 8);
  CHECK(c.tables("area")[1].where("channels") == "--set area[1].channels=8");
  // One map entry: a map the file leaves out starts from the default.
  CHECK(c.get_map("model.gain") == std::map<std::string, double>{{"V1", 1.0}, {"V4", 2.0}});
  CHECK(c.get_map("model.tau") ==
        std::map<std::string, double>{{"IT", 3.0}, {"V1", 5.0}, {"V2", 4.0}});
  CHECK(c.tables("connection")[0].get_string("kind") == "skip");
  CHECK(c.get_doubles("data.mean") == std::vector<double>{1, 2, 3});
  CHECK(c.get_bool("run.verbose"));
  // Overrides make keys given; without a file (empty text) they are the whole configuration.
  // Index N of an array of N tables appends one.
  Config d = Config::parse("", "<none>", test_schema(),
                           {"data.path=/d", "dynamics.t_max=5", "area[0].name=V1",
                            "area[1].name=V2", "area[1].channels=3"});
  CHECK(d.has("dynamics.t_max"));
  CHECK(d.get_double("dynamics.t_max") == 5.0);
  REQUIRE(d.tables("area").size() == 2);
  CHECK(d.tables("area")[1].get_string("name") == "V2");
  CHECK(d.tables("area")[1].get_int("channels") == 3);
}

TEST_CASE("config: bad --set overrides are named by their text") {
  CHECK(parse_error(kMinimal, {"dynamics.dtt=1"}) ==
        "--set dynamics.dtt=1: key 'dynamics.dtt': unknown key (did you mean 'dynamics.dt'?)");
  CHECK(parse_error(kMinimal, {"dynamics.dt=\"x\""}) ==
        "--set dynamics.dt=\"x\": key 'dynamics.dt': expected a number, got a string");
  CHECK(parse_error(kMinimal, {"dynamics.dt=abc"}) ==
        "--set dynamics.dt=abc: key 'dynamics.dt': cannot parse 'abc' as a TOML value");
  CHECK(parse_error(kMinimal, {"run.seed=-1"}) ==
        "--set run.seed=-1: key 'run.seed': -1 is out of range (must be >= 0)");
  CHECK(parse_error(kMinimal, {"model.feedback=mul"}) ==
        "--set model.feedback=mul: key 'model.feedback': 'mul' is not allowed (allowed: 'add', "
        "'multiply', 'none')");
  CHECK(parse_error(kMinimal, {"dynamics.dt"}) ==
        "--set dynamics.dt: key 'dynamics.dt': expected KEY=VALUE");
  CHECK(parse_error(kMinimal, {"dynamics=1"}) ==
        "--set dynamics=1: key 'dynamics': 'dynamics' is a section, not a key");
  CHECK(parse_error(kMinimal, {"area[3].name=x"}) ==
        "--set area[3].name=x: key 'area[3].name': there is no [[area]] table #3 (the "
        "configuration has 1)");
  CHECK(parse_error(kMinimal, {"area[1].channels=2"}) ==
        "--set area[1].channels=2: key 'area[1].name': missing required key");
  CHECK(parse_error(kMinimal, {"area.name=x"}) ==
        "--set area.name=x: key 'area.name': 'area' is an array of tables: set area[N].KEY=VALUE");
  CHECK(parse_error(kMinimal, {"area[0].nmae=x"}) ==
        "--set area[0].nmae=x: key 'area[0].nmae': unknown key (did you mean 'area[0].name'?)");
  CHECK(parse_error(kMinimal, {"area[].name=x"}) ==
        "--set area[].name=x: key 'area[].name': malformed key");
  CHECK(parse_error(kMinimal, {"run[0].seed=1"}) ==
        "--set run[0].seed=1: key 'run[0].seed': 'run' is not an array of tables");
  CHECK(parse_error(kMinimal, {"dynamics.dt.x=1"}) ==
        "--set dynamics.dt.x=1: key 'dynamics.dt.x': 'dynamics.dt' is a value, not a table");
  CHECK(parse_error(kMinimal + "[model]\ntau = 2.0\n", {"model.tau.V1=1"}) ==
        "--set model.tau.V1=1: key 'model.tau.V1': 'model.tau' is not a table here (set the "
        "whole value)");
  CHECK(parse_error(kMinimal, {"model.gain.V1=-1"}) ==
        "--set model.gain.V1=-1: key 'model.gain.V1': -1 is out of range (must be in [0, 10])");
  // File errors come first, in file order, then the overrides'.
  CHECK(parse_error(kMinimal + "[run]\nseed = -2\n", {"run.verbose=2", "x=1"}) ==
        "t.toml:6:8: key 'run.seed': -2 is out of range (must be >= 0)\n"
        "--set x=1: key 'x': unknown key\n"
        "--set run.verbose=2: key 'run.verbose': expected a boolean, got an integer");
}

TEST_CASE("config: to_toml reloads to the same effective configuration") {
  for (const std::vector<std::string>& overrides : std::vector<std::vector<std::string>>{
           {},
           {"run.name=a \"quoted\"\\ name\ttab é", "model.tau=2.5", "dynamics.dt=0.1",
            "data.mean=[1e-300, -0.0, 1e300]"},
           {"model.gain={\"odd key\" = 1, V2 = 0.3}"}}) {
    Config c = Config::load(data("valid.toml"), test_schema(), overrides);
    const std::string text = c.to_toml();
    Config back = Config::parse(text, "roundtrip.toml", test_schema());
    CHECK(back.to_json() == c.to_json());
    CHECK(back.to_toml() == text);
    CHECK(back.has("model.tau"));
  }
  // Absent optional keys and empty arrays of tables stay absent.
  Config m = Config::parse(kMinimal, "m.toml", test_schema());
  Config back = Config::parse(m.to_toml(), "back.toml", test_schema());
  CHECK_FALSE(back.has("model.delay"));
  CHECK_FALSE(back.has("connection"));
  CHECK(back.to_json() == m.to_json());
  CHECK(m.to_toml().find("delay") == std::string::npos);
  CHECK(m.to_toml().find("[dynamics]\ndt = 2.0\nt_max = 100.0\nsolver = \"euler\"\n") !=
        std::string::npos);
}

TEST_CASE("config: JSON output has every key with its effective value") {
  Config c = Config::load(data("valid.toml"), test_schema(), {"dynamics.dt=0.25"});
  nlohmann::json j = c.to_json();
  CHECK(j["dynamics"]["dt"] == 0.25);
  CHECK(j["dynamics"]["t_max"] == 100.0);
  CHECK(j["dynamics"]["solver"] == "rk4");
  CHECK(j["run"]["seed"] == 7);
  CHECK(j["run"]["verbose"] == false);
  CHECK(j["model"]["tau"] == nlohmann::json{{"IT", 3.0}, {"V1", 5.0}});
  CHECK(j["model"]["delay"] == 0);
  CHECK(j["data"]["mean"] == nlohmann::json{0.485, 0.456, 0.406});
  CHECK(j["area"].size() == 2);
  CHECK(j["area"][0]["delay"].is_null());  // optional, absent
  CHECK(j["area"][1]["delay"] == 2);
  CHECK(j["connection"][0]["delay"] == 1);
  size_t leaves = 0;
  for (auto& sec : j.items())
    if (sec.value().is_object()) leaves += sec.value().size();
  CHECK(leaves == 14);  // all 14 sectioned keys of the schema

  const std::string p = tmp_path("effective.json");
  c.write_json(p);
  std::ifstream f(p);
  CHECK(nlohmann::json::parse(f) == j);
  CHECK_FALSE(fs::exists(p + ".tmp"));
  CHECK_THROWS_AS(c.write_json("/nonexistent-dir-for-dynsim/c.json"), IoError);
  const std::string t = tmp_path("effective.toml");
  c.write_toml(t);
  CHECK(Config::load(t, test_schema()).to_json() == j);
}

TEST_CASE("config: describe() lists every key; misuse is a programming error") {
  const std::string d = test_schema().describe();
  CHECK(d.find("dynamics.dt ") != std::string::npos);
  CHECK(d.find("float > 0") != std::string::npos);
  CHECK(d.find("enum(euler|rk4)") != std::string::npos);
  CHECK(d.find("integration step (ms)") != std::string::npos);
  CHECK(d.find("area[N].name") != std::string::npos);
  CHECK(d.find("required") != std::string::npos);
  CHECK(d.find("{V1 = 1.0}") != std::string::npos);
  CHECK(std::count(d.begin(), d.end(), '\n') == 16 + 3 + 4);

  Config c = Config::parse(kMinimal, "t.toml", test_schema());
  auto is_software_error = [](auto&& fn) {
    try {
      fn();
    } catch (const ConfigError&) {
      return false;
    } catch (const Error& e) {
      return e.code() == ExitCode::Software;
    }
    return false;
  };
  CHECK(is_software_error([&] { c.get_double("dynamics.nope"); }));
  CHECK(is_software_error([&] { c.get_int("dynamics.dt"); }));
  CHECK(is_software_error([&] { c.get_string("run.seed"); }));
  CHECK(is_software_error([&] { c.tables("run.seed"); }));
  CHECK(is_software_error([&] { c.has("dynamics"); }));
  CHECK(is_software_error([&] { Config().get_bool("x"); }));
  CHECK(c.get_double("run.seed") == 0.0);  // ints widen

  ConfigSchema s;
  s.add_int("a.b", 1, "");
  CHECK_THROWS_AS(s.add_int("a.b", 1, ""), Error);
  CHECK_THROWS_AS(s.add_int("a", 1, ""), Error);
  CHECK_THROWS_AS(s.add_int("a.b.c", 1, ""), Error);
  CHECK_THROWS_AS(s.add_int("a..c", 1, ""), Error);
  CHECK_THROWS_AS(s.add_enum("e", {"x", "y"}, "z", ""), Error);
}
