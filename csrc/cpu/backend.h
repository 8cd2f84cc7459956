// CPU backend of the step loops (csrc/layer/layer.h): the pointwise step of every cell
// (pointwise.cpp, vectorised per instruction set), the GEMMs (oneDNN's matmul for float32 when
// the build found oneDNN, and for the half types where the CPU has dot products for them,
// onednn_gemm.h; ATen's, MKL, otherwise and for float64; float32's on widened half-type operands
// where the CPU has no such dot products) and
// the threading: what slices of the batch, or of a batch of one's units, run at once.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/AutogradState.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <exception>
#include <optional>
#include <thread>

#ifdef _OPENMP
#include <omp.h>
#endif
#include <unistd.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "../kernels/params.h"
#include "../layer/aten_gemm.h"
#include "../layer/layer.h"
#include "buffer_pool.h"
#include "gemv.h"
#include "native_dot.h"
#include "row_stride.h"

#ifdef RNNKERNELS_WITH_ONEDNN
#include "onednn_gemm.h"
#endif

namespace rnnkernels {

// Sets this thread's autograd state (grad mode, inference mode) for its lifetime.
class AutogradStateGuard {
 public:
  explicit AutogradStateGuard(const c10::AutogradState& state)
      : previous_(c10::AutogradState::get_tls_state()) {
    c10::AutogradState::set_tls_state(state);
  }
  ~AutogradStateGuard() { c10::AutogradState::set_tls_state(previous_); }
  AutogradStateGuard(const AutogradStateGuard&) = delete;
  AutogradStateGuard& operator=(const AutogradStateGuard&) = delete;

 private:
  c10::AutogradState previous_;
};

template <typename T>
struct CPURecurrentGemm {
  using type = ATenRecurrentGemm<T>;
};

#ifdef RNNKERNELS_WITH_ONEDNN
// Below 2^18 multiply-adds in all, a matmul primitive's per-call cost (primitive lookup, memory
// objects) outweighs its faster kernel; dnnl_sgemm, with no per-call set-up, takes those
// (docs/DESIGN.md, "CPU backend", has the measurements behind this and the next threshold).
constexpr int64_t kMinOneDnnWork = int64_t{1} << 18;
// With one or two rows a step is a matrix-vector product, which dnnl_sgemm runs as fast as a
// matmul primitive with a prepacked weight, minus the packing.
constexpr int64_t kMaxSmallGemmRows = 2;

// float32's per-step GEMM of one row, where every step has one (gemv.h). The weight may be a
// view with rows of unit stride.
class CPUFloatGemv {
 public:
  CPUFloatGemv(const at::Tensor& weight, bool transposed, int64_t /*a_stride*/,
               int64_t /*max_rows*/, int64_t /*steps*/, bool accumulate)
      : weight_(weight.data_ptr<float>()),
        ld_(weight.stride(0)),
        k_(transposed ? weight.size(1) : weight.size(0)),
        n_(transposed ? weight.size(0) : weight.size(1)),
        transposed_(transposed),
        accumulate_(accumulate) {
    TORCH_CHECK(weight.dim() == 2 && (weight.stride(1) == 1 || weight.size(1) <= 1),
                "CPUFloatGemv: expected a 2-D weight with rows of unit stride, got strides ",
                weight.strides());
  }

  void run(const float* a, float* c, int64_t rows) {
    TORCH_INTERNAL_ASSERT(rows <= 1, "CPUFloatGemv: one row a step, got ", rows);
    if (rows == 0) return;
    if (transposed_) {
      gemv_rows(a, weight_, ld_, k_, n_, c, accumulate_);
    } else {
      gemv_columns(a, weight_, ld_, k_, n_, c, accumulate_);
    }
  }

