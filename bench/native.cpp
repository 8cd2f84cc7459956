// The benchmark's C++: oneDNN's RNN primitive (LSTM, LBR GRU, vanilla RNN) as a third
// implementation to time, a layer's GEMMs alone through oneDNN's matmul (what a layer built on
// it needs at least), and the FMA loops that measure the machine's peak FLOP rate.
// bench/native.py builds it on first use. It includes pybind11 but no torch header, so it
// compiles in seconds; the RNN's Python side (bench/onednn_rnn.py) owns every tensor it reads
// or writes and passes their addresses.

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <deque>
#include <optional>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#ifdef BENCH_WITH_ONEDNN
#include <omp.h>

#include <oneapi/dnnl/dnnl.hpp>

#include "cpu/row_stride.h"
#endif

namespace py = pybind11;

namespace peak {

// Independent accumulator chains per thread: more than FMA latency x FMA units (4 x 2 on
// current x86 cores) so the units never wait, few enough to stay in registers (16 ymm, 32 zmm).
constexpr int kChains = 12;

// One kernel: `run(iterations)` does `flops_per_iteration` floating-point operations per
// iteration; it returns a sum so no work is dead.
struct Kernel {
  const char* isa;
  int64_t flops_per_iteration;
  float (*run)(int64_t iterations);
};

#if defined(__x86_64__)

// acc = acc * scale + shift converges to 1: no overflow, no denormals, however long it runs.
__attribute__((target("avx2,fma"))) float fma_avx2(int64_t iterations) {
  __m256 acc[kChains];
  for (int chain = 0; chain < kChains; ++chain) acc[chain] = _mm256_set1_ps(float(chain));
  const __m256 scale = _mm256_set1_ps(0.999999f);
  const __m256 shift = _mm256_set1_ps(1e-6f);
  for (int64_t iteration = 0; iteration < iterations; ++iteration)
    for (int chain = 0; chain < kChains; ++chain)
      acc[chain] = _mm256_fmadd_ps(acc[chain], scale, shift);
  __m256 sum = acc[0];
  for (int chain = 1; chain < kChains; ++chain) sum = _mm256_add_ps(sum, acc[chain]);
  float lanes[8];
  _mm256_storeu_ps(lanes, sum);
  return lanes[0];
}

__attribute__((target("avx512f"))) float fma_avx512(int64_t iterations) {
  __m512 acc[kChains];
  for (int chain = 0; chain < kChains; ++chain) acc[chain] = _mm512_set1_ps(float(chain));
  const __m512 scale = _mm512_set1_ps(0.999999f);
  const __m512 shift = _mm512_set1_ps(1e-6f);
  for (int64_t iteration = 0; iteration < iterations; ++iteration)
    for (int chain = 0; chain < kChains; ++chain)
      acc[chain] = _mm512_fmadd_ps(acc[chain], scale, shift);
  __m512 sum = acc[0];
  for (int chain = 1; chain < kChains; ++chain) sum = _mm512_add_ps(sum, acc[chain]);
  return _mm512_reduce_add_ps(sum);
}

// vdpbf16ps: per float32 lane, two bfloat16 products added to the accumulator (4 flops).
// Each iteration adds 2e-6 per lane: far from overflow for any run that fits in a benchmark.
__attribute__((target("avx512f,avx512bf16"))) float dot_bf16_avx512(int64_t iterations) {
  __m512 acc[kChains];
  for (int chain = 0; chain < kChains; ++chain) acc[chain] = _mm512_setzero_ps();
  const __m512 small = _mm512_set1_ps(1e-3f);
  const __m512bh operand = _mm512_cvtne2ps_pbh(small, small);
  for (int64_t iteration = 0; iteration < iterations; ++iteration)
    for (int chain = 0; chain < kChains; ++chain)
      acc[chain] = _mm512_dpbf16_ps(acc[chain], operand, operand);
  __m512 sum = acc[0];
  for (int chain = 1; chain < kChains; ++chain) sum = _mm512_add_ps(sum, acc[chain]);
  return _mm512_reduce_add_ps(sum);
}

// AMX: tdpbf16ps multiplies a 16 x 32 bfloat16 tile by a 32 x 16 one into a 16 x 16 float32
// tile (16 x 16 x 32 multiply-adds). An iteration is one such product; four accumulator tiles
// (tmm0-3, from two left tiles tmm4-5 and two right tiles tmm6-7) keep the unit busy. The
// operands are zeros: AMX's timing does not depend on the values.
constexpr int64_t kAmxMacs = 16 * 16 * 32;

// The tile configuration (palette 1): every tile 16 rows of 64 bytes.
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t bytes_per_row[16] = {};
  uint8_t rows[16] = {};
};

