#include "onednn_gemm.h"

#include "buffer_pool.h"
#include "environment.h"

#include <ATen/Parallel.h>
#include <c10/util/hash.h>

#include <dnnl.hpp>

#ifdef _OPENMP
#include <omp.h>
#endif

#include <algorithm>
#include <cstring>
#include <list>
#include <mutex>
#include <optional>
#include <tuple>
#include <unordered_map>
#include <vector>

namespace rnnkernels {
namespace {

using dnnl::memory;

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// A 2-D float32 matrix with the given element strides.
memory::desc matrix(int64_t rows, int64_t cols, int64_t row_stride, int64_t col_stride) {
  return memory::desc({rows, cols}, memory::data_type::f32, memory::dims{row_stride, col_stride});
}

memory::desc row_major(int64_t rows, int64_t cols) { return matrix(rows, cols, cols, 1); }

// The threads oneDNN runs a primitive on from here: one inside a parallel region (nested regions
// get one thread), else ATen's thread count.
int current_threads() { return at::in_parallel_region() ? 1 : at::get_num_threads(); }

// A CPU stream is only a handle for submitting work, but creating one costs microseconds: one per
// thread, reused.
dnnl::stream& thread_stream() {
  thread_local dnnl::stream stream(cpu_engine());
  return stream;
}

// Everything a matmul primitive depends on; every operand is a plain matrix with its strides.
struct MatmulKey {
  int64_t m, k, n;
  int64_t a_stride0, a_stride1;
  int64_t b_stride0, b_stride1;
  bool bias, accumulate;
  int threads;  // oneDNN splits the work for the thread count it was created with

  auto tie() const {
    return std::tie(m, k, n, a_stride0, a_stride1, b_stride0, b_stride1, bias, accumulate,
                    threads);
  }
  bool operator==(const MatmulKey& other) const { return tie() == other.tie(); }
};

struct MatmulKeyHash {
  size_t operator()(const MatmulKey& key) const { return c10::get_hash(key.tie()); }
};

struct Matmul {
  dnnl::matmul primitive;
  memory::desc scratchpad;
};

// A scratchpad for one run of `matmul` in this thread's buffer, which grows to the largest one
// asked for (so it is valid until the thread's next call).
memory thread_scratchpad(const Matmul& matmul) {
  thread_local std::vector<char> buffer;
  const size_t size = matmul.scratchpad.get_size();
  if (buffer.size() < size) buffer.resize(size);
  return memory(matmul.scratchpad, cpu_engine(), buffer.data());
}

// Every primitive takes its scratchpad from the caller: with oneDNN's own (one per process, the
// default), a primitive may only run on the thread that created it and never on two at once,
// while these cached primitives run on whichever threads call them, concurrently.
dnnl::primitive_attr attributes(bool accumulate) {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  if (accumulate) {
    dnnl::post_ops sum;
    sum.append_sum(1.f);
    attr.set_post_ops(sum);
  }
  return attr;
}

Matmul create(const MatmulKey& key) {
  const memory::desc a = matrix(key.m, key.k, key.a_stride0, key.a_stride1);
  const memory::desc c = row_major(key.m, key.n);
  const dnnl::primitive_attr attr = attributes(key.accumulate);
  const memory::desc b = matrix(key.k, key.n, key.b_stride0, key.b_stride1);
  const dnnl::matmul::primitive_desc pd =
      key.bias ? dnnl::matmul::primitive_desc(cpu_engine(), a, b, row_major(1, key.n), c, attr)
               : dnnl::matmul::primitive_desc(cpu_engine(), a, b, c, attr);
  return {dnnl::matmul(pd), pd.scratchpad_desc()};
}

// The most recently used primitives, at most `capacity` of them: a packed batch of a new total
// length needs primitives of new shapes, so variable-length training would otherwise keep one
// per length ever seen (each holds its JIT-compiled kernel, about a megabyte of address space).
class MatmulCache {
 public:
  explicit MatmulCache(size_t capacity) : capacity_(capacity) {}