 private:
  const float* weight_;
  int64_t ld_, k_, n_;
  bool transposed_, accumulate_;
};

// float32's per-step GEMM: a oneDNN matmul primitive, dnnl_sgemm for a recurrence too small to
// repay one, or for a single row a matrix-vector product (CPUFloatGemv).
class CPUFloatRecurrentGemm {
 public:
  CPUFloatRecurrentGemm(const at::Tensor& weight, bool transposed, int64_t a_stride,
                        int64_t max_rows, int64_t steps, bool accumulate) {
    if (max_rows <= 1) {
      gemv_.emplace(weight, transposed, a_stride, max_rows, steps, accumulate);
    } else if (max_rows > kMaxSmallGemmRows &&
               steps * max_rows * weight.numel() >= kMinOneDnnWork) {
      onednn_.emplace(weight, transposed, a_stride, max_rows, steps, accumulate);
    } else {
      small_.emplace(weight, transposed, a_stride, max_rows, steps, accumulate);
    }
  }

  void run(const float* a, float* c, int64_t rows) {
    if (gemv_) {
      gemv_->run(a, c, rows);
    } else if (onednn_) {
      onednn_->run(a, c, rows);
    } else {
      small_->run(a, c, rows);
    }
  }

 private:
  std::optional<CPUFloatGemv> gemv_;
  std::optional<OneDnnRecurrentGemm<float>> onednn_;
  std::optional<OneDnnSmallGemm> small_;
};

template <>
struct CPURecurrentGemm<float> {
  using type = CPUFloatRecurrentGemm;
};

// Below this many multiply-adds in all, a half type's GEMMs run widened to float32 (through
// dnnl_sgemm) even where the CPU has dot products for it: the native primitives' set-up, tens of
// microseconds a layer, outweighs their faster kernels. So do per-step GEMMs of one or two rows,
// matrix-vector products, which AMX runs on 16-row tiles.
constexpr int64_t kMinNativeHalfWork = kMinOneDnnWork;
constexpr int64_t kMaxWidenedHalfRows = kMaxSmallGemmRows;
#else
constexpr int64_t kMinNativeHalfWork = 0;
constexpr int64_t kMaxWidenedHalfRows = 0;
#endif

// A half type's per-step GEMM where the CPU has dot products for it: oneDNN's matmul, whose
// per-step primitive costs about a microsecond a call against ATen's tens (at::mm sets up
// oneDNN's matmul anew on every call), where this oneDNN has kernels for the type; else ATen's.
template <typename T>
class CPUNativeHalfGemm {
 public:
  CPUNativeHalfGemm(const at::Tensor& weight, bool transposed, int64_t a_stride,
                    int64_t max_rows, int64_t steps, bool accumulate) {
#ifdef RNNKERNELS_WITH_ONEDNN
    if (onednn_supports(weight.scalar_type())) {
      onednn_.emplace(weight, transposed, a_stride, max_rows, steps, accumulate);
      return;
    }
#endif
    aten_.emplace(weight, transposed, a_stride, max_rows, steps, accumulate);
  }

  void run(const T* a, T* c, int64_t rows) {
#ifdef RNNKERNELS_WITH_ONEDNN
    if (onednn_) {
      onednn_->run(a, c, rows);
      return;
    }
#endif
    aten_->run(a, c, rows);
  }

 private:
#ifdef RNNKERNELS_WITH_ONEDNN
  std::optional<OneDnnRecurrentGemm<T>> onednn_;
#endif
  std::optional<ATenRecurrentGemm<T>> aten_;
};

// A half type's per-step GEMM: native (CPUNativeHalfGemm) where native_gemm says so, else
// float32's GEMM on the widened operands. A product of two half-type values is exact in float32
// and the sum runs in float32, so this computes what a half-type GEMM with float32 accumulation
// does (the result rounded once to T), on the float32 units. The weight is widened once per
// object, each step's rows as they come.
template <typename T>
class CPUHalfRecurrentGemm {
  using FloatGemm = typename CPURecurrentGemm<float>::type;

