"""oneDNN's RNN primitive run with a torch.nn module's weights: the benchmark's third
implementation on the CPU (float32, padded input; bench/native.cpp calls oneDNN)."""

from __future__ import annotations

import torch

from bench import native

CELLS = {"LSTM": "lstm", "GRU": "gru", "RNN_TANH": "rnn_tanh", "RNN_RELU": "rnn_relu"}
# Which of torch.nn's gate blocks each of oneDNN's is: LSTM's i, f, c~, o are torch's i, f, g, o;
# GRU's u, r, o are torch's z, r, n. Each order is its own inverse.
GATE_ORDER = {"LSTM": [0, 1, 2, 3], "GRU": [1, 0, 2], "RNN_TANH": [0], "RNN_RELU": [0]}


class Unsupported(Exception):
    """What of a case oneDNN's RNN primitive (or this binding) does not take."""


def unsupported_reason(module: torch.nn.RNNBase, inputs, autocast: str | None) -> str | None:
    """Why `module(inputs)` (under autocast in that dtype) cannot run on the primitive here, or
    None where it can."""
    if not isinstance(module, torch.nn.RNNBase):
        return "cell not in oneDNN"
    if not native.load().has_onednn_rnn:
        return native.load().missing
    if not isinstance(inputs, torch.Tensor):
        return "packed input"
    if inputs.device.type != "cpu" or inputs.dtype != torch.float32 or autocast:
        return "float32 CPU only"
    if module.batch_first or module.proj_size:
        return "sequence-first input, no projection"
    return None


def reorder_gates(tensor: torch.Tensor, mode: str) -> torch.Tensor:
    """A weight's rows or a bias, gate blocks from torch.nn's order to oneDNN's, or back."""
    order = GATE_ORDER[mode]
    return tensor.unflatten(0, (len(order), -1))[order].flatten(0, 1)


def addresses(buffers: dict) -> dict:
    """Name -> address (or list of addresses) of each buffer, as bench/native.cpp reads them."""
    return {
        name: [item.data_ptr() for item in value] if isinstance(value, list) else value.data_ptr()
        for name, value in buffers.items()
    }


