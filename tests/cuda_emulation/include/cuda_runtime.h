// Stands in for the CUDA toolkit's cuda_runtime.h when csrc/kernels compile as host C++ (cuda_emulation.h).
#pragma once
#include "cuda_emulation.h"
