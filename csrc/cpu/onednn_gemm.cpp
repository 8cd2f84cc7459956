#include "onednn_gemm.h"

#include "buffer_pool.h"
#include "environment.h"
#include "row_stride.h"

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

memory::data_type data_type(at::ScalarType type) {
  switch (type) {
    case at::kFloat:
      return memory::data_type::f32;
    case at::kBFloat16:
      return memory::data_type::bf16;
    case at::kHalf:
      return memory::data_type::f16;
    default:
      TORCH_CHECK(false, "oneDNN GEMMs: expected float32, bfloat16 or float16, got ", type);
  }
}

// A 2-D matrix with the given element strides.
memory::desc matrix(int64_t rows, int64_t cols, int64_t row_stride, int64_t col_stride,
                    memory::data_type type) {
  return memory::desc({rows, cols}, type, memory::dims{row_stride, col_stride});
}

memory::desc row_major(int64_t rows, int64_t cols, memory::data_type type) {
  return matrix(rows, cols, cols, 1, type);
}

// The threads oneDNN runs a primitive on from here: one inside a parallel region (nested regions
// get one thread), else ATen's thread count.
int current_threads() { return at::in_parallel_region() ? 1 : at::get_num_threads(); }

// Whether oneDNN runs AVX-512 (its avx512_core instruction set or more) on this CPU.
bool has_avx512() {
  static const bool has = [] {
    const auto isa = static_cast<unsigned>(dnnl::get_effective_cpu_isa());
    const auto avx512 = static_cast<unsigned>(dnnl::cpu_isa::avx512_core);
    return (isa & avx512) == avx512;
  }();
  return has;
}

// Below 2^16 multiply-adds oneDNN runs a GEMM on the calling thread alone, where it would
// otherwise split a matrix-vector product across threads at a loss (dnnl_sgemm of one row of
// 64 x 192: 1.5 us on one thread, 2.7 on two; of 128 x 512, 6.0 and 4.5).
constexpr int64_t kMinThreadedMacs = int64_t{1} << 16;

bool runs_alone(int64_t m, int64_t k, int64_t n) {
  return current_threads() == 1 || m * k * n < kMinThreadedMacs;
}

// For its lifetime, oneDNN's kernels called from this thread run on it alone when `alone`.
class AloneScope {
 public:
  explicit AloneScope(bool alone) {
#ifdef _OPENMP
    threads_ = omp_get_max_threads();
    if (alone && threads_ > 1) {
      omp_set_num_threads(1);
    } else {
      threads_ = 0;
    }
#endif
  }
  ~AloneScope() {
#ifdef _OPENMP
    if (threads_ > 0) omp_set_num_threads(threads_);
#endif
  }
  AloneScope(const AloneScope&) = delete;
  AloneScope& operator=(const AloneScope&) = delete;

 private:
  int threads_ = 0;
};

// A CPU stream is only a handle for submitting work, but creating one costs microseconds: one per
// thread, reused.
dnnl::stream& thread_stream() {
  thread_local dnnl::stream stream(cpu_engine());
  return stream;
}

// Everything a matmul primitive depends on. Every operand is a plain matrix with its strides,
// except a blocked weight, whose layout the primitive chooses (b's strides are then unused).
struct MatmulKey {
  int64_t m, k, n;
  int64_t a_stride0, a_stride1;
  int64_t b_stride0, b_stride1;
  bool bias, accumulate;
  int threads;  // oneDNN splits the work for the thread count it was created with
  memory::data_type type;  // of a, b and the result
  memory::data_type bias_type;
  bool blocked_weight;

  auto tie() const {
    return std::tie(m, k, n, a_stride0, a_stride1, b_stride0, b_stride1, bias, accumulate,
                    threads, type, bias_type, blocked_weight);
  }
  bool operator==(const MatmulKey& other) const { return tie() == other.tie(); }
};

struct MatmulKeyHash {
  size_t operator()(const MatmulKey& key) const { return c10::get_hash(key.tie()); }
};

struct Matmul {
  dnnl::matmul primitive;
  memory::desc weight, scratchpad;
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
  const memory::desc a = matrix(key.m, key.k, key.a_stride0, key.a_stride1, key.type);
  const memory::desc c = row_major(key.m, key.n, key.type);
  const dnnl::primitive_attr attr = attributes(key.accumulate);
  const memory::desc b =
      key.blocked_weight
          ? memory::desc({key.k, key.n}, key.type, memory::format_tag::any)
          : matrix(key.k, key.n, key.b_stride0, key.b_stride1, key.type);
  const dnnl::matmul::primitive_desc pd =
      key.bias ? dnnl::matmul::primitive_desc(cpu_engine(), a, b,
                                              row_major(1, key.n, key.bias_type), c, attr)
               : dnnl::matmul::primitive_desc(cpu_engine(), a, b, c, attr);
  return {dnnl::matmul(pd), pd.weights_desc(), pd.scratchpad_desc()};
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

// `source` copied into a new memory of layout `layout`.
memory reordered(const memory& source, const memory::desc& layout, dnnl::stream& stream) {
  memory copy(layout, cpu_engine());
  memory from = source;
  dnnl::reorder(from, copy).execute(stream, from, copy);
  stream.wait();
  return copy;
}

}  // namespace

