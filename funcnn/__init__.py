"""funcnn: functional neural networks in pure Python + NumPy."""

from funcnn import errors, random, tree
from funcnn.types import Key, Layer, Params, Pullback

__version__ = "0.1.0"
