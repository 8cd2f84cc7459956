// The pointwise and matrix-vector kernels with AVX2 + FMA, selected at run time (pointwise.cpp)
// where the CPU has them. The build compiles this one file with -mavx2 -mfma -mf16c (setup.py,
// CMakeLists.txt).
#if defined(__x86_64__)
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#define RNNKERNELS_ISA isa_avx2
#include "gemv_kernels.h"
#include "pointwise_kernels.h"
#endif
