"""Built-in layers. Each factory returns a :class:`funcnn.Layer`."""

from funcnn.layers.activations import (
    ELU,
    GELU,
    Identity,
    LeakyReLU,
    LogSoftmax,
    ReLU,
    Sigmoid,
    SiLU,
    Softmax,
    Softplus,
    Tanh,
)
from funcnn.layers.branches import FanInConcat, FanInSum, FanOut
from funcnn.layers.conv import AvgPool1d, AvgPool2d, Conv1d, Conv2d, MaxPool1d, MaxPool2d
from funcnn.layers.dropout import Dropout
from funcnn.layers.embedding import Embedding
from funcnn.layers.linear import Linear
from funcnn.layers.normalization import BatchNorm, LayerNorm
from funcnn.layers.reshape import Flatten
from funcnn.layers.resnet import ResNetBlock

__all__ = [
    "AvgPool1d",
    "AvgPool2d",
    "BatchNorm",
    "Conv1d",
    "Conv2d",
    "Dropout",
    "ELU",
    "Embedding",
    "FanInConcat",
    "FanInSum",
    "FanOut",
    "Flatten",
    "GELU",
    "Identity",
    "LayerNorm",
    "LeakyReLU",
    "Linear",
    "LogSoftmax",
    "MaxPool1d",
    "MaxPool2d",
    "ReLU",
    "ResNetBlock",
    "SiLU",
    "Sigmoid",
    "Softmax",
    "Softplus",
    "Tanh",
]