struct OneDnnRecurrentGemmState {
  struct Step {
    dnnl::matmul primitive;
    memory src, dst;
    memory weights;  // the object's, or a copy in the layout this row count's primitive reads
    std::vector<char> scratchpad;
    std::unordered_map<int, memory> args;
  };

  MatmulKey key;  // with m = max_rows; the steps differ in m
  bool alone;      // run on the calling thread alone
  dnnl::stream& stream = thread_stream();
  memory weights;
  std::vector<std::optional<Step>> steps;  // by row count, created on first use

  Step& step(int64_t rows) {
    std::optional<Step>& slot = steps[rows];
    if (!slot) {
      MatmulKey step_key = key;
      step_key.m = rows;
      const Matmul matmul = cached_matmul(step_key);
      // A blocked layout is the primitive's choice, which may differ between row counts.
      const memory step_weights = matmul.weight == weights.get_desc()
                                      ? weights
                                      : reordered(weights, matmul.weight, stream);
      Step s{matmul.primitive,
             memory(matrix(rows, key.k, key.a_stride0, 1, key.type), cpu_engine(),
                    DNNL_MEMORY_NONE),
             memory(row_major(rows, key.n, key.type), cpu_engine(), DNNL_MEMORY_NONE),
             step_weights, std::vector<char>(matmul.scratchpad.get_size()), {}};
      s.args = {{DNNL_ARG_SRC, s.src}, {DNNL_ARG_WEIGHTS, s.weights}, {DNNL_ARG_DST, s.dst},
                {DNNL_ARG_SCRATCHPAD,
                 memory(matmul.scratchpad, cpu_engine(), s.scratchpad.data())}};
      slot = std::move(s);
    }
    return *slot;
  }
};

template <typename T>
OneDnnRecurrentGemm<T>::OneDnnRecurrentGemm(const at::Tensor& weight, bool transposed,
                                            int64_t a_stride, int64_t max_rows, int64_t steps,
                                            bool accumulate)
    : state_(std::make_unique<OneDnnRecurrentGemmState>()) {
  TORCH_CHECK(weight.scalar_type() == c10::CppTypeToScalarType<T>::value &&
                  weight.is_contiguous() && weight.dim() == 2,
              "OneDnnRecurrentGemm: expected a contiguous 2-D ",
              c10::CppTypeToScalarType<T>::value, " weight, got ", weight.scalar_type());
  OneDnnRecurrentGemmState& m = *state_;
  const memory::data_type type = data_type(weight.scalar_type());
  const int64_t k = transposed ? weight.size(1) : weight.size(0);
  const int64_t n = transposed ? weight.size(0) : weight.size(1);
  const int64_t b_stride0 = transposed ? 1 : n, b_stride1 = transposed ? k : 1;
  m.alone = runs_alone(max_rows, k, n);
  const AloneScope scope(m.alone);
  m.key = {max_rows, k, n, a_stride, 1, b_stride0, b_stride1, false, accumulate,
           current_threads(), type, type, false};
  m.weights = memory(matrix(k, n, b_stride0, b_stride1, type), cpu_engine(), weight.data_ptr());
  m.steps.resize(max_rows + 1);
  // Copying reads and writes the weight once; a single step does not win that back.
  if (steps <= 1) return;
  // The half types' kernels (AMX, AVX512-BF16) read the weight in a blocked layout: given a
  // plain one, they copy it into that layout on every run. So do float32's brgemm kernels, which
  // oneDNN runs with AVX-512 where it picks a blocked layout, faster than its GEMM on a plain
  // weight. Elsewhere float32's weight is plain, its row stride padded.
  const bool half = type != memory::data_type::f32;
  if (half || has_avx512()) {
    MatmulKey blocked = m.key;
    blocked.blocked_weight = true;
    blocked.b_stride0 = blocked.b_stride1 = 0;
    const memory::desc layout = cached_matmul(blocked).weight;
    if (half || layout.get_inner_nblks() > 0) {
      m.key = blocked;
      m.weights = reordered(m.weights, layout, m.stream);
      return;
    }
  }
  const int64_t stride = padded_row_stride(n, sizeof(float));
  m.weights = reordered(m.weights, matrix(k, n, stride, 1, type), m.stream);
  m.key.b_stride0 = stride;
  m.key.b_stride1 = 1;
}

template <typename T>
OneDnnRecurrentGemm<T>::~OneDnnRecurrentGemm() = default;

