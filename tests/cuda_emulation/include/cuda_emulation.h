// A host emulation of the small part of CUDA that csrc/kernels/*.cu use, so that the kernels
// compile as plain C++ and run on the CPU (tests/test_cuda_emulation.py). The files beside this
// one stand in for cuda_runtime.h, cuda_runtime_api.h, cuda_fp16.h and cuda_bf16.h and include
// it; the include path puts them before any CUDA toolkit.
//
// What it models: the function qualifiers; the grid built-ins (gridDim, blockDim, blockIdx,
// threadIdx); a launch (cudaLaunchKernelEx) that runs the blocks one after another, after the
// checks CUDA makes on the configuration, each block's threads as fibers (ucontext) on the
// calling thread, so that __syncthreads() is a real barrier: a fiber reaching it yields until
// every thread of the block has, and a block whose threads do not all reach it fails; __shared__
// variables, one per block at a time; __half and __nv_bfloat16 as bare 16-bit types with only
// the explicit conversions (torch's CUDA builds remove the implicit ones), rounding to nearest
// even as the hardware does.
//
// A test may cap the grid (set_grid_limit): the launch then runs fewer blocks than asked for,
// which is what a grid-stride loop must survive when the work outgrows the largest grid.
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <ucontext.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <utility>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
// The blocks of a launch run one after another on one host thread, so one copy serves them all.
#define __shared__ static thread_local

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1)
      : x(x_), y(y_), z(z_) {}
};

// Per host thread; the launch sets them for each fiber it resumes.
inline thread_local dim3 gridDim, blockDim, blockIdx, threadIdx;

enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidConfiguration = 9 };
using cudaError = cudaError_t;

struct CUstream_st;
using cudaStream_t = CUstream_st*;

struct cudaLaunchAttribute;
struct cudaLaunchConfig_t {
  dim3 gridDim;
  dim3 blockDim;
  size_t dynamicSmemBytes;
  cudaStream_t stream;
  cudaLaunchAttribute* attrs;
  unsigned int numAttrs;
};

namespace rnnkernels_emulation {

inline thread_local cudaError_t last_error = cudaSuccess;

// The most blocks a launch runs (0: as many as asked for).
inline unsigned int& grid_limit() {
  static unsigned int limit = 0;
  return limit;
}

// The threads of the block being run, as fibers resumed in turn by the launch (the scheduler).
struct Block {
  struct Fiber {
    ucontext_t context;
    std::vector<char> stack;
    bool finished;
  };
  ucontext_t scheduler;
  std::vector<Fiber> fibers;
  unsigned int current;
  const std::function<void()>* body;
};

inline thread_local Block* running_block = nullptr;

inline void fiber_main() {
  Block& block = *running_block;
  (*block.body)();
  block.fibers[block.current].finished = true;
  // Returning resumes uc_link, the scheduler.
}

// Runs body() as every thread of a block of `threads`, round after round: each round resumes the
// fibers still running, each runs to its next __syncthreads() or its end.
inline void run_block(unsigned int threads, const std::function<void()>& body) {
  constexpr size_t kStackBytes = 64 * 1024;
  static thread_local Block block;
  block.fibers.resize(threads);
  block.body = &body;
  for (Block::Fiber& fiber : block.fibers) {
    fiber.stack.resize(kStackBytes);
    fiber.finished = false;
    getcontext(&fiber.context);
    fiber.context.uc_stack.ss_sp = fiber.stack.data();
    fiber.context.uc_stack.ss_size = fiber.stack.size();
    fiber.context.uc_link = &block.scheduler;
    makecontext(&fiber.context, fiber_main, 0);
  }
  running_block = &block;
  for (bool running = true; running;) {
    unsigned int finished = 0;
    for (unsigned int t = 0; t < threads; ++t) {
      if (block.fibers[t].finished) continue;
      block.current = t;
      threadIdx = dim3(t);
      swapcontext(&block.scheduler, &block.fibers[t].context);
      finished += block.fibers[t].finished ? 1 : 0;
    }
    unsigned int waiting = 0;
    for (const Block::Fiber& fiber : block.fibers) waiting += fiber.finished ? 0 : 1;
    if (waiting > 0 && finished > 0) {
      std::fprintf(stderr, "cuda_emulation: %u threads of block %u wait at __syncthreads() "
                   "that %u others never reach\n", waiting, blockIdx.x, finished);
      std::abort();
    }
    running = waiting > 0;
  }
  running_block = nullptr;
}

}  // namespace rnnkernels_emulation

inline void __syncthreads() {
  rnnkernels_emulation::Block& block = *rnnkernels_emulation::running_block;
  swapcontext(&block.fibers[block.current].context, &block.scheduler);
}