 public:
  CPUHalfRecurrentGemm(const at::Tensor& weight, bool transposed, int64_t a_stride,
                       int64_t max_rows, int64_t steps, bool accumulate)
      : accumulate_(accumulate),
        k_(transposed ? weight.size(1) : weight.size(0)),
        n_(transposed ? weight.size(0) : weight.size(1)),
        a_stride_(a_stride) {
    if (native_gemm(c10::CppTypeToScalarType<T>::value,
                    max_rows > kMaxWidenedHalfRows &&
                        steps * max_rows * weight.numel() >= kMinNativeHalfWork)) {
      native_.emplace(weight, transposed, a_stride, max_rows, steps, accumulate);
      return;
    }
    weight_ = weight.to(at::kFloat).contiguous();
    a_ = at::empty({max_rows, k_}, weight_.options());
    c_ = at::empty({max_rows, n_}, weight_.options());
    wide_.emplace(weight_, transposed, k_, max_rows, steps, accumulate);
  }

  void run(const T* a, T* c, int64_t rows) {
    if (native_) {
      native_->run(a, c, rows);
      return;
    }
    float* a_wide = a_.data_ptr<float>();
    float* c_wide = c_.data_ptr<float>();
    for (int64_t row = 0; row < rows; ++row) {
      std::copy(a + row * a_stride_, a + row * a_stride_ + k_, a_wide + row * k_);
    }
    if (accumulate_) std::copy(c, c + rows * n_, c_wide);
    wide_->run(a_wide, c_wide, rows);
    std::copy(c_wide, c_wide + rows * n_, c);
  }

 private:
  bool accumulate_;
  int64_t k_, n_, a_stride_;
  std::optional<CPUNativeHalfGemm<T>> native_;
  at::Tensor weight_, a_, c_;  // the widened weight and one step's rows
  std::optional<FloatGemm> wide_;
};

template <>
struct CPURecurrentGemm<c10::BFloat16> {
  using type = CPUHalfRecurrentGemm<c10::BFloat16>;
};

template <>
struct CPURecurrentGemm<c10::Half> {
  using type = CPUHalfRecurrentGemm<c10::Half>;
};

// A barrier among a team of threads, which spin while they wait: a step's wait lasts a
// microsecond or so, less than putting a thread to sleep and waking it costs. After a few
// thousand spins a waiting thread yields its core, should the machine run more threads than it
// has cores. A thread that leaves by an exception abandons the barrier, and the others' waits
// then throw Broken instead of waiting for it forever.
class StepBarrier {
 public:
  struct Broken {};

  // Before any thread waits.
  void reset(int64_t threads) { threads_ = threads; }

  void wait() {
    const uint32_t generation = generation_.load(std::memory_order_acquire);
    if (arrived_.fetch_add(1, std::memory_order_acq_rel) + 1 == threads_) {
      arrived_.store(0, std::memory_order_relaxed);
      generation_.store(generation + 1, std::memory_order_release);
      return;
    }
    for (int spins = 0; generation_.load(std::memory_order_acquire) == generation; ++spins) {
      if (abandoned_.load(std::memory_order_relaxed)) throw Broken{};
      if (spins < kSpins) {
#if defined(__x86_64__)
        _mm_pause();
#endif
      } else {
        std::this_thread::yield();
      }
    }
  }

  void abandon() { abandoned_.store(true, std::memory_order_relaxed); }

 private:
  static constexpr int kSpins = 1 << 12;
  int64_t threads_ = 1;
  std::atomic<int64_t> arrived_{0};
  std::atomic<uint32_t> generation_{0};
  std::atomic<bool> abandoned_{false};
};

// One core's L2 cache, as the C library reports it (0 where it does not).
inline int64_t l2_cache_bytes() {
#ifdef _SC_LEVEL2_CACHE_SIZE
  static const int64_t bytes = std::max<long>(0, sysconf(_SC_LEVEL2_CACHE_SIZE));
  return bytes;
#else
  return 0;
#endif
}

struct CPUBackend {
  // Instantiated for every cell of the list (csrc/kernels/cell_list.h) in pointwise.cpp.
  template <typename Cell, typename T>
  static void forward(const StepForwardParams<T>& p);
  template <typename Cell, typename T>
  static void backward(const StepBackwardParams<T>& p);

  template <typename T>
  static void copy(T* dst, const T* src, int64_t count) {
    std::memcpy(dst, src, count * sizeof(T));
  }

