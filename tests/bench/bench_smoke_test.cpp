// Smoke tests of the model benchmark: a tiny synthetic model through the
// layer decoder, the oneDNN baselines, run_model_bench and the `bbits bench`
// and `bbits calibrate` commands (1 repeat; no timing assertions).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <map>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "bbits/bench/calibration.h"
#include "bbits/bench/cost_profile.h"
#include "bbits/bench/model_bench.h"
#include "bbits/bench/model_layers.h"
#include "bbits/bench/onednn_baseline.h"
#include "bbits/bench/peaks.h"
#include "bbits/bench/report.h"
#include "bbits/bench/synthetic.h"
#include "bbits/contract/cost_table.h"
#include "bbits/contract/zoo.h"
#include "bbits/format/cost.h"
#include "bbits/format/model_file.h"
#include "bbits/runtime/plan.h"

namespace bb = bbits::bench;
namespace fs = std::filesystem;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("bbits_bench_smoke_" + std::to_string(::getpid()));
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

// A made-up calibration with a peak for every kernel and baseline, so that
// every layer gets a roofline prediction.
bb::Calibration fake_calibration() {
  bb::Calibration c;
  c.created = "test";
  c.cpu = "test";
  c.commit = "test";
  c.isa = "reference";
  c.read_loop = "scalar";
  c.caches = {{1, 32 << 10, 1}, {2, 1 << 20, 1}};
  c.bandwidth = {{1, "L1", 32 << 10, 16 << 10, 100e9, 0},
                 {1, "L2", 1 << 20, 512 << 10, 50e9, 0},
                 {1, "DRAM", 0, 64 << 20, 10e9, 0}};
  for (const auto& k : bbits::kernels::kernel_table())
    for (const auto& fam : bb::peak_families()) c.peaks.push_back({k.name, fam, 8, 8, "test", 1, 1e9, 0, ""});
  for (const char* b : {"onednn_f32", "onednn_int8"})
    for (const auto& fam : bb::peak_families()) c.peaks.push_back({b, fam, 8, 8, "test", 1, 2e9, 0, ""});
  return c;
}

}  // namespace

TEST(ModelLayers, DecodesTheTinyModel) {
  const auto bytes = bb::tiny_test_model();
  const auto m = bb::ModelLayers::from_memory(bytes.data(), bytes.size(), "tiny");
  ASSERT_EQ(m->layers().size(), 9u);
  EXPECT_EQ(m->layers()[0].family(), "conv2d");
  EXPECT_EQ(m->layers()[1].family(), "max_pool2d");
  EXPECT_EQ(m->layers()[2].family(), "depthwise");
  EXPECT_EQ(m->layers()[3].family(), "pointwise");
  EXPECT_EQ(m->layers()[7].family(), "fully_connected");
  const bb::LayerCost c = m->layers()[0].cost();
  EXPECT_EQ(c.macs, bbits::cost::conv2d_macs(16, 16, 8, 3, 3, 3));
  EXPECT_EQ(c.wbits, 8);
  EXPECT_EQ(c.abits, 8);
  EXPECT_EQ(c.input_bytes, 3 * 16 * 16);
  EXPECT_EQ(c.output_bytes, 8 * 16 * 16);
  EXPECT_EQ(c.weight_bytes, 8 * 27 + 8 * 4);  // int8 rows + int32 bias
  const bb::LayerCost pw = m->layers()[3].cost();
  EXPECT_EQ(pw.wbits, 2);
  EXPECT_EQ(pw.weight_bytes, 8 * 2 + 8 * 4);  // 8 values x 2 bits = 2 bytes per row
  const bb::LayerCost fc = m->layers()[7].cost();
  EXPECT_EQ(fc.output_bytes, 10 * 4);  // float logits
  EXPECT_EQ(m->layers()[4].cost().input_bytes, 2 * 8 * 8 * 8);  // add reads two tensors
}