__attribute__((target("amx-tile,amx-bf16"))) float dot_bf16_amx(int64_t iterations) {
  TileConfig config;
  for (int tile = 0; tile < 8; ++tile) {
    config.bytes_per_row[tile] = 64;
    config.rows[tile] = 16;
  }
  _tile_loadconfig(&config);
  alignas(64) static const uint16_t operand[16 * 32] = {};
  alignas(64) float result[16 * 16];
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  _tile_loadd(4, operand, 64);
  _tile_loadd(5, operand, 64);
  _tile_loadd(6, operand, 64);
  _tile_loadd(7, operand, 64);
  for (int64_t iteration = 0; iteration < iterations; iteration += 4) {
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, result, 64);
  _tile_release();
  return result[0];
}

// Whether Linux lets this process use AMX's tile data (asked once; oneDNN asks the same).
bool amx_permitted() {
  constexpr long kRequestPermission = 0x1023;  // ARCH_REQ_XCOMP_PERM
  constexpr long kTileData = 18;               // XFEATURE_XTILEDATA
  static const bool permitted = syscall(SYS_arch_prctl, kRequestPermission, kTileData) == 0;
  return permitted;
}

#endif

// The fastest kernel this CPU runs for `dtype` ("float32" or "bfloat16"), if any. Iterations are
// a multiple of 4.
std::optional<Kernel> kernel_for(const std::string& dtype) {
#if defined(__x86_64__)
  if (dtype == "float32") {
    if (__builtin_cpu_supports("avx512f")) return Kernel{"avx512f", kChains * 16 * 2, fma_avx512};
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
      return Kernel{"avx2", kChains * 8 * 2, fma_avx2};
  }
  if (dtype == "bfloat16" && __builtin_cpu_supports("amx-bf16") && amx_permitted())
    return Kernel{"amx_bf16", kAmxMacs * 2, dot_bf16_amx};
  if (dtype == "bfloat16" && __builtin_cpu_supports("avx512bf16"))
    return Kernel{"avx512_bf16", kChains * 16 * 4, dot_bf16_avx512};
#endif
  return std::nullopt;
}

// {isa, flops per call per thread} of `dtype`'s kernel, or None where this CPU has none.
std::optional<std::pair<std::string, int64_t>> describe(const std::string& dtype,
                                                        int64_t iterations) {
  auto kernel = kernel_for(dtype);
  if (!kernel) return std::nullopt;
  return std::make_pair(std::string(kernel->isa),
                        iterations * kernel->flops_per_iteration);
}

// Runs `dtype`'s kernel on `threads` threads at once.
float run(const std::string& dtype, int64_t iterations, int threads) {
  auto kernel = kernel_for(dtype);
  if (!kernel) throw std::invalid_argument("no peak kernel for " + dtype + " on this CPU");
  py::gil_scoped_release no_gil;
  float sum = 0;
#pragma omp parallel num_threads(threads) reduction(+ : sum)
  sum += kernel->run(iterations);
  return sum;
}

}  // namespace peak