inline void set_grid_limit(unsigned int blocks) { rnnkernels_emulation::grid_limit() = blocks; }

inline cudaError_t cudaGetLastError() {
  const cudaError_t error = rnnkernels_emulation::last_error;
  rnnkernels_emulation::last_error = cudaSuccess;
  return error;
}

// Runs kernel(args...) on every thread of the grid, block after block. The arguments are
// converted to the kernel's parameter types once, as a launch copies them to the device.
template <typename... ExpTypes, typename... ActTypes>
cudaError_t cudaLaunchKernelEx(const cudaLaunchConfig_t* config, void (*kernel)(ExpTypes...),
                               ActTypes&&... args) {
  const dim3 grid = config->gridDim, block = config->blockDim;
  // CUDA's limits: x up to 2^31 - 1 blocks, at most 1024 threads a block.
  if (grid.x == 0 || grid.x > 0x7fffffffu || grid.y != 1 || grid.z != 1 || block.x == 0 ||
      block.x > 1024 || block.y != 1 || block.z != 1) {
    rnnkernels_emulation::last_error = cudaErrorInvalidConfiguration;
    return cudaErrorInvalidConfiguration;
  }
  const unsigned int limit = rnnkernels_emulation::grid_limit();
  const unsigned int blocks = limit != 0 && limit < grid.x ? limit : grid.x;
  gridDim = dim3(blocks);
  blockDim = block;
  [&](ExpTypes... copied) {
    const std::function<void()> body = [&] { kernel(copied...); };
    for (unsigned int b = 0; b < blocks; ++b) {
      blockIdx = dim3(b);
      rnnkernels_emulation::run_block(block.x, body);
    }
  }(std::forward<ActTypes>(args)...);
  return cudaSuccess;
}

// The 16-bit types: storage only, as under torch's __CUDA_NO_HALF_CONVERSIONS__.
struct __half {
  unsigned short __x;
};
struct __nv_bfloat16 {
  unsigned short __x;
};

inline float __half2float(__half h) {
  const uint32_t sign = static_cast<uint32_t>(h.__x & 0x8000u) << 16;
  const uint32_t exponent = (h.__x >> 10) & 0x1fu;
  const uint32_t mantissa = h.__x & 0x3ffu;
  float value;
  if (exponent == 0) {
    // Zero or subnormal: mantissa * 2^-24, exact in float.
    value = std::ldexp(static_cast<float>(mantissa), -24);
    return sign ? -value : value;
  }
  const uint32_t bits = exponent == 0x1fu
                            ? sign | 0x7f800000u | (mantissa << 13)  // inf, NaN
                            : sign | ((exponent + 112u) << 23) | (mantissa << 13);
  memcpy(&value, &bits, sizeof(value));
  return value;
}

inline __half __float2half_rn(float f) {
  uint32_t bits;
  memcpy(&bits, &f, sizeof(bits));
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t magnitude = bits & 0x7fffffffu;
  if (magnitude > 0x7f800000u) return {static_cast<unsigned short>(sign | 0x7e00u)};  // NaN
  // 65520 and above round to infinity.
  if (magnitude >= 0x477ff000u) return {static_cast<unsigned short>(sign | 0x7c00u)};
  if (magnitude < 0x38800000u) {
    // Below half's smallest normal (2^-14): a multiple of 2^-24, rounded to nearest even by
    // nearbyint in the default rounding mode (1024 is the smallest normal, the right bits too).
    float scaled;
    memcpy(&scaled, &magnitude, sizeof(scaled));
    return {static_cast<unsigned short>(sign | static_cast<uint16_t>(
                                                   std::nearbyint(std::ldexp(scaled, 24))))};
  }
  // Rebias the exponent (127 -> 15) and round the mantissa's 13 dropped bits to nearest even.
  const uint32_t rounded = magnitude + 0xfffu + ((magnitude >> 13) & 1u);
  return {static_cast<unsigned short>(sign | ((rounded - (112u << 23)) >> 13))};
}

inline float __bfloat162float(__nv_bfloat16 b) {
  const uint32_t bits = static_cast<uint32_t>(b.__x) << 16;
  float value;
  memcpy(&value, &bits, sizeof(value));
  return value;
}

inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  uint32_t bits;
  memcpy(&bits, &f, sizeof(bits));
  if ((bits & 0x7fffffffu) > 0x7f800000u) {
    return {static_cast<unsigned short>((bits >> 16) | 0x40u)};  // NaN stays NaN, quiet
  }
  return {static_cast<unsigned short>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16)};
}
