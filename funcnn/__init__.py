"""funcnn: functional neural networks in pure Python + NumPy.

Layers are pure ``(init, apply, vjp)`` triples, params are nested dicts of arrays,
and gradients are exact::

    import funcnn as fn
    model = fn.serial(fn.layers.Linear(1, 16), fn.layers.ReLU(), fn.layers.Linear(16, 1))
    params = model.init(fn.random.key(0))
    loss, grads = fn.value_and_grad(model, fn.losses.mse)(params, x, y)
"""

from funcnn import (
    callbacks,
    data,
    datasets,
    debug,
    distributed,
    errors,
    interop,
    layers,
    losses,
    ops,
    optim,
    random,
    testing,
    train,
    tree,
)
from funcnn.checkpoint import load, save
from funcnn.combinators import parallel, residual, serial
from funcnn.grad import grad, value_and_grad
from funcnn.layers import (
    ELU,
    BatchNorm,
    Dropout,
    GELU,
    Identity,
    LayerNorm,
    LeakyReLU,
    Linear,
    LogSoftmax,
    ReLU,
    ResNetBlock,
    Sigmoid,
    SiLU,
    Softmax,
    Softplus,
    Tanh,
)
from funcnn.step import train_step
from funcnn.summary import summary
from funcnn.train import FitResult, fit
from funcnn.types import Key, Layer, Params, Pullback, State

__version__ = "0.1.0"

__all__ = [
    "BatchNorm", "Dropout", "ELU", "GELU", "FitResult", "Identity", "Key", "Layer", "LayerNorm",
    "LeakyReLU", "Linear", "LogSoftmax", "Params", "Pullback", "ReLU", "ResNetBlock", "SiLU",
    "Sigmoid", "Softmax", "Softplus", "State", "Tanh", "callbacks", "data", "datasets", "debug",
    "distributed", "errors", "fit", "grad", "interop", "layers", "load", "losses", "ops", "optim",
    "parallel", "random", "residual", "save", "serial", "summary", "testing", "train", "train_step",
    "tree", "value_and_grad",
]