// The runtime's plan as kernel descriptors (bbits/runtime/plan.h): one step
// per operator, agreeing with the runtime's own layer description.
TEST(RuntimePlan, StepsDescribeEveryOperator) {
  const auto bytes = bb::tiny_test_model();
  const auto model = bbits::Model::from_memory(bytes.data(), bytes.size());
  const auto& info = model->info();
  const std::vector<bbits::PlanStep> steps = bbits::plan_steps(*model);
  ASSERT_EQ(steps.size(), info.layers.size());
  for (size_t i = 0; i < steps.size(); ++i) {
    const bbits::PlanStep& s = steps[i];
    const bbits::LayerInfo& L = info.layers[i];
    ASSERT_NE(s.desc, nullptr);
    EXPECT_EQ(s.index, static_cast<int>(i));
    EXPECT_EQ(std::string(s.kernel), L.kernel);
    EXPECT_NO_THROW(bbits::kernels::check_desc(*s.desc));
    EXPECT_EQ(bbits::kernels::weight_bits(*s.desc), L.weight_bits) << L.name;
    EXPECT_EQ(bbits::kernels::input_bits(*s.desc), L.act_bits) << L.name;
    EXPECT_EQ(bbits::kernels::output_quant(*s.desc).bits, L.out_bits) << L.name;
    if (L.weight_bits > 0) {
      EXPECT_EQ(static_cast<int64_t>(s.weights.size), L.weight_bytes) << L.name;
      EXPECT_EQ(bbits::kernels::op_work(*s.desc), L.macs) << L.name;
      EXPECT_FALSE(s.weights.scales.empty()) << L.name;
    } else {
      EXPECT_EQ(s.weights.data, nullptr) << L.name;
    }
    if (const auto* c = std::get_if<bbits::kernels::ConvDesc>(s.desc)) {
      // N,C,H,W of the file -> the descriptor's N,H,W,C fields.
      EXPECT_EQ((std::vector<int64_t>{c->N, c->C, c->H, c->W}), L.input_shape) << L.name;
      EXPECT_EQ((std::vector<int64_t>{c->N, c->OC, c->out_h(), c->out_w()}), L.output_shape) << L.name;
    }
    if (const auto* p = std::get_if<bbits::kernels::PoolDesc>(s.desc)) {
      EXPECT_EQ((std::vector<int64_t>{p->N, p->C, p->H, p->W}), L.input_shape) << L.name;
      EXPECT_EQ((std::vector<int64_t>{p->N, p->C, p->out_h(), p->out_w()}), L.output_shape) << L.name;
    }
  }
  // The harness's layers are the plan's descriptors and kernel choice.
  const auto m = bb::ModelLayers::from_memory(bytes.data(), bytes.size(), "tiny");
  ASSERT_EQ(m->layers().size(), steps.size());
  for (size_t i = 0; i < steps.size(); ++i) {
    EXPECT_EQ(bbits::kernels::describe(m->layers()[i].desc), bbits::kernels::describe(*steps[i].desc));
    EXPECT_EQ(m->layers()[i].kernel, info.layers[i].kernel);
  }
}

TEST(ModelLayers, RejectsGarbage) {
  const std::string junk = "definitely not a model";
  EXPECT_THROW(bb::ModelLayers::from_memory(junk.data(), junk.size(), "junk"), std::runtime_error);
  EXPECT_THROW(bb::ModelLayers::load("/nonexistent/model.bbm"), std::runtime_error);
}

TEST(OnednnBaseline, BuildsEveryLayerOfTheTinyModel) {
  const auto bytes = bb::tiny_test_model();
  const auto m = bb::ModelLayers::from_memory(bytes.data(), bytes.size(), "tiny");
  for (auto kind : {bb::BaselineKind::F32, bb::BaselineKind::Int8}) {
    bb::OnednnNet net(*m, kind, 1);
    ASSERT_EQ(net.size(), m->layers().size());
    for (size_t i = 0; i < net.size(); ++i) EXPECT_TRUE(net.available(i)) << bb::baseline_name(kind) << " layer " << i << ": " << net.note(i);
    net.run_all();
  }
}