#ifdef BENCH_WITH_ONEDNN
namespace onednn_rnn {

using dnnl::memory;
using tag = memory::format_tag;
using Args = std::unordered_map<int, memory>;

// What one RNN stack is: a cell and sizes. Gates: 4 LSTM, 3 GRU, 1 RNN.
struct Config {
  std::string cell;     // "lstm", "gru" (oneDNN's lbr_gru), "rnn_tanh" or "rnn_relu"
  bool training;        // forward_training + backward, else forward_inference
  int64_t steps;        // T
  int64_t batch;        // N
  int64_t input_size;   // I, of the first layer
  int64_t hidden_size;  // H
  int64_t layers;       // L
  int64_t directions;   // D: 1, or 2 (bidirectional_concat)
};

// Addresses of the float32, contiguous buffers the Python side owns, in oneDNN's gate order.
struct Buffers {
  std::vector<float*> weights_layer;  // per layer: [D, G*H, I_l] (ldgoi), I_l = I or D*H
  std::vector<float*> weights_iter;   // per layer: [D, G*H, H] (ldgoi)
  std::vector<float*> bias;           // per layer: [D, G_b, H] (ldgo), G_b = G + 1 for LBR GRU
  float* src_layer;                   // [T, N, I]
  float* dst_layer;                   // [T, N, D*H]
  float* dst_iter;                    // [L, D, N, H], torch's h_n
  float* dst_iter_c;                  // [L, D, N, H], torch's c_n (LSTM only)
  float* diff_src_layer;              // [T, N, I] (training only)
  float* diff_dst_layer;              // [T, N, D*H] (training only)
  float* diff_dst_iter;               // [L, D, N, H] (training only)
  float* diff_dst_iter_c;             // [L, D, N, H] (LSTM training only)
};

float* address(const py::dict& pointers, const char* name) {
  return pointers.contains(name) ? reinterpret_cast<float*>(pointers[name].cast<intptr_t>())
                                 : nullptr;
}

std::vector<float*> addresses(const py::dict& pointers, const char* name) {
  std::vector<float*> result;
  for (auto pointer : pointers[name].cast<std::vector<intptr_t>>())
    result.push_back(reinterpret_cast<float*>(pointer));
  return result;
}

Buffers buffers_from(const py::dict& pointers) {
  Buffers buffers = {};
  buffers.weights_layer = addresses(pointers, "weights_layer");
  buffers.weights_iter = addresses(pointers, "weights_iter");
  buffers.bias = addresses(pointers, "bias");
  buffers.src_layer = address(pointers, "src_layer");
  buffers.dst_layer = address(pointers, "dst_layer");
  buffers.dst_iter = address(pointers, "dst_iter");
  buffers.dst_iter_c = address(pointers, "dst_iter_c");
  buffers.diff_src_layer = address(pointers, "diff_src_layer");
  buffers.diff_dst_layer = address(pointers, "diff_dst_layer");
  buffers.diff_dst_iter = address(pointers, "diff_dst_iter");
  buffers.diff_dst_iter_c = address(pointers, "diff_dst_iter_c");
  return buffers;
}

// The memory descriptors of one layer; weights are `any`, so the primitive picks its layout.
struct LayerDescs {
  memory::desc src_layer;      // [T, N, I_l]
  memory::desc weights_layer;  // [1, D, I_l, G, H]
  memory::desc weights_iter;   // [1, D, H, G, H]
  memory::desc bias;           // [1, D, G_b, H]
  memory::desc dst_layer;      // [T, N, D*H]
  memory::desc state;          // [1, D, N, H]: h_0 and h_n, and their gradients
  memory::desc cell_state;     // LSTM's c_0 and c_n as `state`; a zero descriptor (none) else

  LayerDescs(const Config& config, int64_t layer_input) {
    const int64_t T = config.steps, N = config.batch, H = config.hidden_size;
    const int64_t D = config.directions, G = gates(config.cell);
    const auto f32 = memory::data_type::f32;
    src_layer = {{T, N, layer_input}, f32, tag::tnc};
    weights_layer = {{1, D, layer_input, G, H}, f32, tag::any};
    weights_iter = {{1, D, H, G, H}, f32, tag::any};
    bias = {{1, D, config.cell == "gru" ? G + 1 : G, H}, f32, tag::ldgo};
    dst_layer = {{T, N, D * H}, f32, tag::tnc};
    state = {{1, D, N, H}, f32, tag::ldnc};
    if (config.cell == "lstm") cell_state = state;
  }