  // A copy: primitives are reference-counted handles, so one evicted meanwhile stays valid for
  // whoever holds it.
  Matmul get(const MatmulKey& key) {
    const std::lock_guard<std::mutex> lock(mutex_);
    auto found = index_.find(key);
    if (found != index_.end()) {
      entries_.splice(entries_.begin(), entries_, found->second);
      return found->second->second;
    }
    Matmul matmul = create(key);
    entries_.emplace_front(key, matmul);
    index_[key] = entries_.begin();
    while (entries_.size() > capacity_) {
      index_.erase(entries_.back().first);
      entries_.pop_back();
    }
    return matmul;
  }

 private:
  using Entries = std::list<std::pair<MatmulKey, Matmul>>;
  std::mutex mutex_;
  size_t capacity_;
  Entries entries_;  // most recently used first
  std::unordered_map<MatmulKey, Entries::iterator, MatmulKeyHash> index_;
};

Matmul cached_matmul(const MatmulKey& key) {
  static MatmulCache cache = [] {
    const size_t capacity = environment_count("RNNKERNELS_PRIMITIVE_CACHE_CAPACITY",
                                              kDefaultPrimitiveCacheCapacity, 1);
    // oneDNN keeps a cache of its own (1024 primitives by default) of what this one already
    // holds; bounded alike, evicting here frees the memory.
    dnnl::set_primitive_cache_capacity(static_cast<int>(std::min<size_t>(capacity, 1 << 20)));
    return MatmulCache(capacity);
  }();
  return cache.get(key);
}

// The row stride of the per-step GEMM's copy of its weight [k, n]: whole cache lines of 16
// floats, an odd number of them. With a row stride of a multiple of 1 KiB (n = 256, 512, 768,
// 1024, ...: the gate widths of the usual hidden sizes) the rows of a block of columns fall into
// few cache sets, and oneDNN's matmul ran at half its speed or less, whether the weight was plain
// or in the blocked layout it prefers (docs/DESIGN.md, "CPU backend").
int64_t padded_row_stride(int64_t n) {
  int64_t lines = (n + 15) / 16;
  if (lines % 2 == 0) ++lines;
  return lines * 16;
}

}  // namespace

struct OneDnnRecurrentGemm::Impl {
  struct Step {
    dnnl::matmul primitive;
    memory src, dst;
    std::vector<char> scratchpad;
    std::unordered_map<int, memory> args;
  };

  MatmulKey key;  // with m = max_rows; the steps differ in m
  dnnl::stream& stream = thread_stream();
  memory weights;
  std::vector<std::optional<Step>> steps;  // by row count, created on first use

  Step& step(int64_t rows) {
    std::optional<Step>& slot = steps[rows];
    if (!slot) {
      MatmulKey step_key = key;
      step_key.m = rows;
      step_key.a_stride0 = key.k;
      const Matmul matmul = cached_matmul(step_key);
      Step s{matmul.primitive, memory(row_major(rows, key.k), cpu_engine(), DNNL_MEMORY_NONE),
             memory(row_major(rows, key.n), cpu_engine(), DNNL_MEMORY_NONE),
             std::vector<char>(matmul.scratchpad.get_size()), {}};
      s.args = {{DNNL_ARG_SRC, s.src}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, s.dst},
                {DNNL_ARG_SCRATCHPAD,
                 memory(matmul.scratchpad, cpu_engine(), s.scratchpad.data())}};
      slot = std::move(s);
    }
    return *slot;
  }
};