TEST(ModelBench, TinyModelOneRepeat) {
  TempDir dir;
  const std::string path = dir.file("tiny.bbm");
  bbits::format::write_file_atomic(path, bb::tiny_test_model());
  bb::ModelBenchOptions o;
  o.threads = {1};
  o.timing = {.warmup = 0, .repeats = 1, .min_sample_ns = 0};
  o.calibration = fake_calibration();
  const bb::ModelBenchResult r = bb::run_model_bench(path, o);
  ASSERT_EQ(r.rows.rows().size(), 9u + 1u);  // 9 layers + the whole model
  const size_t c_t = r.rows.column_index("t_us"), c_roof = r.rows.column_index("roof_us");
  for (const auto& row : r.rows.rows()) {
    EXPECT_TRUE(std::holds_alternative<double>(row[c_t]));
    EXPECT_TRUE(std::holds_alternative<double>(row[c_roof]));  // every kernel has a (fake) peak
  }
  // BOP prediction of the 2-bit pointwise layer against 8/8: 64 / (2 x 8) = 4.
  const auto& pw = r.rows.rows()[3];
  EXPECT_DOUBLE_EQ(std::get<double>(pw[r.rows.column_index("bop_x8")]), 4.0);
  EXPECT_DOUBLE_EQ(std::get<double>(pw[r.rows.column_index("bop_x32")]), 64.0);
  // Pooling has no BOPs.
  EXPECT_TRUE(std::holds_alternative<std::monostate>(r.rows.rows()[1][r.rows.column_index("bop_x8")]));
  // The whole-model row: time outside the layers of a profiled run, and its
  // share of that run (between 0 and 1); layer rows leave both empty.
  const auto& whole = r.rows.rows().back();
  ASSERT_TRUE(std::holds_alternative<double>(whole[r.rows.column_index("t_outside_us")]));
  const double share = std::get<double>(whole[r.rows.column_index("outside_share")]);
  EXPECT_GT(share, 0.0);
  EXPECT_LT(share, 1.0);
  EXPECT_TRUE(std::holds_alternative<std::monostate>(pw[r.rows.column_index("t_outside_us")]));
  EXPECT_NE(bb::summary_text(r).find("time outside the layers"), std::string::npos);
  EXPECT_TRUE(std::holds_alternative<double>(whole[r.rows.column_index("t_unfused_us")]));
  EXPECT_NE(bb::summary_text(r).find("with residual adds fused"), std::string::npos);
  // Writers: the CSV and JSON parse back with every row and the run facts.
  const bb::CsvDocument doc = bb::parse_csv(bb::to_csv(r.rows, r.meta));
  EXPECT_EQ(doc.rows.size(), r.rows.rows().size());
  EXPECT_EQ(doc.rows[0][doc.index("model")], path);
  EXPECT_FALSE(doc.rows[0][doc.index("commit")].empty());
  const auto j = nlohmann::json::parse(r.to_json().dump());
  EXPECT_EQ(j["rows"].size(), r.rows.rows().size());
  EXPECT_EQ(j["roofline_within_25pct"].size(), 1u);
  EXPECT_FALSE(bb::summary_text(r).empty());
}

