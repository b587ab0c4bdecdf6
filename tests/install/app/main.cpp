// Outside application (C++): loads a model, runs it, prints the top class.
#include <bbits/runtime.h>

#include <algorithm>
#include <cstdio>

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  try {
    auto model = bbits::Model::load(argv[1]);
    bbits::Session session(model, {.threads = 2});
    bbits::Tensor x;
    x.shape = model->input(0).shape;
    x.data.assign(static_cast<size_t>(x.elements()), 0.25f);
    const auto y = session.run({x});
    const auto best = std::max_element(y[0].data.begin(), y[0].data.end()) - y[0].data.begin();
    std::printf("cpp app: bbits %s, %zu layers, top class %ld\n", bbits::version(), model->info().layers.size(),
                static_cast<long>(best));
    try {
      bbits::Model::load("/nonexistent.bbm");
    } catch (const bbits::Error& e) {
      std::printf("cpp app: error caught: %s\n", e.what());
    }
  } catch (const bbits::Error& e) {
    std::fprintf(stderr, "cpp app: %s\n", e.what());
    return 1;
  }
  return 0;
}
