// Calls rnnkernels::lstm_layer from C++ through the dispatcher, as a LibTorch user would: the
// library only registers operators, so there is no header to include; loading it (linking it,
// see CMakeLists.txt) is what makes the schema and the CPU kernel known.
//
// Runs one LSTM layer over a packed batch of three sequences of lengths 4, 3 and 1, checks the
// shapes, checks every output row against a step-by-step ATen LSTM, and checks that each
// sequence's final state is the output row of its own last step. Exits non-zero on a mismatch.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <iostream>
#include <optional>
#include <tuple>
#include <vector>

namespace {

using LSTMLayer = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor& input, const at::Tensor& batch_sizes, const at::Tensor& h0,
    const at::Tensor& c0, const at::Tensor& w_ih, const at::Tensor& w_hh,
    const std::optional<at::Tensor>& b_ih, const std::optional<at::Tensor>& b_hh,
    const std::optional<at::Tensor>& w_hr, bool reverse, bool train);

int failures = 0;

void expect(bool ok, const char* what) {
  std::cout << (ok ? "ok   " : "FAIL ") << what << "\n";
  failures += ok ? 0 : 1;
}

}  // namespace

int main() {
  const auto lstm_layer = c10::Dispatcher::singleton()
                              .findSchemaOrThrow("rnnkernels::lstm_layer", "")
                              .typed<LSTMLayer>();

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

  const auto [output, h_n, c_n, reserve] = lstm_layer.call(
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

  // The same LSTM, one step at a time in ATen; sequence b's state stops changing after its last
  // step, so its final state is the state after that step.
  at::Tensor h = h0.clone(), c = c0.clone();
  std::vector<at::Tensor> expected_rows;
  std::vector<int64_t> last_row(B);  // packed row of each sequence's last step
  int64_t offset = 0;
  for (const int64_t rows : steps) {
    const at::Tensor gates = at::addmm(b_ih + b_hh, input.narrow(0, offset, rows), w_ih.t()) +
                             at::mm(h.narrow(0, 0, rows), w_hh.t());
    const auto chunks = gates.chunk(4, 1);  // i, f, g, o as in torch.nn.LSTM
    const at::Tensor c_step = at::sigmoid(chunks[1]) * c.narrow(0, 0, rows) +
                              at::sigmoid(chunks[0]) * at::tanh(chunks[2]);
    const at::Tensor h_step = at::sigmoid(chunks[3]) * at::tanh(c_step);
    c.narrow(0, 0, rows).copy_(c_step);
    h.narrow(0, 0, rows).copy_(h_step);
    expected_rows.push_back(h_step);
    for (int64_t b = 0; b < rows; ++b) last_row[b] = offset + b;
    offset += rows;
  }
  const double max_error = (output - at::cat(expected_rows)).abs().max().item<double>();
  std::cout << "max |output - ATen step-by-step LSTM| = " << max_error << "\n";
  // float32, and the library's GEMMs (oneDNN) sum in another order than at::mm: not bitwise equal.
  expect(max_error < 1e-5, "output matches the ATen step-by-step LSTM");
  expect(at::allclose(h_n, h, 1e-5, 1e-5) && at::allclose(c_n, c, 1e-5, 1e-5),
         "h_n and c_n match the ATen step-by-step LSTM");
  const at::Tensor last_rows = output.index_select(0, at::tensor(last_row, at::kLong));
  expect(at::equal(h_n, last_rows), "h_n is the output row of each sequence's last step");

  if (failures == 0) {
    std::cout << "all checks passed\n";
  } else {
    std::cout << failures << " check(s) failed\n";
  }
  return failures == 0 ? 0 : 1;
}