// Two threads, two passes, and a calibration whose machine probe the machine
// cannot match (1 ns on one thread, 100x on two): with no time to wait, both
// passes run anyway, the probes before them are recorded, and the results
// carry a warning per thread count.
TEST(ModelBench, PassesAndThreadScalingProbe) {
  TempDir dir;
  const std::string path = dir.file("tiny.bbm");
  bbits::format::write_file_atomic(path, bb::tiny_test_model());
  bb::ModelBenchOptions o;
  o.threads = {1, 2};
  o.passes = 2;
  o.max_wait_s = 0;
  o.baselines = false;
  o.timing = {.warmup = 0, .repeats = 1, .min_sample_ns = 0};
  o.calibration = fake_calibration();
  o.calibration.scaling = {{2, 100.0}};
  o.calibration.probe_ns = 1.0;
  const bb::ModelBenchResult r = bb::run_model_bench(path, o);
  ASSERT_EQ(r.rows.rows().size(), 2u * (9u + 1u));
  std::string scaling, speed1, speed2;
  for (const auto& [k, v] : r.meta) {
    if (k == "thread_scaling_2") scaling = v;
    if (k == "probe_us_1") speed1 = v;
    if (k == "probe_us_2") speed2 = v;
  }
  EXPECT_EQ(scaling.rfind("calibrated 100.00; before each pass ", 0), 0u) << scaling;
  EXPECT_EQ(std::count(scaling.begin(), scaling.end(), '.'), 3) << scaling;  // 100.00 and two probes
  EXPECT_EQ(speed1.rfind("calibrated 0.0; before each pass ", 0), 0u) << speed1;
  EXPECT_EQ(std::count(speed1.begin(), speed1.end(), '.'), 3) << speed1;
  EXPECT_FALSE(speed2.empty());
  ASSERT_EQ(r.warnings.size(), 2u);
  EXPECT_NE(r.warnings[0].find("1 threads: 2 of 2 passes"), std::string::npos) << r.warnings[0];
  EXPECT_NE(r.warnings[1].find("2 threads: 2 of 2 passes"), std::string::npos) << r.warnings[1];
  EXPECT_NE(bb::summary_text(r).find("warning: "), std::string::npos);
  EXPECT_EQ(nlohmann::json::parse(r.to_json().dump())["warnings"].size(), 2u);
  // Without a recorded probe: no probe, no warning.
  o.calibration.scaling.clear();
  o.calibration.probe_ns = 0;
  o.passes = 1;
  const bb::ModelBenchResult q = bb::run_model_bench(path, o);
  EXPECT_TRUE(q.warnings.empty());
  for (const auto& [k, v] : q.meta) {
    EXPECT_NE(k, "thread_scaling_2");
    EXPECT_NE(k, "probe_us_1");
  }
}

TEST(ModelBench, RejectsBadOptions) {
  bb::ModelBenchOptions o;
  o.passes = 0;
  EXPECT_THROW(bb::run_model_bench("x.bbm", o), std::invalid_argument);
  o.passes = 1;
  o.max_wait_s = -1;
  EXPECT_THROW(bb::run_model_bench("x.bbm", o), std::invalid_argument);
  o.max_wait_s = 0;
  o.threads = {0};
  EXPECT_THROW(bb::run_model_bench("x.bbm", o), std::invalid_argument);
  o.threads = {1};
  EXPECT_THROW(bb::run_model_bench("/nonexistent.bbm", o), std::runtime_error);
}

// The `bbits` binary itself, when it was built in this tree.
TEST(BbitsCli, BenchAndCalibrateSmoke) {
  const std::string bin = std::string(BBITS_BINARY_DIR) + "/bin/bbits";
  if (!fs::exists(bin)) GTEST_SKIP() << "bbits CLI not built: " << bin;
  TempDir dir;
  const std::string model = dir.file("tiny.bbm"), cal = dir.file("cal.json"), csv = dir.file("out.csv"),
                    json = dir.file("out.json");
  bbits::format::write_file_atomic(model, bb::tiny_test_model());
  const std::string calibrate = bin + " calibrate --quick --threads 1 --no-onednn --filter fc_ --out " + cal + " > " +
                                dir.file("cal.log") + " 2>&1";
  ASSERT_EQ(std::system(calibrate.c_str()), 0) << bb::read_text(dir.file("cal.log"));
  const bb::Calibration c = bb::Calibration::load(cal);
  EXPECT_FALSE(c.bandwidth.empty());
  EXPECT_FALSE(c.peaks.empty());
  const std::string bench = bin + " bench " + model + " --repeats 1 --warmup 0 --threads 1 --calibration " + cal +
                            " --csv " + csv + " --json-out " + json + " > " + dir.file("bench.log") + " 2>&1";
  ASSERT_EQ(std::system(bench.c_str()), 0) << bb::read_text(dir.file("bench.log"));
  EXPECT_EQ(bb::parse_csv(bb::read_text(csv)).rows.size(), 10u);
  EXPECT_EQ(nlohmann::json::parse(bb::read_text(json))["rows"].size(), 10u);
  // A clear error for a missing model.
  const std::string bad = bin + " bench " + dir.file("missing.bbm") + " --calibration " + cal + " > " +
                          dir.file("bad.log") + " 2>&1";
  EXPECT_NE(std::system(bad.c_str()), 0);
  EXPECT_NE(bb::read_text(dir.file("bad.log")).find("missing.bbm"), std::string::npos);
}

