/* The C API, compiled as C: load, query shapes, run, read outputs, errors.
 * Usage: c_api_test MODEL.bbm */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bbits/bbits.h"

static int failures = 0;
#define CHECK(cond)                                                   \
  do {                                                                \
    if (!(cond)) {                                                    \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                     \
    }                                                                 \
  } while (0)

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s MODEL.bbm\n", argv[0]);
    return 2;
  }
  printf("bbits %s\n", bbits_version());

  /* Errors: NULL / -1 and a message naming the problem. */
  CHECK(bbits_model_load("/nonexistent/model.bbm") == NULL);
  CHECK(strstr(bbits_last_error(), "cannot open") != NULL);
  {
    const char junk[100] = "definitely not a model";
    CHECK(bbits_model_load_memory(junk, sizeof junk) == NULL);
    CHECK(strstr(bbits_last_error(), "bad magic") != NULL);
  }
  CHECK(bbits_session_create(NULL, 1) == NULL);
  CHECK(strstr(bbits_last_error(), "null model") != NULL);

  bbits_model* m = bbits_model_load(argv[1]);
  if (!m) {
    fprintf(stderr, "load failed: %s\n", bbits_last_error());
    return 1;
  }
  CHECK(bbits_model_num_inputs(m) == 1);
  CHECK(bbits_model_num_outputs(m) == 1);
  int64_t dims[8] = {0};
  CHECK(bbits_model_input_shape(m, 0, dims, 8) == 4);
  CHECK(dims[0] == 1 && dims[1] == 1);
  const size_t in_n = bbits_model_input_elements(m, 0);
  CHECK(in_n == (size_t)(dims[0] * dims[1] * dims[2] * dims[3]));
  CHECK(bbits_model_output_shape(m, 0, dims, 8) == 2);
  const size_t out_n = bbits_model_output_elements(m, 0);
  CHECK(out_n == (size_t)dims[1]);
  CHECK(strcmp(bbits_model_input_name(m, 0), "input") == 0);
  CHECK(strcmp(bbits_model_output_name(m, 0), "logits") == 0);
  CHECK(bbits_model_input_shape(m, 5, dims, 8) == -1);
  CHECK(strstr(bbits_last_error(), "out of range") != NULL);
  CHECK(bbits_model_input_name(m, 3) == NULL);

  bbits_session* s1 = bbits_session_create(m, 1);
  bbits_session* s2 = bbits_session_create(m, 2);
  CHECK(s1 != NULL && s2 != NULL);
  if (!s1 || !s2) return 1;
  /* Sessions keep the model alive. */
  bbits_model_free(m);

  CHECK(bbits_session_run(s1) == -1);
  CHECK(strstr(bbits_last_error(), "was not set") != NULL);
  const float* y = NULL;
  CHECK(bbits_session_get_output(s1, 0, &y, NULL, NULL, NULL) == -1);

  float* x = (float*)malloc(in_n * sizeof(float));
  for (size_t i = 0; i < in_n; ++i) x[i] = (float)((i * 37) % 256) / 256.0f;
  CHECK(bbits_session_set_input(s1, 0, x, in_n - 1) == -1);
  CHECK(strstr(bbits_last_error(), "expected") != NULL);
  CHECK(bbits_session_set_input(s1, 1, x, in_n) == -1);
  CHECK(bbits_session_set_input(s1, 0, x, in_n) == 0);
  CHECK(bbits_session_set_input(s2, 0, x, in_n) == 0);
  CHECK(bbits_session_run(s1) == 0);
  CHECK(bbits_session_run(s2) == 0);

  const float* y1 = NULL;
  const float* y2 = NULL;
  size_t n1 = 0, n2 = 0, rank = 0;
  const int64_t* shape = NULL;
  CHECK(bbits_session_get_output(s1, 0, &y1, &n1, &shape, &rank) == 0);
  CHECK(bbits_session_get_output(s2, 0, &y2, &n2, NULL, NULL) == 0);
  CHECK(n1 == out_n && n2 == out_n);
  CHECK(rank == 2 && shape[0] == 1 && shape[1] == (int64_t)out_n);
  CHECK(bbits_session_get_output(s1, 1, &y1, &n1, NULL, NULL) == -1);
  CHECK(bbits_session_get_output(s1, 0, &y1, &n1, NULL, NULL) == 0);
  int finite = 1, same = 1;
  float spread = 0.0f;
  for (size_t i = 0; i < n1; ++i) {
    if (!isfinite(y1[i])) finite = 0;
    if (y1[i] != y2[i]) same = 0;
    spread = fmaxf(spread, fabsf(y1[i] - y1[0]));
  }
  CHECK(finite);
  CHECK(same); /* 1 and 2 threads agree exactly */
  CHECK(spread > 0.0f);
  /* Input statistics: nothing outside the grid [0, 255/256] so far; then
   * three values beyond it (NaN included) are counted. */
  bbits_input_stats st;
  CHECK(bbits_session_input_stats(s1, 0, &st) == 0);
  CHECK(st.values == (int64_t)in_n && st.clipped == 0 && st.quantized == 1);
  CHECK(st.lo == 0.0f && st.hi == 255.0f / 256.0f);
  CHECK(bbits_session_input_stats(s1, 1, &st) == -1);
  CHECK(strstr(bbits_last_error(), "out of range") != NULL);
  CHECK(bbits_session_input_stats(NULL, 0, &st) == -1);
  x[0] = 2.0f;
  x[1] = -1.0f;
  x[2] = NAN;
  CHECK(bbits_session_set_input(s2, 0, x, in_n) == 0);
  CHECK(bbits_session_run(s2) == 0);
  CHECK(bbits_session_input_stats(s2, 0, &st) == 0);
  CHECK(st.clipped == 3);

  printf("logits:");
  for (size_t i = 0; i < n1; ++i) printf(" %.4f", y1[i]);
  printf("\n");

  free(x);
  bbits_session_free(s1);
  bbits_session_free(s2);
  bbits_session_free(NULL);
  bbits_model_free(NULL);
  if (failures) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  printf("c_api_test: all checks passed\n");
  return 0;
}