class OneDnnRnn:
    """The primitive over a copy of `module`'s weights, prepacked once here, with buffers for
    its input, outputs and (when training) gradients. `step()` is the call to time; `outputs`
    are then torch.nn's [output, h_n(, c_n)]. Zero initial states, as the benchmark's modules
    get."""

    def __init__(
        self,
        module: torch.nn.RNNBase,
        inputs,
        grad_outputs: list | None,
        autocast: str | None = None,
    ):
        reason = unsupported_reason(module, inputs, autocast)
        if reason:
            raise Unsupported(reason)
        self.module = module
        self.mode = module.mode
        self.layers = module.num_layers
        self.suffixes = ["", "_reverse"] if module.bidirectional else [""]
        steps, batch, _ = inputs.shape
        hidden = module.hidden_size
        # [L, D, N, H] is torch's [L * D, N, H] state layout, split.
        state_shape = (self.layers, len(self.suffixes), batch, hidden)
        self.buffers = {
            "weights_layer": [self.weights("weight_ih", layer) for layer in range(self.layers)],
            "weights_iter": [self.weights("weight_hh", layer) for layer in range(self.layers)],
            "bias": [self.bias(layer) for layer in range(self.layers)],
            "src_layer": inputs.detach().contiguous(),
            "dst_layer": inputs.new_empty(steps, batch, len(self.suffixes) * hidden),
            "dst_iter": inputs.new_empty(state_shape),
        }
        output_names = ["dst_layer", "dst_iter"]
        if self.mode == "LSTM":
            self.buffers["dst_iter_c"] = inputs.new_empty(state_shape)
            output_names.append("dst_iter_c")
        self.output_names = output_names
        if grad_outputs is not None:
            self.buffers["diff_src_layer"] = torch.empty_like(self.buffers["src_layer"])
            for name, grad in zip(output_names, grad_outputs):
                shape = self.buffers[name].shape
                self.buffers["diff_" + name] = grad.detach().reshape(shape).contiguous()
        binding = native.load().module
        config = binding.Config(
            cell=CELLS[self.mode],
            training=grad_outputs is not None,
            steps=steps,
            batch=batch,
            input_size=module.input_size,
            hidden_size=hidden,
            layers=self.layers,
            directions=len(self.suffixes),
        )
        self.rnn = binding.Rnn(config, addresses(self.buffers))

    def step(self) -> None:
        """The call to time. A method of this object, so whoever holds it keeps the buffers
        the primitive reads and writes alive."""
        self.rnn.step()

    @property
    def outputs(self) -> list[torch.Tensor]:
        """[output, h_n(, c_n)] in torch.nn's shapes."""
        output, *states = (self.buffers[name] for name in self.output_names)
        return [output] + [state.flatten(0, 1) for state in states]

    @property
    def input_gradient(self) -> torch.Tensor:
        return self.buffers["diff_src_layer"]

    def parameter(self, name: str, layer: int) -> list[torch.Tensor]:
        """`name` (weight_ih, bias_hh, ...) of `layer`, one tensor per direction."""
        return [
            getattr(self.module, f"{name}_l{layer}{suffix}").detach() for suffix in self.suffixes
        ]

    def weights(self, name: str, layer: int) -> torch.Tensor:
        """[D, G*H, I_l]: the layer's weight, gates in oneDNN's order."""
        weights = self.parameter(name, layer)
        return torch.stack([reorder_gates(weight, self.mode) for weight in weights])

    def bias(self, layer: int) -> torch.Tensor:
        """[D, G_b, H]: torch.nn's two biases as oneDNN's one. LBR GRU's new gate keeps its hidden
        bias apart (it sits inside r * (W_hn h + b_hn)), as a fourth block."""
        hidden = self.module.hidden_size
        blocks = len(GATE_ORDER[self.mode]) + (self.mode == "GRU")
        if not self.module.bias:
            return torch.zeros(len(self.suffixes), blocks, hidden)
        biases = []
        for b_ih, b_hh in zip(self.parameter("bias_ih", layer), self.parameter("bias_hh", layer)):
            summed = reorder_gates(b_ih + b_hh, self.mode).view(-1, hidden)
            if self.mode == "GRU":
                new_gate = [b_ih.view(3, hidden)[2:], b_hh.view(3, hidden)[2:]]
                summed = torch.cat([summed[:2], *new_gate])
            biases.append(summed)
        return torch.stack(biases)

    def parameter_gradients(self) -> dict[str, torch.Tensor]:
        """torch.nn's parameter names -> their gradients from the last training step, in torch's
        layouts (for checks; not timed)."""
        gradients = {}
        for layer in range(self.layers):
            layer_gradients = {
                name: torch.empty_like(self.buffers[name][layer])
                for name in ("weights_layer", "weights_iter", "bias")
            }
            self.rnn.weight_gradients(layer, addresses(layer_gradients))
            for direction, suffix in enumerate(self.suffixes):
                tail = f"_l{layer}{suffix}"
                bias = layer_gradients["bias"][direction]
                gradients["weight_ih" + tail] = reorder_gates(
                    layer_gradients["weights_layer"][direction], self.mode
                )
                gradients["weight_hh" + tail] = reorder_gates(
                    layer_gradients["weights_iter"][direction], self.mode
                )
                if self.module.bias:
                    # GRU: blocks u, r, o of the input bias; u, r and the fourth of the hidden.
                    input_rows = bias[:3] if self.mode == "GRU" else bias
                    hidden_rows = torch.cat([bias[:2], bias[3:]]) if self.mode == "GRU" else bias
                    gradients["bias_ih" + tail] = reorder_gates(input_rows.flatten(), self.mode)
                    gradients["bias_hh" + tail] = reorder_gates(hidden_rows.flatten(), self.mode)
        return gradients
