// The one list of cells. Each X(Cell, ...) line below gives the cell its CPU and CUDA pointwise
// drivers (explicit instantiations in csrc/cpu/pointwise.cpp, pointwise_kernels.h and
// pointwise.cu) and a place in the generic operators, which find it by its traits' kName
// (csrc/ops/). Torch-free.
#pragma once

#include <string_view>

#include "traits.h"

// X(Cell, args...) for every cell; the extra arguments pass through.
#define RNNKERNELS_FOR_EACH_CELL(X, ...) \
  X(LSTM, __VA_ARGS__)                   \
  X(GRU, __VA_ARGS__)                    \
  X(Elman<false>, __VA_ARGS__)           \
  X(Elman<true>, __VA_ARGS__)            \
  X(IndRNN<false>, __VA_ARGS__)          \
  X(IndRNN<true>, __VA_ARGS__)           \
  X(LSTMExt, __VA_ARGS__)                \
  X(GRUExt, __VA_ARGS__)                 \
  X(LayerNormLSTM, __VA_ARGS__)          \
  X(LayerNormGRU, __VA_ARGS__)

// As an X of a cell list: INSTANTIATE(Cell, T) for the four dtypes the kernels take, the half
// types named as the caller's code names them (c10's on the CPU, CUDA's in the kernels).
#define RNNKERNELS_FOR_EACH_DTYPE(Cell, INSTANTIATE, Half, BFloat16)             \
  INSTANTIATE(Cell, float) INSTANTIATE(Cell, double) INSTANTIATE(Cell, Half) \
  INSTANTIATE(Cell, BFloat16)

namespace rnnkernels {

template <typename Cell>
struct CellTag {
  using type = Cell;
};

template <typename... Cell>
struct CellList {
  // Calls f(CellTag<C>{}) for the cell C named `name`; false when no cell has that name.
  template <typename F>
  static bool visit(std::string_view name, const F& f) {
    return ((name == Cell::kName ? (f(CellTag<Cell>{}), true) : false) || ...);
  }
  // Calls f(CellTag<C>{}) for every cell C of the list, in order.
  template <typename F>
  static void visit_all(const F& f) {
    (f(CellTag<Cell>{}), ...);
  }
};

namespace detail {
template <typename... Cell>
struct ListOf;
template <typename... Cell>
struct ListOf<void, Cell...> {
  using type = CellList<Cell...>;
};
}  // namespace detail

#define RNNKERNELS_CELL_AFTER_COMMA(Cell, ...) , Cell
// The cells of an X-macro list such as RNNKERNELS_FOR_EACH_CELL as a CellList.
#define RNNKERNELS_CELL_LIST(FOR_EACH) \
  typename ::rnnkernels::detail::ListOf<void FOR_EACH(RNNKERNELS_CELL_AFTER_COMMA, )>::type

using Cells = RNNKERNELS_CELL_LIST(RNNKERNELS_FOR_EACH_CELL);

}  // namespace rnnkernels