  template <typename T>
  using RecurrentGemm = typename CPURecurrentGemm<T>::type;

  // The layer's buffers of rows (gates, outputs, reserve), tens of MB at the larger shapes.
  static at::Tensor empty(at::IntArrayRef sizes, const at::TensorOptions& options) {
    return empty_pooled(sizes, options);
  }
  // A buffer a weight gradient reads transposed (dW = g^T x). float32's rows are an odd number
  // of cache lines apart: rows of a multiple of 1 KiB (the gates of H = 256, 512, 1024, ...),
  // read down a column, fall into a few sets of the L1 cache, and oneDNN's matmul took such a g^T
  // of 6400 x 2048 at 190 GFLOP/s, at 260 with rows of 2064. The half types' rows stay dense:
  // their AMX kernels take no others (docs/DESIGN.md, "CPU backend").
  static at::Tensor empty_rows(int64_t rows, int64_t width, const at::TensorOptions& options) {
    if (options.dtype() != at::kFloat) return empty_pooled({rows, width}, options);
    return empty_pooled({rows, padded_row_stride(width, sizeof(float))}, options)
        .narrow(1, 0, width);
  }

  static at::Tensor addmm(const at::Tensor& bias, const at::Tensor& a, const at::Tensor& b) {
    const int64_t macs = a.size(0) * a.size(1) * b.size(1);
#ifdef RNNKERNELS_WITH_ONEDNN
    if (a.scalar_type() == at::kFloat) {
      return macs >= kMinOneDnnWork ? onednn_addmm(bias, a, b) : onednn_small_addmm(bias, a, b);
    }
#endif
    if (!native_gemm(a.scalar_type(), macs >= kMinNativeHalfWork)) {
      // Widened as the per-step GEMMs are (CPUHalfRecurrentGemm); the bias rounds with the
      // product, as in a native GEMM with a bias.
      const at::Tensor wide_bias = bias.defined() ? bias.to(at::kFloat) : bias;
      return addmm(wide_bias, a.to(at::kFloat), b.to(at::kFloat)).to(a.scalar_type());
    }
#ifdef RNNKERNELS_WITH_ONEDNN
    if (onednn_supports(a.scalar_type())) return onednn_addmm(bias, a, b);  // the half types
#endif
    return aten_addmm(bias, a, b);
  }

  // The CPU's threading, from the step's size: one slice of the batch per thread, each walking
  // every step of its rows alone, so that the per-step GEMMs and pointwise passes run
  // single-threaded, with no barrier per step. Splitting each step's GEMM across threads instead
  // costs two synchronisations a step, which dominate small steps, but lets each thread keep its
  // part of the weight in cache, which wins for large steps: so a step of 2^22 multiply-adds or
  // more stays whole (docs/DESIGN.md, "CPU backend"). A half type's native GEMMs (AMX) run
  // several times faster than float32's, which moves that point up to 2^25. Where the whole
  // recurrent weight fits in half of a core's L2 cache, each thread keeps it there anyway, and a
  // step is sliced at any size. A batch of one, which has no rows to slice, splits its hidden
  // units across the threads instead (split_units), where its step is large enough to repay a
  // barrier a step.
  template <typename F>
  static void for_each_slice(const StepProblem& problem, const F& body) {
    const bool native_half = is_half(problem.dtype) && has_native_dot(problem.dtype);
    const int64_t max_sliced_step_macs = int64_t{1} << (native_half ? 25 : 22);
    const int64_t batch = problem.batch;
    // Multiply-adds of one step's recurrent GEMM over the whole batch (the forward's and the
    // backward's, whose GEMM has the transposed shape).
    const int64_t step_macs =
        problem.dense ? problem.batch * problem.gate_width * problem.state_width : 0;
    // The weight as the GEMMs read it: a half type's widened to float32 unless native.
    const at::ScalarType gemm_type =
        is_half(problem.dtype) && !native_half ? at::kFloat : problem.dtype;
    const int64_t weight_bytes = problem.gate_width * problem.state_width *
                                 static_cast<int64_t>(c10::elementSize(gemm_type));
    const int64_t threads = at::in_parallel_region() ? 1 : at::get_num_threads();
    if (batch == 1 && threads > 1 && problem.separable_units &&
        step_macs >= kMinUnitSplitStepMacs && step_macs * problem.steps >= kMinUnitSplitLayerMacs) {
      split_units(problem, threads, body);
      return;
    }
    int64_t slices = std::min<int64_t>(threads, batch);
    if (step_macs >= max_sliced_step_macs && 2 * weight_bytes > l2_cache_bytes()) slices = 1;
    if (slices <= 1) {
      body(StepSlice{0, batch, 0, problem.hidden, {}});
      return;
    }
    const WorkerState worker;
    at::parallel_for(0, slices, 1, [&](int64_t first, int64_t last) {
      worker.run([&] {
        for (int64_t slice = first; slice < last; ++slice) {
          body(StepSlice{slice * batch / slices, (slice + 1) * batch / slices, 0, problem.hidden,
                         {}});
        }
      });
    });
  }

