"""PyTorch interop: params to and from ``state_dict``s, as numpy arrays.

funcnn never imports torch. ``Linear`` params are ``{"weight": (out, in), "bias":
(out,)}``, the layout of ``torch.nn.Linear``, and ``serial`` keys its children by
index like ``torch.nn.Sequential``, so a ``serial`` of Linear layers and activations
has exactly the keys and shapes of the matching ``nn.Sequential`` state_dict
(``"0.weight"``, ``"0.bias"``, ``"2.weight"``, ...): no transposes, no renaming.

    >>> import numpy as np, torch, funcnn as fn
    >>> net = torch.nn.Sequential(
    ...     torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1)).double()
    >>> model = fn.serial(fn.layers.Linear(2, 3, dtype=np.float64), fn.layers.ReLU(),
    ...                   fn.layers.Linear(3, 1, dtype=np.float64))
    >>> # torch -> funcnn: tensors are detached, moved to the CPU and copied
    >>> params = fn.interop.from_torch_state_dict(net.state_dict(), like=model.init(0))
    >>> # funcnn -> torch
    >>> state = fn.interop.to_torch_state_dict(params)
    >>> net.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    <All keys matched successfully>

dtypes are kept as they are: torch's default float32 needs a float32 funcnn model (the
``Linear`` default), or ``net.double()`` for float64. With ``like=`` any difference in
keys, shapes or dtypes is reported in one :class:`funcnn.errors.StructureError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from funcnn import tree
from funcnn.checkpoint import _raise_unless_like, _spec_of, _specs_of
from funcnn.errors import StructureError
from funcnn.types import Params, State

_NUMERIC_KINDS = "biufc"


def to_torch_state_dict(params: Params, state: State | None = None) -> dict[str, np.ndarray]:
    """Flatten params (and the model state: BatchNorm's buffers) into a torch-style
    ``state_dict`` of numpy arrays, in torch's key order.

    Keys are dotted key paths (``"0.weight"``); empty-dict subtrees (parameterless
    layers) have no entry, as in torch. With ``state``, each layer's buffers follow its
    params (``"1.weight", "1.bias", "1.running_mean", "1.running_var",
    "1.num_batches_tracked"``) and layers come in index order, exactly as
    ``nn.Sequential.state_dict()`` lists them. Arrays are copies, so a torch tensor made
    with ``torch.from_numpy`` can be trained without touching the funcnn params.

    Args:
        params: A params pytree of numeric arrays.
        state: Optional model state (``model.init_state()`` or a later one).

    Returns:
        ``{dotted key: np.ndarray}``.

    Raises:
        TypeError: A leaf is not numeric (names the key).
        StructureError: A key path is a leaf in one tree and a subtree in the other.

    Example:
        >>> sd = fn.interop.to_torch_state_dict(params, state)
        >>> net.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
    """
    merged = params if state is None else _merge(params, state, "")
    flat = {}
    for key, leaf in tree.flatten(merged).items():
        if isinstance(leaf, dict):
            continue
        flat[key] = _numeric_copy(key, leaf, "to_torch_state_dict")
    return flat


def _merge(params, state, path: str) -> dict:
    """params and state as one tree: each dict's params keys, then its state keys;
    numeric (serial) keys in index order, as torch lists modules."""
    if not isinstance(params, dict) or not isinstance(state, dict):
        raise StructureError(f"to_torch_state_dict: {path or 'the root'!r} is a leaf in one of "
                             "params and state and a subtree in the other")
    merged = {}
    for key in [*params, *(k for k in state if k not in params)]:
        child = f"{path}.{key}" if path else key
        if key in params and key in state:
            merged[key] = _merge(params[key], state[key], child)
        else:
            merged[key] = params[key] if key in params else state[key]
    if merged and all(k.isdecimal() for k in merged):
        merged = {k: merged[k] for k in sorted(merged, key=int)}
    return merged


def from_torch_state_dict(state_dict: Mapping[str, Any], like: Params | None = None,
                          state_like: State | None = None) -> Params | tuple[Params, State]:
    """Build funcnn params (and state) from a torch-style ``state_dict``.

    Values may be numpy arrays, torch tensors or anything else array-like: objects with
    ``.detach()`` are converted with ``.detach().cpu().numpy()`` (duck-typed; torch is
    never imported), others with ``np.asarray``. Every array is copied.

    Args:
        state_dict: ``{dotted key: tensor or array}``, e.g. ``net.state_dict()``.
        like: Optional params of the funcnn model (e.g. ``model.init(0)``). Keys, shapes
            and dtypes are checked against it, all differences reported at once; the
            result has its key order, and its empty-dict subtrees are filled in.
        state_like: Optional model state (``model.init_state()``): the buffers
            (``running_mean``, ``num_batches_tracked``, ...) go into a state tree of
            its structure, and the result is ``(params, state)``. Needs ``like``.

    Returns:
        The params pytree, or ``(params, state)`` when ``state_like`` is given.

    Raises:
        TypeError: ``state_dict`` is not a mapping, or a value cannot become a numeric
            array (e.g. bfloat16: convert with ``.float()`` first); names the key.
        ValueError: A key is not a valid dotted key path.
        StructureError: ``like``/``state_like`` were given and the state_dict does not
            match them.

    Example:
        >>> params = fn.interop.from_torch_state_dict(net.state_dict(), like=model.init(0))
        >>> params, state = fn.interop.from_torch_state_dict(
        ...     net.state_dict(), like=model.init(0), state_like=model.init_state())
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(
            f"from_torch_state_dict: expected a mapping such as net.state_dict(), got "
            f"{type(state_dict).__name__}"
        )
    if state_like is not None and like is None:
        raise TypeError("from_torch_state_dict: state_like= needs like= (the params tree) too")
    flat = {}
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise TypeError(f"from_torch_state_dict: keys must be str, got {key!r}")
        flat[key] = _numeric_copy(key, _to_numpy(key, value), "from_torch_state_dict")
    if like is None:
        return _unflatten(flat)
    expected = _specs_of(like)
    expected_state = _specs_of(state_like) if state_like is not None else {}
    got = {key: _spec_of(arr) for key, arr in flat.items()}
    _raise_unless_like({**expected, **expected_state}, got, "the state_dict", short="it",
                       fill_empty=True, hint=_INTEROP_HINT)
    params = _unflatten({key: {} if spec is None else flat[key] for key, spec in expected.items()})
    if state_like is None:
        return params
    state = _unflatten({key: {} if spec is None else flat[key] for key, spec in expected_state.items()})
    return params, state


_INTEROP_HINT = (
    "Build the funcnn model to match the torch net (same layers and sizes, in the same order; "
    "a float32 model for torch's default float32, or net.double() for a float64 model), pass "
    "state_like=model.init_state() for BatchNorm buffers, or call without like= to see the keys.")


def _unflatten(flat: dict) -> dict:
    try:
        return tree.unflatten(flat)
    except ValueError as e:
        raise ValueError(f"from_torch_state_dict: {e}") from e


def _to_numpy(key: str, value: Any) -> Any:
    if not hasattr(value, "detach"):
        return value
    value = value.detach()
    if hasattr(value, "cpu"):
        value = value.cpu()
    try:
        return value.numpy()
    except (TypeError, RuntimeError) as e:
        raise TypeError(
            f"from_torch_state_dict: {key!r} cannot be converted to numpy ({e}); convert "
            "the tensor first, e.g. .float() for bfloat16"
        ) from e


def _numeric_copy(key: str, value: Any, who: str) -> np.ndarray:
    arr = np.array(value, copy=True)
    if arr.dtype.kind not in _NUMERIC_KINDS:
        raise TypeError(f"{who}: {key!r} has dtype {arr.dtype}; expected a numeric array")
    return arr