  static int64_t gates(const std::string& cell) {
    return cell == "lstm" ? 4 : cell == "gru" ? 3 : 1;
  }
};

dnnl::rnn_direction direction_of(const Config& config) {
  return config.directions == 2 ? dnnl::rnn_direction::bidirectional_concat
                                : dnnl::rnn_direction::unidirectional_left2right;
}

dnnl::algorithm activation_of(const Config& config) {
  return config.cell == "rnn_relu" ? dnnl::algorithm::eltwise_relu
                                   : dnnl::algorithm::eltwise_tanh;
}

dnnl::primitive_desc forward_pd(const dnnl::engine& engine, const Config& config,
                                const LayerDescs& d) {
  const auto prop = config.training ? dnnl::prop_kind::forward_training
                                    : dnnl::prop_kind::forward_inference;
  const auto direction = direction_of(config);
  if (config.cell == "lstm")
    return dnnl::lstm_forward::primitive_desc(
        engine, prop, direction, d.src_layer, d.state, d.cell_state, d.weights_layer,
        d.weights_iter, d.bias, d.dst_layer, d.state, d.cell_state);
  if (config.cell == "gru")
    return dnnl::lbr_gru_forward::primitive_desc(engine, prop, direction, d.src_layer, d.state,
                                                 d.weights_layer, d.weights_iter, d.bias,
                                                 d.dst_layer, d.state);
  return dnnl::vanilla_rnn_forward::primitive_desc(
      engine, prop, activation_of(config), direction, d.src_layer, d.state, d.weights_layer,
      d.weights_iter, d.bias, d.dst_layer, d.state);
}

// Through the C API: oneDNN 3.2's C++ constructors do not take diff_weights_overwrite, and
// without it the backward adds into the weight gradients, which would then need zeroing
// before every backward (work torch's autograd does not do).
dnnl::primitive_desc backward_pd(const dnnl::engine& engine, const Config& config,
                                 const LayerDescs& d, const dnnl::primitive_desc& hint) {
  const auto any = [](const memory::desc& desc) {
    return memory::desc(desc.get_dims(), desc.get_data_type(), tag::any);
  };
  const memory::desc diff_weights_layer = any(d.weights_layer);
  const memory::desc diff_weights_iter = any(d.weights_iter);
  const auto direction = dnnl::convert_to_c(direction_of(config));
  const unsigned flags = dnnl_rnn_flags_diff_weights_overwrite;
  dnnl_primitive_desc_t pd = nullptr;
  dnnl_status_t status;
  if (config.cell == "lstm")
    status = dnnl_lstm_backward_primitive_desc_create(
        &pd, engine.get(), dnnl_backward, direction, d.src_layer.get(), d.state.get(),
        d.cell_state.get(), d.weights_layer.get(), d.weights_iter.get(), nullptr, nullptr,
        d.bias.get(), d.dst_layer.get(), d.state.get(), d.cell_state.get(), d.src_layer.get(),
        d.state.get(), d.cell_state.get(), diff_weights_layer.get(), diff_weights_iter.get(),
        nullptr, nullptr, d.bias.get(), d.dst_layer.get(), d.state.get(), d.cell_state.get(),
        flags, hint.get(), nullptr);
  else if (config.cell == "gru")
    status = dnnl_lbr_gru_backward_primitive_desc_create(
        &pd, engine.get(), dnnl_backward, direction, d.src_layer.get(), d.state.get(),
        d.weights_layer.get(), d.weights_iter.get(), d.bias.get(), d.dst_layer.get(),
        d.state.get(), d.src_layer.get(), d.state.get(), diff_weights_layer.get(),
        diff_weights_iter.get(), d.bias.get(), d.dst_layer.get(), d.state.get(), flags,
        hint.get(), nullptr);
  else
    status = dnnl_vanilla_rnn_backward_primitive_desc_create(
        &pd, engine.get(), dnnl_backward, dnnl::convert_to_c(activation_of(config)),
        direction, d.src_layer.get(), d.state.get(), d.weights_layer.get(),
        d.weights_iter.get(), d.bias.get(), d.dst_layer.get(), d.state.get(),
        d.src_layer.get(), d.state.get(), diff_weights_layer.get(), diff_weights_iter.get(),
        d.bias.get(), d.dst_layer.get(), d.state.get(), flags, 0.f, 0.f, hint.get(), nullptr);
  dnnl::error::wrap_c_api(status, "could not create an RNN backward primitive descriptor");
  return dnnl::primitive_desc(pd);
}

// One layer: its primitives and what they read and write.
struct Layer {
  int64_t input_size;  // I_l: I, or D*H above the first layer
  dnnl::primitive forward, backward;
  Args forward_args, backward_args;
};

class Rnn {
 public:
  Rnn(const Config& config, const py::dict& pointers)
      : config_(config), engine_(dnnl::engine::kind::cpu, 0), stream_(engine_) {
    const Buffers buffers = buffers_from(pointers);
    const int64_t L = config.layers, D = config.directions;
    const int64_t state_size = D * config.batch * config.hidden_size;  // one layer's h_n
    for (int64_t l = 0; l < L; ++l) {
      Layer layer;
      layer.input_size = l == 0 ? config.input_size : D * config.hidden_size;
      const LayerDescs d(config, layer.input_size);
      const bool last = l == L - 1, lstm = config.cell == "lstm";
      const int64_t offset = l * state_size;
      const auto forward = forward_pd(engine_, config, d);
      const memory weights_layer = user_weights(d.weights_layer, buffers.weights_layer[l]);
      const memory weights_iter = user_weights(d.weights_iter, buffers.weights_iter[l]);
      layer.forward = dnnl::primitive(forward);
      // Zero initial states given explicitly: without src_iter, oneDNN 3.2's backward of a
      // unidirectional LSTM or vanilla RNN took h_t for h_{t-1} in the weights_iter gradient.
      const memory zero_state = zeros(d.state);
      layer.forward_args = {
          {DNNL_ARG_SRC_LAYER, l == 0 ? memory(d.src_layer, engine_, buffers.src_layer)
                                      : layers_.back().forward_args.at(DNNL_ARG_DST_LAYER)},
          {DNNL_ARG_SRC_ITER, zero_state},
          {DNNL_ARG_WEIGHTS_LAYER, prepacked(weights_layer, forward, DNNL_ARG_WEIGHTS_LAYER)},
          {DNNL_ARG_WEIGHTS_ITER, prepacked(weights_iter, forward, DNNL_ARG_WEIGHTS_ITER)},
          {DNNL_ARG_BIAS, memory(d.bias, engine_, buffers.bias[l])},
          {DNNL_ARG_DST_LAYER, last ? memory(d.dst_layer, engine_, buffers.dst_layer)
                                    : memory(d.dst_layer, engine_)},
          {DNNL_ARG_DST_ITER, memory(d.state, engine_, buffers.dst_iter + offset)},
      };
      if (lstm) {
        layer.forward_args[DNNL_ARG_SRC_ITER_C] = zero_state;
        layer.forward_args[DNNL_ARG_DST_ITER_C] =
            memory(d.cell_state, engine_, buffers.dst_iter_c + offset);
      }
      if (config.training) {
        layer.forward_args[DNNL_ARG_WORKSPACE] = memory(forward.workspace_desc(), engine_);
        const auto backward = backward_pd(engine_, config, d, forward);
        layer.backward = dnnl::primitive(backward);
        layer.backward_args = layer.forward_args;
        // The backward's own weight layout: prepacked too, once.
        layer.backward_args[DNNL_ARG_WEIGHTS_LAYER] =
            prepacked(weights_layer, backward, DNNL_ARG_WEIGHTS_LAYER);
        layer.backward_args[DNNL_ARG_WEIGHTS_ITER] =
            prepacked(weights_iter, backward, DNNL_ARG_WEIGHTS_ITER);
        for (int arg : {DNNL_ARG_DIFF_WEIGHTS_LAYER, DNNL_ARG_DIFF_WEIGHTS_ITER,
                        DNNL_ARG_DIFF_BIAS})
          layer.backward_args[arg] =
              memory(backward.query_md(dnnl::query::exec_arg_md, arg), engine_);
        // Layer l's input gradient is layer l-1's output gradient.
        layer.backward_args[DNNL_ARG_DIFF_SRC_LAYER] =
            l == 0 ? memory(d.src_layer, engine_, buffers.diff_src_layer)
                   : layers_.back().backward_args.at(DNNL_ARG_DIFF_DST_LAYER);
        layer.backward_args[DNNL_ARG_DIFF_DST_LAYER] =
            last ? memory(d.dst_layer, engine_, buffers.diff_dst_layer)
                 : memory(d.dst_layer, engine_);
        // The initial states' gradients, which the explicit states bring: unread.
        layer.backward_args[DNNL_ARG_DIFF_SRC_ITER] = memory(d.state, engine_);
        layer.backward_args[DNNL_ARG_DIFF_DST_ITER] =
            memory(d.state, engine_, buffers.diff_dst_iter + offset);
        if (lstm) {
          layer.backward_args[DNNL_ARG_DIFF_SRC_ITER_C] = memory(d.cell_state, engine_);
          layer.backward_args[DNNL_ARG_DIFF_DST_ITER_C] =
              memory(d.cell_state, engine_, buffers.diff_dst_iter_c + offset);
        }
      }
      layers_.push_back(std::move(layer));
    }
  }

