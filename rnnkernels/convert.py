"""``convert(model)``: swap torch.nn's recurrent layers and cells for rnnkernels' twins."""

from torch import nn

from . import modules

_REPLACEMENTS = {
    nn.LSTM: modules.LSTM,
    nn.GRU: modules.GRU,
    nn.RNN: modules.RNN,
    nn.LSTMCell: modules.LSTMCell,
    nn.GRUCell: modules.GRUCell,
    nn.RNNCell: modules.RNNCell,
}


def _constructor_args(module):
    if isinstance(module, nn.RNNBase):
        kwargs = dict(num_layers=module.num_layers, bias=module.bias,
                      batch_first=module.batch_first, dropout=module.dropout,
                      bidirectional=module.bidirectional)
        if isinstance(module, nn.LSTM):
            kwargs["proj_size"] = module.proj_size
    else:
        kwargs = dict(bias=module.bias)
    if isinstance(module, (nn.RNN, nn.RNNCell)):
        kwargs["nonlinearity"] = module.nonlinearity
    return (module.input_size, module.hidden_size), kwargs


def _replacement(module):
    """Our twin of a torch.nn RNN/LSTM/GRU or cell holding the very same Parameter objects (so an
    optimizer built before the conversion keeps working), in the same training mode."""
    args, kwargs = _constructor_args(module)
    # Built on the meta device: its own parameters are replaced at once, never allocated.
    ours = _REPLACEMENTS[type(module)](*args, **kwargs, device="meta")
    for name, param in module.named_parameters(recurse=False):
        setattr(ours, name, param)
    if isinstance(ours, nn.RNNBase):
        ours._init_flat_weights()
    return ours.train(module.training)


def convert(model):
    """Returns ``model`` with every ``torch.nn.LSTM``, ``GRU``, ``RNN``, ``LSTMCell``, ``GRUCell``
    and ``RNNCell`` in it (the model itself included) replaced by rnnkernels' drop-in twin, which
    holds the same parameters (so device, dtype and values are kept) in the same training mode.
    Subclasses of those torch.nn classes are left alone: their forward may differ."""
    if type(model) in _REPLACEMENTS:
        return _replacement(model)
    for name, child in model.named_children():
        converted = convert(child)
        if converted is not child:
            setattr(model, name, converted)
    return model
