// The pointwise kernels with AVX2 + FMA, selected at run time (pointwise.cpp) where the CPU has
// them. The target pragma precedes every include so at::vec's AVX2 code compiles here without
// building the whole extension for AVX2.
#if defined(__x86_64__)
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#define RNNKERNELS_ISA isa_avx2
#include "pointwise_kernels.h"
#endif