 private:
  // A batch of one splits its units where its step's GEMM has 2^16 multiply-adds or more and
  // the layer's 2^19 or more. Split, a step gains about half its matrix-vector product's time
  // and pays a barrier; a layer pays a few microseconds to start its threads (docs/DESIGN.md,
  // "CPU backend", a batch of one).
  static constexpr int64_t kMinUnitSplitStepMacs = int64_t{1} << 16;
  static constexpr int64_t kMinUnitSplitLayerMacs = int64_t{1} << 19;

  // What a slice's thread takes of the caller's thread-local state: its dispatch keys (below
  // autograd) and grad mode. Not all of it: at::ThreadLocalState holds the Python objects of
  // saved-tensor hooks, which a worker thread cannot copy without the GIL that the caller holds
  // while it waits for the workers.
  class WorkerState {
   public:
    WorkerState()
        : keys_(c10::impl::tls_local_dispatch_key_set()),
          autograd_(c10::AutogradState::get_tls_state()) {}

    template <typename F>
    void run(const F& f) const {
      const c10::impl::ForceDispatchKeyGuard key_guard(keys_);
      const AutogradStateGuard autograd_guard(autograd_);
#ifdef _OPENMP
      // Regions nested in this one get a single thread anyway. Saying so (this thread's own
      // setting, for the rest of this region) lets oneDNN plan its GEMMs for one thread and run
      // them inline; otherwise it opens a nested region around each, at a cost every step.
      omp_set_num_threads(1);
#endif
      f();
    }

   private:
    c10::impl::LocalDispatchKeySet keys_;
    c10::AutogradState autograd_;
  };

  // A batch of one over the team's threads, each taking a slice of the hidden units (whole
  // cache lines of float32, 16 units, where the division allows) and meeting the others at a
  // StepBarrier every step. The slices have to run at once, one per thread, so this takes an
  // OpenMP team of its own rather than at::parallel_for, which may run several chunks on one
  // thread; without OpenMP the batch runs whole.
  template <typename F>
  static void split_units(const StepProblem& problem, int64_t threads, const F& body) {
#ifdef _OPENMP
    const WorkerState worker;
    StepBarrier barrier;
    std::exception_ptr error;
#pragma omp parallel num_threads(static_cast<int>(threads))
    {
      const int64_t team = omp_get_num_threads(), id = omp_get_thread_num();
#pragma omp single
      barrier.reset(team);
      const auto bound = [&](int64_t i) {
        return i == team ? problem.hidden : problem.hidden * i / team / 16 * 16;
      };
      try {
        worker.run([&] {
          body(StepSlice{0, 1, bound(id), bound(id + 1), [&] { barrier.wait(); }});
        });
      } catch (const StepBarrier::Broken&) {
      } catch (...) {
        barrier.abandon();
#pragma omp critical(rnnkernels_split_units)
        if (!error) error = std::current_exception();
      }
    }
    if (error) std::rethrow_exception(error);
#else
    body(StepSlice{0, 1, 0, problem.hidden, {}});
#endif
  }
};

}  // namespace rnnkernels