// First use: no calibration in the cache. `bbits bench` says so, runs a
// quick calibration, saves it where `bbits calibrate` would (atomically: no
// temporary left behind) and measures with the roofline columns; the next
// run reuses it. HOME and XDG_CACHE_HOME point into a temporary directory,
// so the test never touches the real cache.
TEST(BbitsCli, BenchCalibratesOnFirstUseAndReusesIt) {
  const std::string bin = std::string(BBITS_BINARY_DIR) + "/bin/bbits";
  if (!fs::exists(bin)) GTEST_SKIP() << "bbits CLI not built: " << bin;
  TempDir dir;
  const std::string model = dir.file("tiny.bbm");
  bbits::format::write_file_atomic(model, bb::tiny_test_model());
  const std::string cache = dir.file("cache"), home = dir.file("home");
  const std::string cal = cache + "/bbits/calibration.json";
  const std::string env = "env -u BBITS_CALIBRATION HOME=" + home + " XDG_CACHE_HOME=" + cache + " ";
  const std::string bench = env + bin + " bench " + model + " --repeats 1 --warmup 0 --passes 1 --threads 1 --no-baselines --csv ";
  ASSERT_EQ(std::system((bench + dir.file("a.csv") + " > " + dir.file("a.log") + " 2>&1").c_str()), 0)
      << bb::read_text(dir.file("a.log"));
  const std::string first = bb::read_text(dir.file("a.log"));
  EXPECT_NE(first.find("bbits bench: no calibration at " + cal + ": running a quick one first"), std::string::npos)
      << first;
  EXPECT_NE(first.find("bbits bench: quick calibration saved to " + cal), std::string::npos) << first;
  const bb::Calibration c = bb::Calibration::load(cal);
  EXPECT_FALSE(c.bandwidth.empty());
  EXPECT_FALSE(c.peaks.empty());
  size_t files = 0;
  for (const auto& e : fs::directory_iterator(cache + "/bbits")) files += (void(e), 1);
  EXPECT_EQ(files, 1u);  // the calibration, no temporary
  EXPECT_FALSE(fs::exists(home + "/.cache"));
  // The roofline columns are there: every layer of the tiny model has a prediction.
  const bb::CsvDocument doc = bb::parse_csv(bb::read_text(dir.file("a.csv")));
  ASSERT_EQ(doc.rows.size(), 10u);
  for (const auto& row : doc.rows) EXPECT_FALSE(row[doc.index("roof_us")].empty()) << row[doc.index("layer")];
  // Second run: the cached calibration, no new one.
  const auto stamp = fs::last_write_time(cal);
  ASSERT_EQ(std::system((bench + dir.file("b.csv") + " > " + dir.file("b.log") + " 2>&1").c_str()), 0)
      << bb::read_text(dir.file("b.log"));
  EXPECT_EQ(bb::read_text(dir.file("b.log")).find("running a quick one"), std::string::npos);
  EXPECT_EQ(fs::last_write_time(cal), stamp);
  // A file the user names is never made up: a missing one stays an error.
  const std::string named = env + bin + " bench " + model + " --repeats 1 --threads 1 --calibration " +
                            dir.file("missing.json") + " > " + dir.file("c.log") + " 2>&1";
  EXPECT_NE(std::system(named.c_str()), 0);
  EXPECT_NE(bb::read_text(dir.file("c.log")).find("missing.json"), std::string::npos);
  EXPECT_FALSE(fs::exists(dir.file("missing.json")));
}

// ---- cost tables (bench/cost_profile.h, `bbits profile`) ---------------------------------

namespace {
bbits::contract::Graph lenet5_graph() {
  bbits::contract::ZooOptions zo;
  zo.input_shape = {1, 28, 28};
  zo.num_classes = 10;
  zo.prune_depthwise = false;
  return bbits::contract::make_graph("lenet5", zo);
}
}  // namespace