  // The timed call: the forward (inference or training) and, when training, the backward.
  void step() {
    py::gil_scoped_release no_gil;
    for (auto& layer : layers_) layer.forward.execute(stream_, layer.forward_args);
    if (config_.training)
      for (auto layer = layers_.rbegin(); layer != layers_.rend(); ++layer)
        layer->backward.execute(stream_, layer->backward_args);
    stream_.wait();
  }

  // Copies layer `l`'s weight and bias gradients into buffers in the user layouts (for checks,
  // untimed): {"weights_layer", "weights_iter", "bias"} -> address, as in Buffers.
  void weight_gradients(int64_t l, const py::dict& pointers) {
    const Layer& layer = layers_.at(l);
    const auto& args = layer.backward_args;
    const LayerDescs d(config_, layer.input_size);
    copy(args.at(DNNL_ARG_DIFF_WEIGHTS_LAYER),
         user_weights(d.weights_layer, address(pointers, "weights_layer")));
    copy(args.at(DNNL_ARG_DIFF_WEIGHTS_ITER),
         user_weights(d.weights_iter, address(pointers, "weights_iter")));
    copy(args.at(DNNL_ARG_DIFF_BIAS), memory(d.bias, engine_, address(pointers, "bias")));
  }

 private:
  // torch.nn's [G*H, I] weight rows, per direction, are oneDNN's ldgoi layout.
  memory user_weights(const memory::desc& desc, float* data) {
    return memory({desc.get_dims(), desc.get_data_type(), tag::ldgoi}, engine_, data);
  }

