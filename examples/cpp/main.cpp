// Calls rnnkernels::lstm_layer from C++, as a LibTorch user would: through the typed functions of
// the library's public header (include/rnnkernels/ops.h), which go through the dispatcher;
// linking the library (see CMakeLists.txt) is what registers the operators.
//
// Runs one LSTM layer over a packed batch of three sequences of lengths 4, 3 and 1, checks the
// shapes, checks every output row against a step-by-step ATen LSTM, and checks that each
// sequence's final state is the output row of its own last step. Then differentiates twice
// (create_graph=true, all in C++): the gradient of a gradient must match the step-by-step ATen
// LSTM's. Exits non-zero on a mismatch.
#include <ATen/ATen.h>
#include <torch/autograd.h>

#include <rnnkernels/ops.h>

#include <iostream>
#include <optional>
#include <tuple>
#include <vector>

namespace {

int failures = 0;

void expect(bool ok, const char* what) {
  std::cout << (ok ? "ok   " : "FAIL ") << what << "\n";
  failures += ok ? 0 : 1;
}

// The same LSTM, one step at a time in ATen: the output rows and the final (h, c). Sequence b's
// state stops changing after its last step, so its final state is the state after that step.
std::tuple<at::Tensor, at::Tensor, at::Tensor> aten_lstm(
    const at::Tensor& input, const std::vector<int64_t>& steps, const at::Tensor& h0,
    const at::Tensor& c0, const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& b_ih,
    const at::Tensor& b_hh) {
  at::Tensor h = h0, c = c0;
  std::vector<at::Tensor> rows_out;
  int64_t offset = 0;
  for (const int64_t rows : steps) {
    const at::Tensor gates = at::addmm(b_ih + b_hh, input.narrow(0, offset, rows), w_ih.t()) +
                             at::mm(h.narrow(0, 0, rows), w_hh.t());
    const auto chunks = gates.chunk(4, 1);  // i, f, g, o as in torch.nn.LSTM
    const at::Tensor c_step = at::sigmoid(chunks[1]) * c.narrow(0, 0, rows) +
                              at::sigmoid(chunks[0]) * at::tanh(chunks[2]);
    const at::Tensor h_step = at::sigmoid(chunks[3]) * at::tanh(c_step);
    const int64_t batch = h.size(0);
    c = rows == batch ? c_step : at::cat({c_step, c.narrow(0, rows, batch - rows)});
    h = rows == batch ? h_step : at::cat({h_step, h.narrow(0, rows, batch - rows)});
    rows_out.push_back(h_step);
    offset += rows;
  }
  return {at::cat(rows_out), h, c};
}

}  // namespace

int main() {
  const int64_t I = 5, H = 7, B = 3;
  // Time-major packed rows: step t holds the first batch_sizes[t] sequences.
  const std::vector<int64_t> steps = {3, 2, 2, 1};
  const at::Tensor batch_sizes = at::tensor(steps, at::kLong);
  const int64_t N = batch_sizes.sum().item<int64_t>();

  at::manual_seed(0);
  const at::Tensor input = at::randn({N, I});
  const at::Tensor h0 = at::randn({B, H}), c0 = at::randn({B, H});
  const at::Tensor w_ih = at::randn({4 * H, I}) * 0.3, w_hh = at::randn({4 * H, H}) * 0.3;
  const at::Tensor b_ih = at::randn({4 * H}) * 0.1, b_hh = at::randn({4 * H}) * 0.1;

  const auto [output, h_n, c_n, reserve] = rnnkernels::ops::lstm_layer(
      input, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, std::nullopt, /*reverse=*/false,
      /*train=*/true);
  std::cout << "lstm_layer: input " << input.sizes() << ", batch_sizes " << at::IntArrayRef(steps)
            << " -> output " << output.sizes() << ", h_n " << h_n.sizes() << ", c_n "
            << c_n.sizes() << ", reserve " << reserve.sizes() << "\n";
  expect(output.sizes() == at::IntArrayRef({N, H}), "output is [N, H]");
  expect(h_n.sizes() == at::IntArrayRef({B, H}) && c_n.sizes() == at::IntArrayRef({B, H}),
         "h_n and c_n are [B, H]");
  expect(reserve.sizes() == at::IntArrayRef({N, 5 * H}), "reserve is [N, 5H] with train=true");
  if (failures > 0) return 1;  // the comparisons below need these shapes

  const auto [expected, h, c] = aten_lstm(input, steps, h0, c0, w_ih, w_hh, b_ih, b_hh);
  std::vector<int64_t> last_row(B);  // packed row of each sequence's last step
  int64_t offset = 0;
  for (const int64_t rows : steps) {
    for (int64_t b = 0; b < rows; ++b) last_row[b] = offset + b;
    offset += rows;
  }
  const double max_error = (output - expected).abs().max().item<double>();
  std::cout << "max |output - ATen step-by-step LSTM| = " << max_error << "\n";
  // float32, and the library's GEMMs (oneDNN) sum in another order than at::mm: not bitwise equal.
  expect(max_error < 1e-5, "output matches the ATen step-by-step LSTM");
  expect(at::allclose(h_n, h, 1e-5, 1e-5) && at::allclose(c_n, c, 1e-5, 1e-5),
         "h_n and c_n match the ATen step-by-step LSTM");
  const at::Tensor last_rows = output.index_select(0, at::tensor(last_row, at::kLong));
  expect(at::equal(h_n, last_rows), "h_n is the output row of each sequence's last step");

  // Double backward, in float64: d/d input of <dL/dw_hh, v>, where L = <output, u>; the first
  // gradient is taken with create_graph=true, so the second differentiates the first.
  const at::Tensor u = at::randn({N, H}, at::kDouble), v = at::randn({4 * H, H}, at::kDouble);
  const auto second_order = [&](const auto& layer) {
    const at::Tensor x = input.to(at::kDouble).requires_grad_();
    const at::Tensor w = w_hh.to(at::kDouble).requires_grad_();
    const at::Tensor out = layer(x, w);
    const at::Tensor grad_w = torch::autograd::grad({out}, {w}, {u}, /*retain_graph=*/true,
                                                    /*create_graph=*/true)[0];
    return torch::autograd::grad({(grad_w * v).sum()}, {x})[0];
  };
  const auto d = [](const at::Tensor& t) { return t.to(at::kDouble); };
  const at::Tensor ours = second_order([&](const at::Tensor& x, const at::Tensor& w) {
    return std::get<0>(rnnkernels::ops::lstm_layer(x, batch_sizes, d(h0), d(c0), d(w_ih), w,
                                                   d(b_ih), d(b_hh), std::nullopt, false, true));
  });
  const at::Tensor theirs = second_order([&](const at::Tensor& x, const at::Tensor& w) {
    return std::get<0>(aten_lstm(x, steps, d(h0), d(c0), d(w_ih), w, d(b_ih), d(b_hh)));
  });
  const double second_error = (ours - theirs).abs().max().item<double>();
  std::cout << "max |second-order gradient - ATen step-by-step LSTM's| = " << second_error
            << "\n";
  expect(second_error < 1e-10, "double backward (create_graph=true) matches ATen's in C++");

  if (failures == 0) {
    std::cout << "all checks passed\n";
  } else {
    std::cout << failures << " check(s) failed\n";
  }
  return failures == 0 ? 0 : 1;
}