TEST(CostProfile, LayerLinksFollowTheConvertersRemovalRule) {
  const auto links = bb::layer_links(lenet5_graph());
  ASSERT_EQ(links.size(), 4u);  // features.0, features.2, classifier.0, classifier.1
  EXPECT_TRUE(links[0].out_removable);
  EXPECT_EQ(links[0].in_from, "");
  EXPECT_EQ(links[1].in_from, "features.0");
  EXPECT_EQ(links[2].in_from, "features.2");
  EXPECT_EQ(links[2].in_per_channel, 16);  // 64 channels x 4 x 4 through the flatten
  EXPECT_EQ(links[3].in_from, "classifier.0");
  EXPECT_FALSE(links[3].out_removable);  // the logits are a graph output
  // A residual network: layers feeding an add keep their pruned channels.
  bbits::contract::ZooOptions zo;
  zo.input_shape = {3, 32, 32};
  zo.num_classes = 10;
  zo.width = 0.125;
  const auto g = bbits::contract::make_graph("resnet18-small", zo);
  const auto rl = bb::layer_links(g);
  size_t i = 0, blocked = 0;
  for (const auto& n : g.nodes) {
    if (!n.is_layer()) continue;
    for (const auto& m : g.nodes)
      if (m.op == bbits::contract::OpKind::Add && (m.inputs[0] == n.name || m.inputs[1] == n.name)) {
        EXPECT_FALSE(rl[i].out_removable) << n.name;
        ++blocked;
      }
    ++i;
  }
  EXPECT_GT(blocked, 0u);
}

TEST(CostProfile, LeNet5TableIsValidMeasuredAndSumsToTheModel) {
  bb::ProfileOptions o;
  o.calibration = fake_calibration();
  o.calibration_path = "fake";
  o.measure = true;
  o.price_measured = true;  // the fake calibration's roofline cannot tell float outputs from 8-bit ones
  o.timing = {.warmup = 0, .repeats = 1, .min_sample_ns = 0};
  const auto g = lenet5_graph();
  std::string progress;
  const bbits::contract::CostTable t = bb::profile_graph(g, o, [&](const std::string& s) { progress += s + "\n"; });
  t.check_graph(g);
  ASSERT_EQ(t.layers.size(), 4u);
  EXPECT_EQ(t.other.size(), 3u);  // two max pools and the flatten
  EXPECT_TRUE(t.measured);
  for (const auto& L : t.layers) {
    ASSERT_EQ(L.measured_us.size(), L.us.size());
    for (size_t i = 0; i < L.us.size(); ++i) {
      EXPECT_TRUE(std::isfinite(L.measured_us[i])) << L.name << " " << i;
      EXPECT_GE(L.measured_us[i], 0.0);
    }
    for (size_t k = L.act_bits.size(); k < L.kernels.size(); ++k) EXPECT_FALSE(L.kernels[k].empty()) << L.name;
  }
  EXPECT_EQ(t.layers[0].act_bits, std::vector<int>{8});  // the network input
  EXPECT_EQ(t.layers[1].act_bits, (std::vector<int>{2, 4, 8, 16, 32}));
  // The whole model at w8a8 is the layers plus the rest; pruning half of
  // features.2 lowers it.
  std::map<std::string, int> w8, a8;
  for (const auto& L : t.layers) w8[L.name] = 8;
  for (const auto& L : t.layers)
    if (L.act_bits.size() > 1) a8[L.name] = 8;
  const double full = t.predict_us(w8, a8, {});
  double sum = t.other_us();
  for (const auto& L : t.layers) sum += t.layer_us(L, 8, L.act_bits.size() > 1 ? 8 : L.act_bits.front(), L.out_channels, L.in_channels);
  EXPECT_NEAR(full, sum, 1e-9 * full);
  EXPECT_LT(t.predict_us(w8, a8, {{"features.2", 32}}), full);
  // features.2's input at 32 bits makes features.0 write floats and the max
  // pool between them run on floats: the extra time is part of its price at
  // 32 bits (the profile says how much; measured here: about 80 us on the
  // 2-core test VM, against 20 us for the whole model at w8a8).
  EXPECT_NE(progress.find("features.2: its input at 16 / 32 bits costs"), std::string::npos) << progress;
  const size_t at = progress.find(" / ", progress.find("features.2: its input at 16 / 32 bits costs ") + 44);
  ASSERT_NE(at, std::string::npos) << progress;
  EXPECT_GT(std::stod(progress.substr(at + 3)), 0.0) << progress;
}

