/* Outside application (C): loads a model, runs it, prints the top class. */
#include <bbits/bbits.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  bbits_model* m = bbits_model_load(argv[1]);
  if (!m) {
    fprintf(stderr, "c app: %s\n", bbits_last_error());
    return 1;
  }
  bbits_session* s = bbits_session_create(m, 1);
  if (!s) {
    fprintf(stderr, "c app: %s\n", bbits_last_error());
    return 1;
  }
  size_t n = bbits_model_input_elements(m, 0);
  float* x = (float*)malloc(n * sizeof(float));
  for (size_t i = 0; i < n; ++i) x[i] = 0.25f;
  const float* y = NULL;
  size_t k = 0;
  if (bbits_session_set_input(s, 0, x, n) != 0 || bbits_session_run(s) != 0 ||
      bbits_session_get_output(s, 0, &y, &k, NULL, NULL) != 0) {
    fprintf(stderr, "c app: %s\n", bbits_last_error());
    return 1;
  }
  size_t best = 0;
  for (size_t i = 1; i < k; ++i)
    if (y[i] > y[best]) best = i;
  printf("c app: bbits %s, top class %zu\n", bbits_version(), best);
  free(x);
  bbits_session_free(s);
  bbits_model_free(m);
  return 0;
}
