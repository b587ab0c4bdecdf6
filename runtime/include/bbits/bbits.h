/* bbits runtime — the C API.
 *
 *   bbits_model* m = bbits_model_load("lenet5.bbm");
 *   if (!m) { fprintf(stderr, "%s\n", bbits_last_error()); return 1; }
 *   bbits_session* s = bbits_session_create(m, 1);
 *   bbits_session_set_input(s, 0, pixels, 784);
 *   bbits_session_run(s);
 *   const float* y; size_t n;
 *   bbits_session_get_output(s, 0, &y, &n, NULL, NULL);
 *   bbits_session_free(s);
 *   bbits_model_free(m);
 *
 * Conventions: functions returning a pointer return NULL on failure;
 * functions returning int return 0 on success and -1 on failure. After a
 * failure bbits_last_error() describes it (per thread; valid until the next
 * failing call on that thread). Tensors are float32 in the model's declared
 * layout (N,C,H,W for models converted from PyTorch).
 *
 * Thread safety: a model may be shared by any number of sessions on any
 * threads; a session is used by one thread at a time. A session keeps its
 * model alive: bbits_model_free() may be called while sessions still exist.
 */
#ifndef BBITS_BBITS_H
#define BBITS_BBITS_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#define BBITS_C_API
#else
#define BBITS_C_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bbits_model bbits_model;
typedef struct bbits_session bbits_session;

/* Library version, e.g. "0.1.0". */
BBITS_C_API const char* bbits_version(void);

/* Description of the last failure on the calling thread ("" when none). */
BBITS_C_API const char* bbits_last_error(void);

/* Applies a calibration written by `bbits calibrate` to the kernel choice of
   models loaded afterwards (process-wide); returns the number of kernels whose
   rate it set, or -1 on failure (see bbits_last_error). */
BBITS_C_API int bbits_load_calibration(const char* path);

/* Memory-maps and verifies a .bbm file; NULL on failure. */
BBITS_C_API bbits_model* bbits_model_load(const char* path);
/* Copies `size` bytes and verifies them; NULL on failure. */
BBITS_C_API bbits_model* bbits_model_load_memory(const void* data, size_t size);
/* Releases the caller's reference (NULL is accepted). */
BBITS_C_API void bbits_model_free(bbits_model* model);

BBITS_C_API size_t bbits_model_num_inputs(const bbits_model* model);
BBITS_C_API size_t bbits_model_num_outputs(const bbits_model* model);
/* Name of input/output `index`; NULL when out of range. Valid while the model lives. */
BBITS_C_API const char* bbits_model_input_name(const bbits_model* model, size_t index);
BBITS_C_API const char* bbits_model_output_name(const bbits_model* model, size_t index);
/* Rank of input/output `index` (and up to `max_dims` dimensions into `dims`,
 * which may be NULL); -1 on failure. */
BBITS_C_API int bbits_model_input_shape(const bbits_model* model, size_t index, int64_t* dims, size_t max_dims);
BBITS_C_API int bbits_model_output_shape(const bbits_model* model, size_t index, int64_t* dims, size_t max_dims);
/* Element count of input/output `index`; 0 on failure. */
BBITS_C_API size_t bbits_model_input_elements(const bbits_model* model, size_t index);
BBITS_C_API size_t bbits_model_output_elements(const bbits_model* model, size_t index);

/* A session with `threads` worker threads (0 = all hardware threads). */
BBITS_C_API bbits_session* bbits_session_create(const bbits_model* model, int threads);
BBITS_C_API void bbits_session_free(bbits_session* session);

/* Copies `count` float32 values (must equal the input's element count). */
BBITS_C_API int bbits_session_set_input(bbits_session* session, size_t index, const float* data, size_t count);
/* Runs the model on the inputs set so far (every input must have been set). */
BBITS_C_API int bbits_session_run(bbits_session* session);
/* Output `index` of the last run: `*data` points to `*count` float32 values,
 * `*shape` to `*rank` dimensions (any out-pointer may be NULL). The pointers
 * stay valid until the next bbits_session_run or bbits_session_free. */
BBITS_C_API int bbits_session_get_output(bbits_session* session, size_t index, const float** data, size_t* count,
                                         const int64_t** shape, size_t* rank);

/* What the last bbits_session_run did to input `index`: `values` float
 * values given; when `quantized` (the model's input is an integer grid),
 * `clipped` of them lay outside the grid's range [lo, hi] (beyond rounding:
 * clipped, NaN included). A float32 input is taken as it is (quantized 0,
 * clipped 0). Many clipped values mean the data is not normalised the way
 * the model's preprocessing records. */
typedef struct bbits_input_stats {
  int64_t values;
  int64_t clipped;
  int quantized;
  float lo;
  float hi;
} bbits_input_stats;
BBITS_C_API int bbits_session_input_stats(const bbits_session* session, size_t index, bbits_input_stats* out);

#ifdef __cplusplus
}
#endif

#endif /* BBITS_BBITS_H */