TEST(BbitsCli, ProfileAndBenchAgainstABudget) {
  const std::string bin = std::string(BBITS_BINARY_DIR) + "/bin/bbits";
  const std::string convert = std::string(BBITS_BINARY_DIR) + "/bin/bbits-convert";
  if (!fs::exists(bin) || !fs::exists(convert)) GTEST_SKIP() << "bbits CLI not built";
  TempDir dir;
  const std::string cal = dir.file("cal.json"), table = dir.file("lenet5.costs.json"), model = dir.file("lenet5.bbm");
  fake_calibration().save(cal);
  const std::string profile = bin + " profile --arch lenet5 --calibration " + cal + " -o " + table + " > " +
                              dir.file("profile.log") + " 2>&1";
  ASSERT_EQ(std::system(profile.c_str()), 0) << bb::read_text(dir.file("profile.log"));
  EXPECT_FALSE(fs::exists(table + ".tmp"));
  const auto t = bbits::contract::CostTable::load(table);
  EXPECT_EQ(t.arch, "lenet5");
  const std::string conv = convert + " --synthetic lenet5 --bits w8a8 -o " + model + " > " + dir.file("convert.log") + " 2>&1";
  ASSERT_EQ(std::system(conv.c_str()), 0) << bb::read_text(dir.file("convert.log"));
  const std::string bench = bin + " bench " + model + " --repeats 1 --warmup 0 --passes 1 --threads 1 --no-baselines " +
                            "--calibration " + cal + " --target-ms 0.05 --cost-table " + table + " > " +
                            dir.file("bench.log") + " 2>&1";
  ASSERT_EQ(std::system(bench.c_str()), 0) << bb::read_text(dir.file("bench.log"));
  const std::string out = bb::read_text(dir.file("bench.log"));
  EXPECT_NE(out.find("whole model, 1 thread: measured median"), std::string::npos) << out;
  EXPECT_NE(out.find("budget 0.0500 ms"), std::string::npos) << out;
  EXPECT_NE(out.find("table predicts"), std::string::npos) << out;
  // A table of another network is rejected naming the layer.
  const std::string other = bin + " profile --arch vgg7 --width 0.125 --calibration " + cal + " -o " + dir.file("vgg.json") +
                            " > /dev/null 2>&1";
  ASSERT_EQ(std::system(other.c_str()), 0);
  const std::string bad = bin + " bench " + model + " --repeats 1 --warmup 0 --passes 1 --threads 1 --no-baselines " +
                          "--calibration " + cal + " --cost-table " + dir.file("vgg.json") + " > " + dir.file("bad.log") +
                          " 2>&1";
  EXPECT_NE(std::system(bad.c_str()), 0);
  EXPECT_NE(bb::read_text(dir.file("bad.log")).find("bbits: error: cost table: layer 'features.1'"), std::string::npos)
      << bb::read_text(dir.file("bad.log"));
  // Priced by measurement: the times the trainer reads are the measured ones.
  const std::string measured = bin + " profile --arch lenet5 --price measured --repeats 1 --calibration " + cal + " -o " +
                               dir.file("m.json") + " > /dev/null 2>&1";
  ASSERT_EQ(std::system(measured.c_str()), 0);
  const auto m = bbits::contract::CostTable::load(dir.file("m.json"));
  EXPECT_EQ(m.priced_by, "measured");
  EXPECT_TRUE(m.measured);
  EXPECT_EQ(t.priced_by, "roofline");
  // Bad arguments.
  EXPECT_NE(std::system((bin + " profile --arch nosuch -o " + dir.file("x.json") + " --calibration " + cal + " > /dev/null 2>&1").c_str()), 0);
  EXPECT_NE(std::system((bin + " profile --arch lenet5 --input 1x28 -o " + dir.file("x.json") + " --calibration " + cal + " > /dev/null 2>&1").c_str()), 0);
}
