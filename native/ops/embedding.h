// Embedding lookups: gather rows of a table by id, and the scatter-add that is their backward.
#pragma once
#include "../backend.h"

#define LOWRANK_EMBEDDING_OPS                                                                          \
  /* *first (host memory) = the first position i < n whose id lies outside [0, vocab), or -1 when    \
     all are valid. The CUDA twin waits for its answer (an 8-byte read-back). */                      \
  void embedding_find_bad_id(const int32_t* ids, int64_t n, int64_t vocab, int64_t* first);           \
  /* out[i, :] = weight[ids[i], :] for i < n; rows of `dim` floats, all contiguous. An id outside      \
     [0, vocab) yields a row of zeros instead of a read out of bounds. */                             \
  void embedding_gather_f32(const int32_t* ids, int64_t n, const float* weight, int64_t vocab, int64_t dim, \
                            float* out);                                                              \
  /* The same from a bfloat16 table (raw bf16 bits, a frozen weight), widened to float32 rows. */    \
  void embedding_gather_bf16(const int32_t* ids, int64_t n, const uint16_t* weight, int64_t vocab,      \
                             int64_t dim, float* out);                                                \
  /* dweight[ids[i], :] += grad[i, :] for i < n, accumulating into dweight; invalid ids are skipped.  \
     Deterministic on both backends: every element adds its contributions in order of i, so the CPU  \
     and CUDA twins agree bit for bit and repeated ids never race. */                                 \
  void embedding_scatter_add_f32(const int32_t* ids, int64_t n, const float* grad, int64_t vocab,     \
                                 int64_t dim, float* dweight);

LOWRANK_DECLARE_BACKEND(LOWRANK_EMBEDDING_OPS)