template <typename T>
void OneDnnRecurrentGemm<T>::run(const T* a, T* c, int64_t rows) {
  const AloneScope scope(state_->alone);
  OneDnnRecurrentGemmState::Step& s = state_->step(rows);
  s.src.set_data_handle(const_cast<T*>(a));
  s.dst.set_data_handle(c);
  s.primitive.execute(state_->stream, s.args);
}

template class OneDnnRecurrentGemm<float>;
template class OneDnnRecurrentGemm<c10::BFloat16>;
template class OneDnnRecurrentGemm<c10::Half>;

namespace {

void sgemm(char trans_a, char trans_b, int64_t m, int64_t n, int64_t k, const float* a,
           int64_t lda, const float* b, int64_t ldb, float beta, float* c) {
  const AloneScope scope(m * n * k < kMinThreadedMacs);
  const dnnl_status_t status =
      dnnl_sgemm(trans_a, trans_b, m, n, k, 1.f, a, lda, b, ldb, beta, c, n);
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

OneDnnSmallGemm::OneDnnSmallGemm(const at::Tensor& weight, bool transposed, int64_t a_stride,
                                 int64_t /*max_rows*/, int64_t /*steps*/, bool accumulate)
    : weight_(weight.data_ptr<float>()),
      k_(transposed ? weight.size(1) : weight.size(0)),
      n_(transposed ? weight.size(0) : weight.size(1)),
      a_stride_(a_stride),
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
  sgemm('N', transposed_ ? 'T' : 'N', rows, n_, k_, a, a_stride_, weight_,
        transposed_ ? k_ : n_, accumulate_ ? 1.f : 0.f, c);
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

bool onednn_supports(at::ScalarType type) {
  const auto can_create = [](at::ScalarType type) {
    const memory::desc matrix = row_major(1, 1, data_type(type));
    try {
      dnnl::matmul::primitive_desc(cpu_engine(), matrix, matrix, matrix);
      return true;
    } catch (const dnnl::error&) {
      return false;
    }
  };
  static const bool bfloat16 = can_create(at::kBFloat16);
  static const bool float16 = can_create(at::kHalf);
  switch (type) {
    case at::kFloat:
      return true;
    case at::kBFloat16:
      return bfloat16;
    case at::kHalf:
      return float16;
    default:
      return false;
  }
}

at::Tensor onednn_addmm(const at::Tensor& bias, const at::Tensor& a, const at::Tensor& b) {
  TORCH_CHECK(a.scalar_type() == b.scalar_type(),
              "onednn_addmm: expected matrices of one dtype, got ", a.scalar_type(), " and ",
              b.scalar_type());
  const memory::data_type type = data_type(a.scalar_type());
  const int64_t m = a.size(0), k = a.size(1), n = b.size(1);
  at::Tensor out = empty_pooled({m, n}, a.options());
  if (m == 0 || n == 0) return out;
  if (k == 0) return bias.defined() ? out.copy_(bias.expand({m, n})) : out.zero_();
  // float32's m and k are run-time dimensions: one of them is the layer's row count (the input
  // projection, the input and weight gradients), which changes with every packed length, and one
  // primitive then serves them all instead of one per length. The half types' fast kernels
  // (brgemm: AMX, AVX512-BF16) take no run-time dimensions: given them, oneDNN 3.2 picks a
  // slower GEMM, so their primitives are per shape.
  const bool runtime_dims = type == memory::data_type::f32;
  const memory::data_type bias_type = bias.defined() ? data_type(bias.scalar_type()) : type;
  const AloneScope scope(runs_alone(m, k, n));
  const MatmulKey key{runtime_dims ? DNNL_RUNTIME_DIM_VAL : m,
                      runtime_dims ? DNNL_RUNTIME_DIM_VAL : k, n, a.stride(0), a.stride(1),
                      b.stride(0), b.stride(1), bias.defined(), false, current_threads(),
                      type, bias_type, false};
  const Matmul matmul = cached_matmul(key);
  std::unordered_map<int, memory> args{
      {DNNL_ARG_SRC,
       memory(matrix(m, k, a.stride(0), a.stride(1), type), cpu_engine(), a.data_ptr())},
      {DNNL_ARG_WEIGHTS,
       memory(matrix(k, n, b.stride(0), b.stride(1), type), cpu_engine(), b.data_ptr())},
      {DNNL_ARG_DST, memory(row_major(m, n, type), cpu_engine(), out.data_ptr())},
      {DNNL_ARG_SCRATCHPAD, thread_scratchpad(matmul)}};
  at::Tensor bias_row;
  if (bias.defined()) {
    bias_row = bias.contiguous();
    args.emplace(DNNL_ARG_BIAS,
                 memory(row_major(1, n, bias_type), cpu_engine(), bias_row.data_ptr()));
  }
  matmul.primitive.execute(thread_stream(), args);
  return out;
}

}  // namespace rnnkernels