  // The weights reordered into the layout `pd` chose, once, outside any timed call.
  memory prepacked(const memory& user, const dnnl::primitive_desc& pd, int arg) {
    memory packed(pd.query_md(dnnl::query::exec_arg_md, arg), engine_);
    copy(user, packed);
    return packed;
  }

  memory zeros(const memory::desc& desc) {
    memory result(desc, engine_);
    std::memset(result.get_data_handle(), 0, desc.get_size());
    return result;
  }

  // memory is a handle: copies share the buffer.
  void copy(memory from, memory to) {
    dnnl::reorder(from, to).execute(stream_, from, to);
    stream_.wait();
  }

  Config config_;
  dnnl::engine engine_;
  dnnl::stream stream_;
  std::vector<Layer> layers_;
};

std::string version() {
  const auto* v = dnnl::version();
  return std::to_string(v->major) + "." + std::to_string(v->minor) + "." +
         std::to_string(v->patch);
}

}  // namespace onednn_rnn

namespace gemm_floor {

using dnnl::memory;
using tag = memory::format_tag;

// One entry of bench/flops.py's list of a layer's GEMMs: `count` products C = A B of an [m, k]
// by a [k, n] matrix. `weight`: B is a weight, the same in every product, which a layer may
// reorder once (into the layout the primitive picks); else B is data, row-major. `transposed_a`:
// A is the transpose of a row-major [k, m] matrix (dgates^T of a weight gradient), whose rows
// are padded as rnnkernels pads them (csrc/cpu/row_stride.h).
struct Gemm {
  int64_t m, k, n, count;
  bool weight, transposed_a;
};

// Values in [-0.5, 0.5): no denormals, no overflow in any product here.
void fill(memory& destination) {
  float* data = static_cast<float*>(destination.get_data_handle());
  const size_t size = destination.get_desc().get_size() / sizeof(float);
  uint32_t state = 12345;
  for (size_t i = 0; i < size; ++i) {
    state = state * 1664525u + 1013904223u;
    data[i] = float(state >> 8) / float(1 << 24) - 0.5f;
  }
}

// A matmul of `rows` rows of one GEMM of the list, with its B in the layout the primitive
// picks where B is a weight.
struct Product {
  dnnl::matmul primitive;
  memory::desc a, c;
  memory b;  // the reordered weight, or the data B
};

// The products of one entry, over buffers of their own: A and C hold `count` matrices (a
// step's products read and write their own), so no product finds its operands left in cache by
// the one before more than a layer would. They run whole, each a matmul on all threads, unless
// split by rows (split_if_faster).
class Entry {
 public:
  Entry(const dnnl::engine& engine, dnnl::stream& stream, const Gemm& gemm)
      : gemm_(gemm), engine_(engine) {
    lda_ = gemm.transposed_a ? rnnkernels::padded_row_stride(gemm.m, sizeof(float)) : gemm.k;
    const int64_t a_size = gemm.transposed_a ? gemm.k * lda_ : gemm.m * lda_;
    a_ = memory({{gemm.count * a_size}, f32(), tag::a}, engine);
    c_ = memory({{gemm.count * gemm.m * gemm.n}, f32(), tag::a}, engine);
    b_plain_ = memory({{gemm.k, gemm.n}, f32(), tag::ab}, engine);
    fill(a_);
    fill(b_plain_);
    whole_ = product(stream, gemm.m);
  }

