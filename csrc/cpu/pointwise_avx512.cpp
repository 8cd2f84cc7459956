// The pointwise and matrix-vector kernels with AVX-512, selected at run time (pointwise.cpp)
// where the CPU has it.
// The build compiles this one file with -mavx512f -mavx512bw -mavx512vl -mavx512dq
// (setup.py, CMakeLists.txt).
#if defined(__x86_64__)
#define CPU_CAPABILITY AVX512
#define CPU_CAPABILITY_AVX512
#define RNNKERNELS_ISA isa_avx512
#include "gemv_kernels.h"
#include "pointwise_kernels.h"
#endif
