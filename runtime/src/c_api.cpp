// The C API: thin wrappers that turn exceptions into bbits_last_error().
#include "bbits/bbits.h"

#include <exception>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "bbits/runtime.h"

struct bbits_model {
  std::shared_ptr<const bbits::Model> model;
};

struct bbits_session {
  std::unique_ptr<bbits::Session> session;
  std::vector<bbits::Tensor> inputs;
  std::vector<bool> input_set;
  std::vector<bbits::Tensor> outputs;
};

namespace {

thread_local std::string g_last_error;

void set_error(const char* what) {
  try {
    g_last_error = what;
  } catch (...) {
  }
}

// Runs f, mapping every exception to the thread's last error.
template <typename F>
bool guarded(F&& f) {
  try {
    f();
    return true;
  } catch (const std::bad_alloc&) {
    set_error("out of memory");
  } catch (const std::exception& e) {
    set_error(e.what());
  } catch (...) {
    set_error("unknown error");
  }
  return false;
}

const bbits::TensorInfo* io_info(const bbits_model* m, size_t index, bool input) {
  if (!m) {
    set_error("null model");
    return nullptr;
  }
  const size_t n = input ? m->model->num_inputs() : m->model->num_outputs();
  if (index >= n) {
    set_error((std::string(input ? "input" : "output") + " index " + std::to_string(index) + " out of range (model has " +
               std::to_string(n) + ")")
                  .c_str());
    return nullptr;
  }
  return input ? &m->model->input(index) : &m->model->output(index);
}

int shape_query(const bbits_model* m, size_t index, int64_t* dims, size_t max_dims, bool input) {
  const bbits::TensorInfo* t = io_info(m, index, input);
  if (!t) return -1;
  if (dims)
    for (size_t i = 0; i < t->shape.size() && i < max_dims; ++i) dims[i] = t->shape[i];
  return static_cast<int>(t->shape.size());
}

}  // namespace