OneDnnRecurrentGemm::OneDnnRecurrentGemm(const at::Tensor& weight, bool transposed,
                                         int64_t max_rows, int64_t steps, bool accumulate)
    : impl_(std::make_unique<Impl>()) {
  TORCH_CHECK(weight.scalar_type() == at::kFloat && weight.is_contiguous() && weight.dim() == 2,
              "OneDnnRecurrentGemm: expected a contiguous 2-D float32 weight");
  Impl& m = *impl_;
  const int64_t k = transposed ? weight.size(1) : weight.size(0);
  const int64_t n = transposed ? weight.size(0) : weight.size(1);
  const int64_t b_stride0 = transposed ? 1 : n, b_stride1 = transposed ? k : 1;
  const memory user(matrix(k, n, b_stride0, b_stride1), cpu_engine(), weight.data_ptr<float>());
  // Copying reads and writes the weight once; a single step does not win that back.
  if (steps > 1) {
    m.weights = memory(matrix(k, n, padded_row_stride(n), 1), cpu_engine());
    memory source = user;
    dnnl::reorder(source, m.weights).execute(m.stream, source, m.weights);
    m.stream.wait();
  } else {
    m.weights = user;
  }
  const memory::dims strides = m.weights.get_desc().get_strides();
  m.key = {max_rows, k, n, k, 1, strides[0], strides[1], false, accumulate, current_threads()};
  m.steps.resize(max_rows + 1);
}

OneDnnRecurrentGemm::~OneDnnRecurrentGemm() = default;

void OneDnnRecurrentGemm::run(const float* a, float* c, int64_t rows) {
  Impl::Step& s = impl_->step(rows);
  s.src.set_data_handle(const_cast<float*>(a));
  s.dst.set_data_handle(c);
  s.primitive.execute(impl_->stream, s.args);
}

namespace {

// dnnl_sgemm, on this thread alone below 2^16 multiply-adds, where it would otherwise split a
// matrix-vector product across threads at a loss (one row of 64 x 192: 1.5 us on one thread, 2.7
// on two; of 128 x 512, 6.0 and 4.5).
void sgemm(char trans_a, char trans_b, int64_t m, int64_t n, int64_t k, const float* a,
           int64_t lda, const float* b, int64_t ldb, float beta, float* c) {
#ifdef _OPENMP
  constexpr int64_t kMinThreadedMacs = int64_t{1} << 16;
  const int threads = omp_get_max_threads();
  const bool alone = threads > 1 && m * n * k < kMinThreadedMacs;
  if (alone) omp_set_num_threads(1);
#endif
  const dnnl_status_t status =
      dnnl_sgemm(trans_a, trans_b, m, n, k, 1.f, a, lda, b, ldb, beta, c, n);
#ifdef _OPENMP
  if (alone) omp_set_num_threads(threads);
#endif
  TORCH_CHECK(status == dnnl_success, "dnnl_sgemm failed with status ", static_cast<int>(status));
}

// How dnnl_sgemm reads a 2-D matrix: 'N' row-major, 'T' column-major (a transposed view), with
// its leading dimension; anything else is copied to row-major first.
struct Operand {
  at::Tensor tensor;
  char trans;
  int64_t ld;
};

Operand operand(const at::Tensor& t) {
  if (t.stride(1) == 1 && t.stride(0) >= std::max<int64_t>(1, t.size(1))) {
    return {t, 'N', t.stride(0)};
  }
  if (t.stride(0) == 1 && t.stride(1) >= std::max<int64_t>(1, t.size(0))) {
    return {t, 'T', t.stride(1)};
  }
  const at::Tensor copy = t.contiguous();
  return {copy, 'N', std::max<int64_t>(1, copy.size(1))};
}

}  // namespace

OneDnnSmallGemm::OneDnnSmallGemm(const at::Tensor& weight, bool transposed, int64_t /*max_rows*/,
                                 int64_t /*steps*/, bool accumulate)
    : weight_(weight.data_ptr<float>()),
      k_(transposed ? weight.size(1) : weight.size(0)),
      n_(transposed ? weight.size(0) : weight.size(1)),
      transposed_(transposed),
      accumulate_(accumulate) {
  TORCH_CHECK(weight.scalar_type() == at::kFloat && weight.is_contiguous() && weight.dim() == 2,
              "OneDnnSmallGemm: expected a contiguous 2-D float32 weight");
}

void OneDnnSmallGemm::run(const float* a, float* c, int64_t rows) {
  if (rows == 0 || n_ == 0) return;
  if (k_ == 0) {
    if (!accumulate_) std::fill(c, c + rows * n_, 0.f);
    return;
  }
  sgemm('N', transposed_ ? 'T' : 'N', rows, n_, k_, a, k_, weight_, transposed_ ? k_ : n_,
        accumulate_ ? 1.f : 0.f, c);
}