  // Every product.
  void run(dnnl::stream& stream) const {
    if (slices_.empty()) {
      run_whole(stream);
    } else {
      run_sliced(slices_);
    }
  }

  // A product per step (a recurrence's) is split by rows across `threads` threads where that
  // ran faster than whole; `seconds(run)` times a run.
  template <typename Seconds>
  void split_if_faster(dnnl::stream& stream, int threads, const Seconds& seconds) {
    if (gemm_.count == 1 || gemm_.transposed_a || threads < 2 || gemm_.m < threads) return;
    std::vector<Product> slices = split(stream, threads);
    if (seconds([&] { run_sliced(slices); }) < seconds([&] { run_whole(stream); }))
      slices_ = std::move(slices);
  }

  bool sliced() const { return !slices_.empty(); }

 private:
  static memory::data_type f32() { return memory::data_type::f32; }

  void run_whole(dnnl::stream& stream) const {
    const int64_t a_size = a_step(), c_size = gemm_.m * gemm_.n;
    for (int64_t i = 0; i < gemm_.count; ++i) execute(stream, whole_, i * a_size, i * c_size);
  }

  // A share of the rows per thread, each thread running every product of its rows alone: a
  // recurrence's rows depend on their own alone.
  void run_sliced(const std::vector<Product>& slices) const {
    const int threads = int(slices.size());
    const int64_t a_size = a_step(), c_size = gemm_.m * gemm_.n;
#pragma omp parallel num_threads(threads)
    {
      omp_set_num_threads(1);
      const int thread = omp_get_thread_num();
      dnnl::stream stream(engine_);
      const int64_t first = first_row(thread, threads);
      for (int64_t i = 0; i < gemm_.count; ++i)
        execute(stream, slices[thread], i * a_size + first * lda_, i * c_size + first * gemm_.n);
      stream.wait();
    }
  }

  // One primitive per thread, made for one thread: the blocking oneDNN picks depends on it.
  std::vector<Product> split(dnnl::stream& stream, int threads) const {
    std::vector<Product> result;
    const int outer = omp_get_max_threads();
    omp_set_num_threads(1);
    for (int thread = 0; thread < threads; ++thread)
      result.push_back(product(stream, first_row(thread + 1, threads) - first_row(thread, threads)));
    omp_set_num_threads(outer);
    return result;
  }

  int64_t a_step() const { return gemm_.transposed_a ? gemm_.k * lda_ : gemm_.m * lda_; }
  int64_t first_row(int thread, int threads) const { return gemm_.m * thread / threads; }

  Product product(dnnl::stream& stream, int64_t rows) const {
    Product p;
    p.a = gemm_.transposed_a ? memory::desc({rows, gemm_.k}, f32(), {1, lda_})
                             : memory::desc({rows, gemm_.k}, f32(), {lda_, 1});
    p.c = memory::desc({rows, gemm_.n}, f32(), tag::ab);
    const memory::desc b({gemm_.k, gemm_.n}, f32(), gemm_.weight ? tag::any : tag::ab);
    const dnnl::matmul::primitive_desc pd(engine_, p.a, b, p.c);
    p.primitive = dnnl::matmul(pd);
    memory plain = b_plain_;  // a handle to the same buffer
    p.b = plain;
    if (pd.weights_desc() != plain.get_desc()) {
      p.b = memory(pd.weights_desc(), engine_);
      dnnl::reorder(plain, p.b).execute(stream, plain, p.b);
      stream.wait();
    }
    return p;
  }