extern "C" {

const char* bbits_version(void) { return bbits::version(); }

const char* bbits_last_error(void) { return g_last_error.c_str(); }

int bbits_load_calibration(const char* path) {
  if (!path) {
    set_error("bbits_load_calibration: null path");
    return -1;
  }
  int n = -1;
  guarded([&] { n = static_cast<int>(bbits::load_calibration(path).rates.size()); });
  return n;
}

bbits_model* bbits_model_load(const char* path) {
  if (!path) {
    set_error("bbits_model_load: null path");
    return nullptr;
  }
  bbits_model* out = nullptr;
  guarded([&] { out = new bbits_model{bbits::Model::load(path)}; });
  return out;
}

bbits_model* bbits_model_load_memory(const void* data, size_t size) {
  bbits_model* out = nullptr;
  guarded([&] { out = new bbits_model{bbits::Model::from_memory(data, size)}; });
  return out;
}

void bbits_model_free(bbits_model* model) { delete model; }

size_t bbits_model_num_inputs(const bbits_model* model) {
  if (!model) return set_error("null model"), 0;
  return model->model->num_inputs();
}

size_t bbits_model_num_outputs(const bbits_model* model) {
  if (!model) return set_error("null model"), 0;
  return model->model->num_outputs();
}

const char* bbits_model_input_name(const bbits_model* model, size_t index) {
  const bbits::TensorInfo* t = io_info(model, index, true);
  return t ? t->name.c_str() : nullptr;
}

const char* bbits_model_output_name(const bbits_model* model, size_t index) {
  const bbits::TensorInfo* t = io_info(model, index, false);
  return t ? t->name.c_str() : nullptr;
}

int bbits_model_input_shape(const bbits_model* model, size_t index, int64_t* dims, size_t max_dims) {
  return shape_query(model, index, dims, max_dims, true);
}

int bbits_model_output_shape(const bbits_model* model, size_t index, int64_t* dims, size_t max_dims) {
  return shape_query(model, index, dims, max_dims, false);
}

size_t bbits_model_input_elements(const bbits_model* model, size_t index) {
  const bbits::TensorInfo* t = io_info(model, index, true);
  return t ? static_cast<size_t>(t->elements()) : 0;
}

size_t bbits_model_output_elements(const bbits_model* model, size_t index) {
  const bbits::TensorInfo* t = io_info(model, index, false);
  return t ? static_cast<size_t>(t->elements()) : 0;
}

bbits_session* bbits_session_create(const bbits_model* model, int threads) {
  if (!model) {
    set_error("bbits_session_create: null model");
    return nullptr;
  }
  bbits_session* out = nullptr;
  guarded([&] {
    auto s = std::make_unique<bbits_session>();
    bbits::SessionOptions opt;
    opt.threads = threads;
    s->session = std::make_unique<bbits::Session>(model->model, opt);
    const size_t n = model->model->num_inputs();
    s->inputs.resize(n);
    s->input_set.assign(n, false);
    for (size_t i = 0; i < n; ++i) s->inputs[i].shape = model->model->input(i).shape;
    out = s.release();
  });
  return out;
}

void bbits_session_free(bbits_session* session) { delete session; }

int bbits_session_set_input(bbits_session* session, size_t index, const float* data, size_t count) {
  if (!session) return set_error("bbits_session_set_input: null session"), -1;
  const bool ok = guarded([&] {
    if (index >= session->inputs.size())
      throw bbits::Error("input index " + std::to_string(index) + " out of range (model has " +
                         std::to_string(session->inputs.size()) + ")");
    bbits::Tensor& t = session->inputs[index];
    const size_t want = static_cast<size_t>(t.elements());
    if (count != want)
      throw bbits::Error("input " + std::to_string(index) + ": " + std::to_string(count) + " values given, expected " +
                         std::to_string(want));
    if (!data && count) throw bbits::Error("input " + std::to_string(index) + ": null data");
    t.data.assign(data, data + count);
    session->input_set[index] = true;
  });
  return ok ? 0 : -1;
}

int bbits_session_run(bbits_session* session) {
  if (!session) return set_error("bbits_session_run: null session"), -1;
  session->outputs.clear();  // a failed run leaves no stale outputs behind
  const bool ok = guarded([&] {
    for (size_t i = 0; i < session->input_set.size(); ++i)
      if (!session->input_set[i]) throw bbits::Error("input " + std::to_string(i) + " was not set");
    session->outputs = session->session->run(session->inputs);
  });
  return ok ? 0 : -1;
}

int bbits_session_get_output(bbits_session* session, size_t index, const float** data, size_t* count,
                             const int64_t** shape, size_t* rank) {
  if (!session) return set_error("bbits_session_get_output: null session"), -1;
  if (session->outputs.empty()) return set_error("no outputs: call bbits_session_run first"), -1;
  if (index >= session->outputs.size()) {
    set_error(("output index " + std::to_string(index) + " out of range (model has " +
               std::to_string(session->outputs.size()) + ")")
                  .c_str());
    return -1;
  }
  const bbits::Tensor& t = session->outputs[index];
  if (data) *data = t.data.data();
  if (count) *count = t.data.size();
  if (shape) *shape = t.shape.data();
  if (rank) *rank = t.shape.size();
  return 0;
}

int bbits_session_input_stats(const bbits_session* session, size_t index, bbits_input_stats* out) {
  if (!session) return set_error("bbits_session_input_stats: null session"), -1;
  if (!out) return set_error("bbits_session_input_stats: null out"), -1;
  const bbits::RunStats& st = session->session->last_run_stats();
  if (st.inputs.empty()) return set_error("no input statistics: call bbits_session_run first"), -1;
  if (index >= st.inputs.size()) {
    set_error(("input index " + std::to_string(index) + " out of range (model has " + std::to_string(st.inputs.size()) +
               ")")
                  .c_str());
    return -1;
  }
  const bbits::InputRunStats& s = st.inputs[index];
  out->values = s.values;
  out->clipped = s.clipped;
  out->quantized = s.quantized ? 1 : 0;
  out->lo = s.lo;
  out->hi = s.hi;
  return 0;
}

}  // extern "C"