at::Tensor onednn_small_addmm(const at::Tensor& bias, const at::Tensor& a, const at::Tensor& b) {
  TORCH_CHECK(a.scalar_type() == at::kFloat && b.scalar_type() == at::kFloat,
              "onednn_small_addmm: expected float32 matrices");
  const int64_t m = a.size(0), k = a.size(1), n = b.size(1);
  at::Tensor out = at::empty({m, n}, a.options());
  if (m == 0 || n == 0) return out;
  if (bias.defined()) {
    // The bias in every row, for the GEMM to add to (beta 1).
    const at::Tensor row = bias.contiguous();
    for (int64_t i = 0; i < m; ++i) {
      std::memcpy(out.data_ptr<float>() + i * n, row.data_ptr<float>(), n * sizeof(float));
    }
  }
  if (k == 0) return bias.defined() ? out : out.zero_();
  const Operand lhs = operand(a), rhs = operand(b);
  sgemm(lhs.trans, rhs.trans, m, n, k, lhs.tensor.data_ptr<float>(), lhs.ld,
        rhs.tensor.data_ptr<float>(), rhs.ld, bias.defined() ? 1.f : 0.f,
        out.data_ptr<float>());
  return out;
}

at::Tensor onednn_addmm(const at::Tensor& bias, const at::Tensor& a, const at::Tensor& b) {
  TORCH_CHECK(a.scalar_type() == at::kFloat && b.scalar_type() == at::kFloat,
              "onednn_addmm: expected float32 matrices");
  const int64_t m = a.size(0), k = a.size(1), n = b.size(1);
  at::Tensor out = empty_pooled({m, n}, a.options());
  if (m == 0 || n == 0) return out;
  if (k == 0) return bias.defined() ? out.copy_(bias.expand({m, n})) : out.zero_();
  // m and k are run-time dimensions: one of them is the layer's row count (the input projection,
  // the input and weight gradients), which changes with every packed length, and one primitive
  // then serves them all instead of one per length.
  const MatmulKey key{DNNL_RUNTIME_DIM_VAL, DNNL_RUNTIME_DIM_VAL, n, a.stride(0), a.stride(1),
                      b.stride(0), b.stride(1), bias.defined(), false, current_threads()};
  const Matmul matmul = cached_matmul(key);
  std::unordered_map<int, memory> args{
      {DNNL_ARG_SRC, memory(matrix(m, k, a.stride(0), a.stride(1)), cpu_engine(), a.data_ptr())},
      {DNNL_ARG_WEIGHTS,
       memory(matrix(k, n, b.stride(0), b.stride(1)), cpu_engine(), b.data_ptr())},
      {DNNL_ARG_DST, memory(row_major(m, n), cpu_engine(), out.data_ptr())},
      {DNNL_ARG_SCRATCHPAD, thread_scratchpad(matmul)}};
  at::Tensor bias_row;
  if (bias.defined()) {
    bias_row = bias.contiguous();
    args.emplace(DNNL_ARG_BIAS, memory(row_major(1, n), cpu_engine(), bias_row.data_ptr()));
  }
  matmul.primitive.execute(thread_stream(), args);
  return out;
}

at::Tensor onednn_transpose(const at::Tensor& a) {
  TORCH_CHECK(a.scalar_type() == at::kFloat && a.dim() == 2 && a.is_contiguous(),
              "onednn_transpose: expected a contiguous float32 matrix");
  const int64_t m = a.size(0), k = a.size(1);
  at::Tensor out = empty_pooled({k, m}, a.options());
  if (a.numel() == 0) return out;
  // The same [k, m] matrix read through a's strides and written row-major: oneDNN's primitive
  // cache keeps the reorder's kernel per shape.
  memory src(matrix(k, m, 1, k), cpu_engine(), a.data_ptr());
  memory dst(row_major(k, m), cpu_engine(), out.data_ptr());
  dnnl::reorder(src, dst).execute(thread_stream(), src, dst);
  return out;
}

}  // namespace rnnkernels