  void execute(dnnl::stream& stream, const Product& p, int64_t a_offset, int64_t c_offset) const {
    float* a = static_cast<float*>(a_.get_data_handle()) + a_offset;
    float* c = static_cast<float*>(c_.get_data_handle()) + c_offset;
    p.primitive.execute(stream, {{DNNL_ARG_SRC, memory(p.a, engine_, a)},
                                 {DNNL_ARG_WEIGHTS, p.b},
                                 {DNNL_ARG_DST, memory(p.c, engine_, c)}});
  }

  Gemm gemm_;
  dnnl::engine engine_;
  int64_t lda_;
  memory a_, c_, b_plain_;
  Product whole_;
  std::vector<Product> slices_;  // one per thread where split, else none
};

// A layer's GEMMs alone: what a layer built on oneDNN's matmul needs at least. Each entry with
// products per step runs whole or sliced by rows across the threads, whichever ran faster when
// this was made (rnnkernels picks per layer too); the others run whole.
class Gemms {
 public:
  explicit Gemms(const std::vector<Gemm>& gemms)
      : engine_(dnnl::engine::kind::cpu, 0), stream_(engine_) {
    const int threads = omp_get_max_threads();
    const auto seconds = [this](const auto& run) { return fastest_seconds(run); };
    for (const Gemm& gemm : gemms) {
      entries_.emplace_back(engine_, stream_, gemm);
      entries_.back().split_if_faster(stream_, threads, seconds);
    }
  }

  // The timed call: every GEMM of the list.
  void step() {
    py::gil_scoped_release no_gil;
    for (const Entry& entry : entries_) entry.run(stream_);
    stream_.wait();
  }

  // Which entries run split by rows, in the order of the list.
  std::vector<bool> sliced() const {
    std::vector<bool> result;
    for (const Entry& entry : entries_) result.push_back(entry.sliced());
    return result;
  }

 private:
  // The fastest of three runs, after one that warms caches and primitives up.
  template <typename F>
  double fastest_seconds(const F& run) {
    run();
    stream_.wait();
    double best = 0;
    for (int i = 0; i < 3; ++i) {
      const auto start = std::chrono::steady_clock::now();
      run();
      stream_.wait();
      const double elapsed =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (i == 0 || elapsed < best) best = elapsed;
    }
    return best;
  }

  dnnl::engine engine_;
  dnnl::stream stream_;
  std::deque<Entry> entries_;  // a deque: an Entry's address stays while more are added
};

}  // namespace gemm_floor
#endif

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("peak_kernel", &peak::describe, py::arg("dtype"), py::arg("iterations"),
        "(isa, flops per call per thread) of the dtype's peak kernel here, or None");
  m.def("run_peak_kernel", &peak::run, py::arg("dtype"), py::arg("iterations"),
        py::arg("threads"));
#ifdef BENCH_WITH_ONEDNN
  using namespace onednn_rnn;
  py::class_<Config>(m, "Config")
      .def(py::init<std::string, bool, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t>(),
           py::arg("cell"), py::arg("training"), py::arg("steps"), py::arg("batch"),
           py::arg("input_size"), py::arg("hidden_size"), py::arg("layers"),
           py::arg("directions"));
  py::class_<Rnn>(m, "Rnn")
      .def(py::init<const Config&, const py::dict&>(), py::arg("config"), py::arg("pointers"))
      .def("step", &Rnn::step)
      .def("weight_gradients", &Rnn::weight_gradients, py::arg("layer"), py::arg("pointers"));
  m.def("onednn_version", &version);
  py::class_<gemm_floor::Gemm>(m, "Gemm")
      .def(py::init<int64_t, int64_t, int64_t, int64_t, bool, bool>(), py::arg("m"),
           py::arg("k"), py::arg("n"), py::arg("count"), py::arg("weight"),
           py::arg("transposed_a"));
  py::class_<gemm_floor::Gemms>(m, "Gemms")
      .def(py::init<const std::vector<gemm_floor::Gemm>&>(), py::arg("gemms"))
      .def("step", &gemm_floor::Gemms::step)
      .def("sliced", &gemm_floor::Gemms::sliced);
#endif
}
