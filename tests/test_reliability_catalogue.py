"""The bad-input catalogue: every bad input to every entry point, with its outcome.

Each row of ``CATALOGUE`` is one (function, bad input) pair and what must happen: an
exception of a given type whose message holds every excerpt (what is wrong, where: a
layer's index path or a dotted key, and how to fix it where that helps), or a documented
non-error outcome (an accepted input, or NaN/Inf propagating like numpy). An error must
come from funcnn's own checks: a funcnn exception, or a TypeError/ValueError raised in
funcnn's code (or by Python when binding an unknown keyword), never one from inside numpy
or the standard library.

The table in ``docs/reliability.md`` is generated from these rows::

    python tests/test_reliability_catalogue.py > /tmp/table.md

and ``test_docs_table_is_current`` fails when the two disagree.

NaN and Inf, by design: ``apply``, ``vjp``, losses and optimizer updates follow IEEE
semantics like numpy (checking every call would cost a full pass in the hot path), so a
NaN input gives NaN outputs, and with ``np.errstate(invalid="raise")`` numpy itself
raises ``FloatingPointError``. ``fit`` refuses non-finite data up front
(``NonFiniteDataError``, naming the array and rows), stops at a NaN loss
(``NonFiniteLossError``), and ``fn.debug.check_finite(model)`` finds the layer.
"""

from __future__ import annotations

import functools
import pathlib
import pickle
import re
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import pytest

import funcnn as fn
from funcnn.errors import (
    CheckpointError,
    FuncnnError,
    InputTypeError,
    InputValueError,
    IntegerTargetWarning,
    NonFiniteDataError,
    NonFiniteError,
    NonFiniteLossError,
    ParamsError,
    RandomKeyError,
    ShapeError,
    StateError,
    StructureError,
)

REPO = pathlib.Path(__file__).resolve().parents[1]
FUNCNN_DIR = pathlib.Path(fn.__file__).resolve().parent
DOCS = REPO / "docs" / "reliability.md"


# --- the rows ----------------------------------------------------------------------


class Ok(NamedTuple):
    """A non-error outcome: ``label`` for the docs, ``check(result)`` must hold."""

    label: str
    check: Callable[[Any], bool]
    ieee: bool = False  # run with numpy errors ignored (numpy's default would only warn)


class Row(NamedTuple):
    function: str
    bad_input: str
    call: Callable[[pathlib.Path], Any]  # gets a fresh temporary folder
    outcome: type[BaseException] | Ok
    excerpts: tuple[str, ...] = ()
    pending: str = ""  # "needs <change> in <file>": an xfail(strict) until the change lands
    ieee: bool = False  # run with numpy errors ignored, as under numpy's default (warnings)


def non_finite(result) -> bool:
    arrays = [np.asarray(a) for a in _arrays_in(result)]
    return any(a.dtype.kind in "fc" and not np.isfinite(a).all() for a in arrays)


def _arrays_in(result):
    if isinstance(result, dict):
        for v in result.values():
            yield from _arrays_in(v)
    elif isinstance(result, (tuple, list)):
        for v in result:
            yield from _arrays_in(v)
    elif isinstance(result, (np.ndarray, np.generic, float)):
        yield result


PROPAGATES = Ok("returns NaN/Inf (IEEE, like numpy)", non_finite, ieee=True)


def shape_is(*shape):
    return lambda y: np.shape(y) == shape


# A small model with a nested residual, float32 end to end.
MODEL = fn.serial(
    fn.Linear(2, 4), fn.ReLU(), fn.residual(fn.serial(fn.Linear(4, 4), fn.Tanh())), fn.Linear(4, 1)
)
PARAMS = MODEL.init(0)
X = fn.random.normal(1, (5, 2), np.float32)
Y = fn.random.normal(2, (5, 1), np.float32)
DY = np.ones((5, 1), np.float32)
OTHER = fn.serial(fn.Linear(3, 4), fn.ReLU(), fn.residual(fn.serial(fn.Linear(4, 4), fn.Tanh())),
                  fn.Linear(4, 1))
VG = fn.value_and_grad(MODEL, fn.losses.mse)
GRADS = VG(PARAMS, X, Y)[1]


def with_row(a, row, value):
    a = a.copy()
    a[row] = value
    return a


def params_with(path, value):
    flat = dict(fn.tree.flatten(PARAMS))
    flat[path] = value
    return fn.tree.unflatten(flat)


# Bad model inputs x, shared by apply, vjp and value_and_grad: (label, x, outcome, excerpts).
LINEAR0 = "serial[0] Linear(2 -> 4)"
BAD_X = [
    ("0-d input", np.array(1.0, np.float32), ShapeError,
     (LINEAR0, "at least 1 dimension, got a 0-d array")),
    ("wrong feature size", np.ones((5, 3), np.float32), ShapeError,
     (LINEAR0, "expected (..., 2), got (5, 3)")),
    ("wrong ndim, 3-d with wrong features", np.ones((2, 5, 3), np.float32), ShapeError,
     (LINEAR0, "expected (..., 2), got (2, 5, 3)")),
    ("bool array", np.ones((5, 2), bool), InputTypeError, (LINEAR0, "got dtype bool")),
    ("complex array", np.ones((5, 2), complex), InputTypeError, (LINEAR0, "got dtype complex128")),
    ("object array", np.ones((5, 2), object), InputTypeError, (LINEAR0, "got dtype object")),
    ("string array", np.full((5, 2), "1.0"), InputTypeError, (LINEAR0, "got dtype <U3")),
    ("Python list", X.tolist(), InputTypeError,
     (LINEAR0, "expected a numpy array, got list", "np.asarray(x, dtype=np.float32)")),
    ("Python float", 1.0, InputTypeError, (LINEAR0, "expected a numpy array, got float")),
]

# What a "bad" x that is in fact fine gives, per entry point.
APPLY_OK_X = [
    ("1-d input (one sample, no batch axis)", X[0], Ok("accepted: one sample -> shape (1,)",
                                                       shape_is(1,))),
    ("3-d input (leading dims are batch dims)", np.ones((2, 5, 2), np.float32),
     Ok("accepted: shape (2, 5, 1)", shape_is(2, 5, 1))),
    ("empty batch (0, 2)", X[:0], Ok("accepted: shape (0, 1)", shape_is(0, 1))),
    ("int array", np.ones((5, 2), np.int64),
     Ok("accepted: Linear casts it to its dtype (float32)", lambda y: y.dtype == np.float32)),
    ("NaN input", with_row(X, 3, np.nan), PROPAGATES),
    ("Inf input", with_row(X, 3, np.inf), PROPAGATES),
]


def vjp_all(x):
    """``(y, dparams, dx)`` of MODEL at ``x``, pulling back ones."""
    y, pullback = MODEL.vjp(PARAMS, x)
    return (y, *pullback(np.ones_like(y)))


def model_rows() -> list[Row]:
    rows = []
    for label, x, outcome, excerpts in BAD_X:
        rows.append(Row("apply", label, lambda t, x=x: MODEL.apply(PARAMS, x), outcome, excerpts))
        rows.append(Row("vjp", label, lambda t, x=x: MODEL.vjp(PARAMS, x), outcome, excerpts))
        rows.append(Row("value_and_grad", f"x: {label}", lambda t, x=x: VG(PARAMS, x, Y), outcome,
                        excerpts))
    for label, x, outcome in APPLY_OK_X:
        rows.append(Row("apply", label, lambda t, x=x: MODEL.apply(PARAMS, x), outcome))
        rows.append(Row("vjp", label, lambda t, x=x: vjp_all(x), outcome._replace(
            check=lambda r, check=outcome.check, ieee=outcome.ieee: check(r if ieee else r[0]))))
    rows += [
        Row("vjp", "pullback dy of the wrong shape", lambda t: MODEL.vjp(PARAMS, X)[1](DY[:, 0]),
            ShapeError, ("serial: pullback expected dy of shape (5, 1), got (5,)",)),
        Row("vjp", "pullback dy as a list", lambda t: MODEL.vjp(PARAMS, X)[1](DY.tolist()),
            ShapeError, ("serial: pullback expected dy of shape (5, 1), got list",)),
        Row("vjp", "pullback dy with NaN", lambda t: MODEL.vjp(PARAMS, X)[1](with_row(DY, 1, np.nan)),
            PROPAGATES),
        Row("value_and_grad", "x: empty batch (0, 2)", lambda t: VG(PARAMS, X[:0], Y[:0]), ShapeError,
            ("mse: pred is empty (shape (0, 1))", "mean over no elements")),
        Row("value_and_grad", "x: NaN rows", lambda t: VG(PARAMS, with_row(X, 3, np.nan), Y), PROPAGATES),
        Row("value_and_grad", "x: Inf rows", lambda t: VG(PARAMS, with_row(X, 3, np.inf), Y), PROPAGATES),
        Row("value_and_grad", "x and y of different lengths", lambda t: VG(PARAMS, X, Y[:4]), ShapeError,
            ("mse: pred has shape (5, 1) but target has shape (4, 1)",)),
        Row("value_and_grad", "y of shape (N,) for pred (N, 1)", lambda t: VG(PARAMS, X, Y[:, 0]),
            ShapeError, ("pred has shape (5, 1) but target has shape (5,)",
                         "target.reshape(pred.shape)")),
        Row("value_and_grad", "y: int array (class labels given to mse?)",
            lambda t: VG(PARAMS, X, np.ones((5, 1), np.int64)), IntegerTargetWarning,
            ("mse: target has integer dtype int64", "softmax_cross_entropy")),
        Row("value_and_grad", "y: complex array", lambda t: VG(PARAMS, X, Y.astype(complex)),
            InputTypeError, ("mse: target must be real numbers, got dtype complex128",)),
        Row("value_and_grad", "y: object array", lambda t: VG(PARAMS, X, Y.astype(object)),
            InputTypeError, ("mse: target must be real numbers, got dtype object",)),
        Row("value_and_grad", "y: string array", lambda t: VG(PARAMS, X, np.full((5, 1), "a")),
            InputTypeError, ("mse: target must be real numbers, got dtype <U1",)),
        Row("value_and_grad", "y: Python list", lambda t: VG(PARAMS, X, Y.tolist()), InputTypeError,
            ("mse: target must be a numpy array, got list", "np.asarray(target)")),
        Row("value_and_grad", "y: NaN rows", lambda t: VG(PARAMS, X, with_row(Y, 2, np.nan)),
            PROPAGATES),
        Row("value_and_grad", "loss is a plain function", lambda t: fn.value_and_grad(
            MODEL, lambda p, y: 0.0), TypeError, ("expected a funcnn loss", "fn.losses.make_loss")),
        Row("value_and_grad", "model is not a Layer", lambda t: fn.value_and_grad(
            MODEL.apply, fn.losses.mse), TypeError, ("value_and_grad: model must be a funcnn Layer",)),
        Row("value_and_grad", "unknown keyword argument", lambda t: VG(PARAMS, X, Y, weights=Y),
            TypeError, ("unexpected keyword argument 'weights'",)),
        Row("value_and_grad", "loss option misspelled", lambda t: fn.value_and_grad(
            MODEL, functools.partial(fn.losses.huber, delt=0.5))(PARAMS, X, Y), TypeError,
            ("huber() got an unexpected keyword argument 'delt'",)),
    ]
    for fname, f in (("apply", MODEL.apply), ("vjp", MODEL.vjp),
                     ("value_and_grad", lambda p, x: VG(p, x, Y))):
        rows += [
            Row(fname, "params from another model", lambda t, f=f: f(OTHER.init(0), X),
                StructureError, ("Linear(2 -> 4): expected weight (4, 2) and bias (4,), got weight (4, 3)",
                                 "were these params made by this model's init?")),
            Row(fname, "params from another model: index path named", lambda t, f=f: f(
                OTHER.init(0), X), StructureError, (LINEAR0 + ": expected weight (4, 2)",)),
            Row(fname, "params of a longer model (extra key)", lambda t, f=f: f(
                {**PARAMS, "9": {}}, X), StructureError,
                ("serial: unexpected params keys ['9']", "were these params made by this model's init?")),
            Row(fname, "params missing a layer", lambda t, f=f: f(
                {k: v for k, v in PARAMS.items() if k != "3"}, X), StructureError,
                ("Linear(4 -> 1): params must be {'weight', 'bias'}, got []",)),
            Row(fname, "params with a wrong leaf shape", lambda t, f=f: f(
                params_with("2.0.weight", np.ones((4, 3), np.float32)), X), StructureError,
                ("Linear(4 -> 4): expected weight (4, 4) and bias (4,), got weight (4, 3)",)),
            Row(fname, "params not a dict", lambda t, f=f: f([PARAMS], X), InputTypeError,
                ("serial: params must be a dict, got list",)),
            Row(fname, "flattened params (keys containing '.')", lambda t, f=f: f(
                fn.tree.flatten(PARAMS), X), StructureError,
                ("unexpected params keys ['0.bias', '0.weight'",)),
            Row(fname, "flattened params: hint to unflatten", lambda t, f=f: f(
                fn.tree.flatten(PARAMS), X), StructureError, ("fn.tree.unflatten",)),
            Row(fname, "int params (silently truncates x)", lambda t, f=f: f(
                params_with("0.weight", np.ones((4, 2), np.int64)), X), StructureError,
                (LINEAR0, "weight", "int64")),
            Row(fname, "unknown keyword argument", lambda t, f=f: f(PARAMS, X, training=True),
                TypeError, ("unexpected keyword argument 'training'",)),
        ]
    return rows


LOSSES = {
    "mse": fn.losses.mse,
    "l1": fn.losses.l1,
    "huber": fn.losses.huber,
    "sigmoid_binary_cross_entropy": fn.losses.sigmoid_binary_cross_entropy,
}
PRED = fn.random.normal(3, (4, 3), np.float32)
TARGET = fn.random.uniform(4, (4, 3), 0.0, 1.0, np.float32)
LABELS = np.array([0, 2, 1, 2])


def loss_rows() -> list[Row]:
    rows = []
    all_losses = {**LOSSES, "softmax_cross_entropy": fn.losses.softmax_cross_entropy}
    bad_pred = [
        ("pred: int array", PRED.astype(np.int64), InputTypeError, "pred must be floating-point, got dtype int64"),
        ("pred: bool array", PRED > 0, InputTypeError, "pred must be floating-point, got dtype bool"),
        ("pred: complex array", PRED.astype(complex), InputTypeError, "pred must be floating-point, got dtype complex128"),
        ("pred: object array", PRED.astype(object), InputTypeError, "pred must be floating-point, got dtype object"),
        ("pred: string array", PRED.astype(str), InputTypeError, "pred must be floating-point, got dtype <U"),
        ("pred: Python list", PRED.tolist(), InputTypeError, "pred must be a numpy array, got list"),
        ("pred: empty (0, 3)", PRED[:0], ShapeError, "pred is empty (shape (0, 3))"),
    ]
    for name, loss in all_losses.items():
        target = LABELS if name == "softmax_cross_entropy" else TARGET
        for label, pred, outcome, excerpt in bad_pred:
            target_for = target[:0] if pred is not None and np.shape(pred)[:1] == (0,) else target
            rows.append(Row(f"loss {name}", label, lambda t, l=loss, p=pred, y=target_for: l(p, y),
                            outcome, (f"{name}: {excerpt}",)))
        rows += [
            Row(f"loss {name}", "pred: NaN", lambda t, l=loss, y=target: l(with_row(PRED, 1, np.nan), y),
                Ok("returns NaN (IEEE, like numpy)", lambda v: np.isnan(v), ieee=True)),
            Row(f"loss {name}", "pred: Inf", lambda t, l=loss, y=target: l(with_row(PRED, 1, np.inf), y),
                Ok("returns NaN or Inf (IEEE, like numpy)", lambda v: not np.isfinite(v), ieee=True)),
            Row(f"loss {name}", "unknown keyword argument", lambda t, l=loss, y=target: l(
                PRED, y, reduction="sum"), TypeError,
                (f"{name}() got an unexpected keyword argument 'reduction'",)),
        ]
    for name, loss in LOSSES.items():
        rows += [
            Row(f"loss {name}", "target of shape (N,) for pred (N, 1)", lambda t, l=loss: l(
                PRED[:, :1], TARGET[:, 0]), ShapeError,
                (f"{name}: pred has shape (4, 1) but target has shape (4,)", "target.reshape(pred.shape)")),
            Row(f"loss {name}", "pred and target of different lengths", lambda t, l=loss: l(
                PRED, TARGET[:3]), ShapeError, (f"{name}: pred has shape (4, 3) but target has shape (3, 3)",)),
            Row(f"loss {name}", "target: complex array", lambda t, l=loss: l(PRED, TARGET.astype(complex)),
                InputTypeError, (f"{name}: target must be real numbers, got dtype complex128",)),
            Row(f"loss {name}", "target: string array", lambda t, l=loss: l(PRED, TARGET.astype(str)),
                InputTypeError, (f"{name}: target must be real numbers, got dtype <U",)),
            Row(f"loss {name}", "target: Python list", lambda t, l=loss: l(PRED, TARGET.tolist()),
                InputTypeError, (f"{name}: target must be a numpy array, got list", "np.asarray(target)")),
            Row(f"loss {name}", "target: int array", lambda t, l=loss: l(PRED, (TARGET > 0.5).astype(int)),
                *((IntegerTargetWarning, (f"{name}: target has integer dtype int64 (cast to float32)",
                                          "fn.losses.softmax_cross_entropy", "target.astype(np.float32)"))
                  if name in ("mse", "l1", "huber") else
                  (Ok("accepted: cast to pred's dtype", lambda v: isinstance(v, float)),))),
            Row(f"loss {name}", "0-d pred and target", lambda t, l=loss: l(np.array(0.5), np.array(1.0)),
                Ok("accepted: one element", lambda v: isinstance(v, float))),
        ]
    sce = fn.losses.softmax_cross_entropy
    rows += [
        Row("loss softmax_cross_entropy", "labels out of range", lambda t: sce(PRED, np.array([0, 3, 1, 2])),
            ValueError, ("softmax_cross_entropy: labels must be in [0, 3), got values in [0, 3]",)),
        Row("loss softmax_cross_entropy", "labels of the wrong length", lambda t: sce(PRED, LABELS[:3]),
            ShapeError, ("int labels must have shape (4,) (logits without the class axis), got (3,)",)),
        Row("loss softmax_cross_entropy", "labels: bool array", lambda t: sce(PRED, LABELS > 0),
            InputTypeError, ("labels must be int class indices or float probabilities, got dtype bool",)),
        Row("loss softmax_cross_entropy", "labels: Python list", lambda t: sce(PRED, LABELS.tolist()),
            InputTypeError, ("softmax_cross_entropy: labels must be a numpy array, got list",)),
        Row("loss softmax_cross_entropy", "probabilities of the wrong shape", lambda t: sce(
            PRED, TARGET[:, :2]), ShapeError,
            ("probability labels must have the logits' shape (4, 3), got (4, 2)",)),
        Row("loss softmax_cross_entropy", "0-d logits", lambda t: sce(np.array(1.0), np.array(0)),
            ShapeError, ("logits must have a class axis, got shape ()",)),
        Row("loss huber", "delta = 0", lambda t: fn.losses.huber(PRED, TARGET, delta=0.0), ValueError,
            ("huber: delta must be > 0, got 0.0",)),
        Row("loss huber", "delta < 0", lambda t: fn.losses.huber(PRED, TARGET, delta=-1), ValueError,
            ("huber: delta must be > 0, got -1",)),
        Row("loss huber", "delta is a string", lambda t: fn.losses.huber(PRED, TARGET, delta="1"), TypeError,
            ("huber: delta must be a number > 0, got '1' (str)",)),
    ]
    return rows


OPTIMIZERS = {
    "sgd": lambda lr=0.1, **kw: fn.optim.sgd(lr, momentum=0.9, **kw),
    "rmsprop": fn.optim.rmsprop,
    "adam": fn.optim.adam,
    "adamw": fn.optim.adamw,
}
STATE_ENTRY = {"sgd": "momentum", "rmsprop": "nu", "adam": "mu", "adamw": "mu"}


def optimizer_rows() -> list[Row]:
    rows = []
    for name, make in OPTIMIZERS.items():
        opt = make(0.1)
        state = opt.init(PARAMS)
        update = opt.update
        entry = STATE_ENTRY[name]

        def row(label, call, outcome, *excerpts, pending="", name=name):
            rows.append(Row(f"{name} update", label, call, outcome, excerpts, pending))

        row("grads missing a layer", lambda t, u=update, s=state: u(
            {k: v for k, v in GRADS.items() if k != "2"}, s, PARAMS), StructureError,
            f"{name}: params and grads differ at '2': missing from the second")
        row("grads with an extra key", lambda t, u=update, s=state: u(
            {**GRADS, "0": {**GRADS["0"], "scale": np.ones(1, np.float32)}}, s, PARAMS),
            StructureError, f"{name}: params and grads differ at '0.scale': unexpected in the second")
        row("grads with a transposed leaf", lambda t, u=update, s=state: u(
            {**GRADS, "0": {**GRADS["0"], "weight": GRADS["0"]["weight"].T}}, s, PARAMS),
            StructureError, f"{name}: grads at '0.weight' has shape (2, 4), expected (4, 2)")
        row("grads: float64 for float32 params", lambda t, u=update, s=state: u(
            fn.tree.astype(GRADS, np.float64), s, PARAMS), StructureError,
            "grads at '0.weight' has dtype float64, expected float32", "fn.tree.astype(grads, ...)")
        row("grads: int arrays", lambda t, u=update, s=state: u(
            fn.tree.map(lambda g: g.astype(np.int64), GRADS), s, PARAMS), StructureError,
            "grads at '0.weight' has dtype int64, expected float32")
        row("grads: Python lists", lambda t, u=update, s=state: u(
            fn.tree.map(lambda g: g.tolist(), GRADS), s, PARAMS), StructureError,
            "grads at '0.weight' must be an array of shape (4, 2), got list")
        row("grads flattened (keys containing '.')", lambda t, u=update, s=state: u(
            fn.tree.flatten(GRADS), s, PARAMS), StructureError,
            f"{name}: params and grads differ at '0': missing from the second")
        row("grads: NaN", lambda t, u=update, s=state: u(
            fn.tree.map(lambda g: np.full_like(g, np.nan), GRADS), s, PARAMS), PROPAGATES)
        row("params from another model", lambda t, u=update, s=state: u(
            GRADS, s, OTHER.init(0)), StructureError,
            f"{name}: grads at '0.weight' has shape (4, 2), expected (4, 3)")
        row("state from another model", lambda t, u=update, m=make: u(
            GRADS, m(0.1).init(fn.serial(fn.Linear(2, 4)).init(0)), PARAMS), StructureError,
            f"{name}: params and state['{entry}'] differ at '2': missing from the second")
        row("state from another optimizer", lambda t, u=update: u(
            GRADS, fn.optim.sgd(0.1).init(PARAMS), PARAMS), StructureError,
            f"{name}: state must be a dict with keys ['step', 'lr', ", f"{name}(...).init(params)")
        row("params: int arrays", lambda t, o=opt: o.init({"w": np.ones(3, np.int64)}), TypeError,
            f"{name}: params leaf 'w' must be a floating ndarray, got int64 array",
            "fn.tree.astype(params, np.float32)")
        row("params not a dict", lambda t, o=opt: o.init([PARAMS]), TypeError,
            f"{name}: params must be a dict pytree, got list")
        row("params key containing '.'", lambda t, o=opt: o.init({"a.b": np.ones(3)}), ValueError,
            "pytree key 'a.b' is invalid", "must not contain '.'", "rename it")
        row("lr < 0", lambda t, m=make: m(-0.1), ValueError, f"{name}: lr must be >= 0, got -0.1")
        row("lr = 0", lambda t, m=make: m(0.0).update(GRADS, m(0.0).init(PARAMS), PARAMS),
            Ok("accepted: lr >= 0 (warm-up schedules start at 0); params unchanged",
               lambda r: fn.tree.equal(r[0], PARAMS)))
        row("lr is NaN", lambda t, m=make: m(float("nan")), ValueError, f"{name}: lr must be finite, got nan")
        row("lr is a string", lambda t, m=make: m("0.1"), TypeError,
            f"{name}: lr must be a number >= 0 or a schedule callable(step) -> float, got '0.1' (str)")
        row("schedule giving lr < 0", lambda t, m=make: m(lambda step: 0.1 - step).update(
            GRADS, m(lambda step: 0.1 - step).init(PARAMS), PARAMS), ValueError,
            "the lr schedule returned -0.9 at step 1; expected a finite number >= 0")
        row("unknown keyword argument to the factory", lambda t, m=make: m(0.1, beta1=0.9), TypeError,
            "got an unexpected keyword argument 'beta1'")
        row("unknown keyword argument to update", lambda t, u=update, s=state: u(
            GRADS, s, PARAMS, step=3), TypeError, "unexpected keyword argument 'step'")
    rows += [
        Row("adam update", "b1 = 1", lambda t: fn.optim.adam(0.1, b1=1.0), ValueError,
            ("adam: b1 must be in [0, 1), got 1.0",)),
        Row("sgd update", "momentum < 0", lambda t: fn.optim.sgd(0.1, momentum=-0.5), ValueError,
            ("sgd: momentum must be >= 0, got -0.5",)),
        Row("clip_by_global_norm", "max_norm < 0", lambda t: fn.optim.clip_by_global_norm(GRADS, -1.0),
            ValueError, ("clip_by_global_norm: max_norm must be >= 0, got -1.0",)),
    ]
    return rows


def batches_rows() -> list[Row]:
    b = fn.data.batches
    return [
        Row("batches", "batch_size = 0", lambda t: b(X, Y, 0, key=0), ValueError,
            ("batches: batch_size must be positive, got 0",)),
        Row("batches", "batch_size < 0", lambda t: b(X, Y, -2, key=0), ValueError,
            ("batches: batch_size must be positive, got -2",)),
        Row("batches", "batch_size is a float", lambda t: b(X, Y, 2.0, key=0), TypeError,
            ("batches: batch_size must be an int, got 2.0 (float)",)),
        Row("batches", "x and y of different lengths", lambda t: b(X, Y[:3], 2, key=0), ValueError,
            ("batches: x and y must hold the same number of samples", "len(x)=5 and len(y)=3")),
        Row("batches", "empty x", lambda t: b(X[:0], Y[:0], 2, key=0), ValueError,
            ("x is empty: it has 0 samples (shape (0, 2))",)),
        Row("batches", "0-d x", lambda t: b(np.array(1.0), None, 2, key=0), ValueError,
            ("x must have a first (sample) axis, got a scalar",)),
        Row("batches", "shuffle without a key", lambda t: b(X, Y, 2), ValueError,
            ("shuffle=True needs key=", "fn.random.fold_in(key, epoch)")),
        Row("batches", "shuffle is not a bool", lambda t: b(X, Y, 2, key=0, shuffle="no"), TypeError,
            ("batches: shuffle must be True or False, got 'no'",)),
        Row("batches", "drop_last leaves no batch", lambda t: b(X, Y, 8, key=0, drop_last=True),
            ValueError, ("drop_last=True with 5 samples and batch_size=8 leaves no batch",)),
        Row("batches", "unknown keyword argument", lambda t: b(X, Y, 2, key=0, shufle=False), TypeError,
            ("batches() got an unexpected keyword argument 'shufle'",)),
        Row("batches", "Python lists", lambda t: list(b(X.tolist(), Y.tolist(), 2, key=0)),
            Ok("accepted: converted with np.asarray", lambda r: len(r) == 3)),
        Row("batches", "NaN rows", lambda t: list(b(with_row(X, 1, np.nan), Y, 2, key=0)),
            Ok("passed through (fit checks finiteness)", lambda r: len(r) == 3)),
        Row("batches", "object/string arrays", lambda t: list(b(X.astype(object), Y.astype(str), 2, key=0)),
            Ok("passed through, dtype kept (the model rejects them)", lambda r: r[0][0].dtype == object)),
    ]


class CountingAdam:
    """adam(0.01), counting its updates (an optimizer is anything with init and update)."""

    def __init__(self):
        self.inner, self.updates = fn.optim.adam(0.01), 0

    def init(self, params):
        return self.inner.init(params)

    def update(self, grads, state, params):
        self.updates += 1
        return self.inner.update(grads, state, params)


def bitwise_equal(a, b) -> bool:
    """Same key paths and every leaf with the same dtype, shape and bytes."""
    fa, fb = fn.tree.flatten(a), fn.tree.flatten(b)
    return list(fa) == list(fb) and all(
        isinstance(fa[k], dict) and fa[k] == fb[k] or (
            np.asarray(fa[k]).dtype == np.asarray(fb[k]).dtype
            and np.shape(fa[k]) == np.shape(fb[k])
            and np.asarray(fa[k]).tobytes() == np.asarray(fb[k]).tobytes())
        for k in fa)


def file_in(folder, name, data=b""):
    (folder / name).write_bytes(data)
    return folder / name


def fit(t=None, *, model=MODEL, loss=fn.losses.mse, opt=None, params=PARAMS, train=(X, Y), **kwargs):
    options = {"epochs": 2, "batch_size": 2, "key": 0, "progress": "silent"}
    options.update(kwargs)
    return fn.fit(model, loss, opt or fn.optim.adam(0.01), params, train, **options)


def fit_rows() -> list[Row]:
    def row(label, outcome, *excerpts, pending="", **kwargs):
        return Row("fit", label, lambda t: fit(**kwargs), outcome, excerpts, pending)

    return [
        row("x: wrong feature size", ShapeError, LINEAR0, "expected (..., 2), got (2, 3)",
            train=(np.ones((5, 3), np.float32), Y)),
        row("val x: wrong feature size (found before training)", ShapeError, LINEAR0,
            "expected (..., 2), got (1, 3)", val=(np.ones((5, 3), np.float32), Y)),
        row("y of shape (N,) for pred (N, 1)", ShapeError,
            "mse: pred has shape (2, 1) but target has shape (2,)", train=(X, Y[:, 0])),
        row("val y of the wrong shape (found before training)", ShapeError,
            "mse: pred has shape (1, 1) but target has shape (1, 2)", val=(X, np.ones((5, 2)))),
        row("x and y of different lengths", ValueError, "fit: train x and y have different lengths: 5 vs 3",
            train=(X, Y[:3])),
        row("val x and y of different lengths", ValueError,
            "fit: val x and y have different lengths: 5 vs 4", val=(X, Y[:4])),
        row("x: 0-d array", ValueError, "fit: train x must have a sample axis (first dimension), "
            "got a 0-d array", train=(np.array(1.0), Y)),
        row("empty data", ValueError, "fit: train data is empty", train=(X[:0], Y[:0])),
        row("x: bool array", InputTypeError, LINEAR0, "got dtype bool", train=(X > 0, Y)),
        row("x: complex array", InputTypeError, LINEAR0, "got dtype complex128",
            train=(X.astype(complex), Y)),
        row("x: object array", InputTypeError, LINEAR0, "got dtype object", train=(X.astype(object), Y)),
        row("x: string array", InputTypeError, LINEAR0, "got dtype <U", train=(X.astype(str), Y)),
        row("y: string array", InputTypeError, "mse: target must be real numbers, got dtype <U",
            train=(X, Y.astype(str))),
        row("x: Python list", TypeError, "fit: train x must be a numpy array, got list",
            train=(X.tolist(), Y)),
        row("train is not a pair", TypeError, "fit: train must be a pair (x, y) of arrays, got tuple",
            train=(X, Y, Y)),
        row("x: NaN rows", NonFiniteDataError, "fit: train x has NaN or Inf in 2 rows [1, 3]",
            "x[1] = [nan, ", "np.isfinite(x)", train=(with_row(with_row(X, 1, np.nan), 3, np.inf), Y)),
        row("y: Inf rows", NonFiniteDataError, "fit: train y has NaN or Inf in 1 row [4]",
            train=(X, with_row(Y, 4, np.inf))),
        row("val x: NaN rows", NonFiniteDataError, "fit: val x has NaN or Inf in 1 row [0]",
            val=(with_row(X, 0, np.nan), Y)),
        row("val y: NaN rows", NonFiniteDataError, "fit: val y has NaN or Inf in 1 row [2]",
            val=(X, with_row(Y, 2, np.nan))),
        row("params from another model", StructureError,
            "Linear(2 -> 4): expected weight (4, 2) and bias (4,), got weight (4, 3)",
            params=OTHER.init(0)),
        row("opt_state from another optimizer", StructureError,
            "adam: state must be a dict with keys ['step', 'lr', 'mu', 'nu']",
            opt_state=fn.optim.sgd(0.1).init(PARAMS)),
        row("opt_state from another model", StructureError,
            "adam: params and state['mu'] differ at '2': missing from the second",
            opt_state=fn.optim.adam(0.1).init(fn.serial(fn.Linear(2, 4)).init(0))),
        row("batch_size = 0", ValueError, "fit: batch_size must be a positive int, got 0", batch_size=0),
        row("batch_size < 0", ValueError, "fit: batch_size must be a positive int, got -4", batch_size=-4),
        row("batch_size is a float", ValueError, "fit: batch_size must be a positive int, got 2.0",
            batch_size=2.0),
        row("epochs = 0", ValueError, "fit: epochs must be a positive int, got 0", epochs=0),
        row("epochs < 0", ValueError, "fit: epochs must be a positive int, got -1", epochs=-1),
        row("keep_best = 0", ValueError, "fit: keep_best must be a positive int, got 0", keep_best=0),
        row("patience = 0", ValueError, "fit: patience must be a positive int, got 0", patience=0),
        row("drop_last leaves no batch", ValueError,
            "fit: drop_last=True with 5 samples and batch_size=8 leaves no batch", batch_size=8,
            drop_last=True),
        Row("fit", "lr < 0", lambda t: fit(opt=fn.optim.adam(-1e-3)), ValueError,
            ("adam: lr must be >= 0, got -0.001",)),
        row("loss is a plain function", TypeError, "expected a funcnn loss", "fn.losses.make_loss",
            loss=lambda pred, y: 0.0),
        row("key is None", TypeError, "expected a key from fn.random.key(seed)", key=None),
        row("unknown keyword argument", TypeError, "fit() got an unexpected keyword argument 'epoch'",
            epoch=3),
        row("resume without checkpoint_dir", ValueError, "fit: resume=True needs checkpoint_dir",
            resume=True),
        Row("fit", "checkpoint_dir is a file", lambda t: fit(checkpoint_dir=file_in(t, "f")),
            CheckpointError, ("fit: checkpoint_dir", "f' exists and is not a folder")),
        Row("fit", "checkpoint_dir is not a path", lambda t: fit(checkpoint_dir=3), TypeError,
            ("fit: checkpoint_dir must be a path (str or os.PathLike), got int",)),
        Row("fit", "loss diverges to Inf/NaN (finite data)", lambda t: fit(
            opt=fn.optim.sgd(1e30)), NonFiniteLossError, ("training loss is ", "at epoch 1, batch 2 of 3",
                                                         "try a smaller learning rate"), ieee=True),
    ]


TREE = {"0": {"weight": np.arange(6.0).reshape(3, 2), "bias": np.zeros(3)}, "1": {}}


def save_rows() -> list[Row]:
    def save(tree, **kwargs):
        return lambda t: fn.save(t / "c", tree, **kwargs)

    def round_trip(tree):
        def call(t):
            fn.save(t / "c", tree)
            return fn.load(t / "c")
        return Row("save", "", call, Ok("accepted: loads back bitwise", lambda r: bitwise_equal(r, tree)))

    return [
        Row("save", "key containing '.'", save({"0.weight": np.ones(2)}), ValueError,
            ("pytree key '0.weight' is invalid", "must not contain '.'", "rename it, e.g. with '_'")),
        Row("save", "nested key containing '.'", save({"a": {"b.c": np.ones(2)}}), ValueError,
            ("pytree key 'b.c' under 'a' is invalid",)),
        Row("save", "empty key", save({"": np.ones(2)}), ValueError, ("pytree key '' is invalid",)),
        Row("save", "int key", save({1: np.ones(2)}), TypeError, ("pytree keys must be str, got 1 (int)",)),
        Row("save", "reserved top-level key '__x'", save({"__x": np.ones(2)}), ValueError,
            ("save: top-level key '__x' is reserved", "rename it")),
        Row("save", "leaf: Python list", save({"a": {"w": [1.0, 2.0]}}), TypeError,
            ("save: leaf 'a.w' is a list", "convert it with np.asarray")),
        Row("save", "leaf: object array", save({"a": np.ones(2, object)}), TypeError,
            ("save: leaf 'a' has dtype object", "never use")),
        Row("save", "leaf: Python str", save({"a": "hello"}), TypeError, ("save: leaf 'a' is a str",)),
        Row("save", "leaf: None", save({"a": None}), TypeError, ("save: leaf 'a' is a NoneType",)),
        Row("save", "tree is not a dict", save([np.ones(2)]), TypeError,
            ("save: expected a dict pytree, got list",)),
        Row("save", "path is None", lambda t: fn.save(None, TREE), TypeError,
            ("save: path must be a str or os.PathLike, got NoneType",)),
        Row("save", "folder does not exist", lambda t: fn.save(t / "no" / "c", TREE), CheckpointError,
            ("save: cannot create a temporary file next to", "No such file or directory")),
        Row("save", "path is a directory", lambda t: fn.save(t, TREE), CheckpointError,
            ("save: could not write checkpoint", "Is a directory", "any previous file at that path is unchanged")),
        Row("save", "unknown keyword argument", save(TREE, compress=True), TypeError,
            ("save() got an unexpected keyword argument 'compress'",)),
        round_trip({"w": np.array([np.nan, np.inf, -0.0])})._replace(bad_input="NaN/Inf leaves"),
        round_trip({"a": np.array(3), "b": np.zeros((0, 2))})._replace(bad_input="0-d and empty leaves"),
        round_trip({"s": np.array(["ab", "c"]), "z": np.ones(2, complex), "b": np.ones(2, bool)})
        ._replace(bad_input="string, complex and bool arrays"),
        Row("tree.equal", "string leaves (e.g. a loaded checkpoint)", lambda t: fn.tree.equal(
            {"s": np.array(["a"])}, {"s": np.array(["a"])}), Ok("accepted: True", lambda r: r is True)),
    ]


def load_rows() -> list[Row]:
    def saved(t, tree=TREE):
        fn.save(t / "c", tree)
        return t / "c"

    return [
        Row("load", "missing file", lambda t: fn.load(t / "nope"), CheckpointError,
            ("load: cannot open checkpoint", "nope")),
        Row("load", "a directory", lambda t: fn.load(t), CheckpointError, ("load: cannot open checkpoint",)),
        Row("load", "not a zip (text)", lambda t: fn.load(file_in(t, "c", b"hello")),
            CheckpointError, ("is not a checkpoint: not a valid .npz (zip) file",)),
        Row("load", "a pickle file", lambda t: fn.load(file_in(t, "c", pickle.dumps({"x": 1}))), CheckpointError,
            ("is not a checkpoint: not a valid .npz (zip) file",)),
        Row("load", "truncated file", lambda t: fn.load(file_in(t, "d", saved(t).read_bytes()[:-30])),
            CheckpointError, ("is not a checkpoint",)),
        Row("load", "like= params from another model", lambda t: fn.load(saved(t), like={
            "0": {"weight": np.ones((3, 3)), "bias": np.zeros(3)}, "1": {}}), StructureError,
            ("does not match like=", "'0.weight': expected shape (3, 3), the file has (3, 2)")),
        Row("load", "like= with a different dtype", lambda t: fn.load(saved(t), like=fn.tree.astype(
            TREE, np.float32)), StructureError,
            ("2 differences", "'0.weight': expected dtype float32, the file has float64")),
        Row("load", "like= is not a dict", lambda t: fn.load(saved(t), like=[1]), TypeError,
            ("like= must be a dict pytree, got list",)),
        Row("load", "like= key containing '.'", lambda t: fn.load(saved(t), like={"a.b": np.ones(1)}),
            ValueError, ("pytree key 'a.b' is invalid",)),
        Row("load", "path is None", lambda t: fn.load(None), TypeError,
            ("load: path must be a str or os.PathLike, got NoneType",)),
        Row("load", "unknown keyword argument", lambda t: fn.load(saved(t), allow_pickle=True), TypeError,
            ("load() got an unexpected keyword argument 'allow_pickle'",)),
    ]


def debug_rows() -> list[Row]:
    debug_model = fn.debug.check_finite(MODEL)

    def strict(f):
        def call(t):
            with np.errstate(all="raise"):
                return f()
        return call

    return [
        Row("debug.check_finite", "NaN input rows", lambda t: debug_model.apply(
            PARAMS, with_row(with_row(X, 1, np.nan), 3, np.nan)), NonFiniteError,
            ("serial: the input x has non-finite values (4 NaN, 0 Inf of 10)", "batch rows affected: [1, 3]")),
        Row("debug.check_finite", "Inf input, numpy errors raising", strict(
            lambda: debug_model.vjp(PARAMS, with_row(X, 4, np.inf))), NonFiniteError,
            ("serial: the input x has non-finite values", "batch rows affected: [4]")),
        Row("debug.check_finite", "not a Layer", lambda t: fn.debug.check_finite(MODEL.apply), TypeError,
            ("check_finite: expected a funcnn Layer (a model), got function",)),
    ]


def train_step_rows() -> list[Row]:
    adam = fn.optim.adam(0.01)
    state = adam.init(PARAMS)

    def donated_step():  # a step that owns its buffers: params and state are one flat buffer each
        step = fn.train_step(MODEL, fn.losses.mse, adam, donate=True)
        return step, *step(PARAMS, state, X, Y)[1:]

    def read_only_donation(t):
        step, params, opt_state = donated_step()
        for leaf in fn.tree.leaves(params):
            leaf.base.setflags(write=False)
        kept = fn.tree.map(np.copy, params)
        step(params, opt_state, X, Y)
        return fn.tree.equal(params, kept)

    def step_with(**changes):
        args = {"model": MODEL, "loss": fn.losses.mse, "optimizer": adam, **changes}
        donate = args.pop("donate", False)
        return fn.train_step(args["model"], args["loss"], args["optimizer"], donate=donate)

    return [
        Row("train_step", "model: a plain function", lambda t: step_with(model=MODEL.apply), TypeError,
            ("train_step: model must be a funcnn Layer, got function",)),
        Row("train_step", "optimizer: an (init, update) tuple", lambda t: step_with(
            optimizer=(adam.init, adam.update)), TypeError,
            ("train_step: optimizer must be an fn.optim.Optimizer", "got tuple")),
        Row("train_step", "donate: the string 'yes'", lambda t: step_with(donate="yes"), TypeError,
            ("train_step: donate must be a bool, got 'yes'",)),
        Row("train_step", "loss: a plain function", lambda t: step_with(loss=lambda p, y: 0.0), TypeError,
            ("a plain function has no gradient rule", "fn.losses.make_loss")),
        Row("train_step", "x of the wrong width", lambda t: step_with()(PARAMS, state, X[:, :1], Y),
            ShapeError, ("serial[0] Linear(2 -> 4): expected (..., 2), got (5, 1)",)),
        Row("train_step", "state from another optimizer", lambda t: step_with()(
            PARAMS, fn.optim.sgd(0.1).init(PARAMS), X, Y), StructureError,
            ("adam: state must be a dict with keys ['step', 'lr', ", "adam(...).init(params)")),
        Row("train_step", "params from another model", lambda t: step_with()(OTHER.init(0), state, X, Y),
            ParamsError, ("serial[0] Linear(2 -> 4): expected weight (4, 2) and bias (4,)",
                          "got weight (4, 3)", "made by this model's init?")),
        Row("train_step", "donate=True with read-only params buffers", read_only_donation,
            Ok("accepted: a fresh result, the read-only params untouched", lambda r: r is True)),
    ]


# A model with state and randomness (float32): BatchNorm at 1, Dropout at 3.
STATEFUL = fn.serial(fn.layers.Linear(2, 4), fn.layers.BatchNorm(4), fn.layers.ReLU(),
                     fn.layers.Dropout(0.5), fn.layers.Linear(4, 1))
S_PARAMS, S_STATE = STATEFUL.init(0), STATEFUL.init_state()
S_VG = fn.value_and_grad(STATEFUL, fn.losses.mse)
BN1 = "serial[1] BatchNorm(4)"
DROP3 = "serial[3] Dropout(rate=0.5)"


def state_with(path, value):
    flat = dict(fn.tree.flatten(S_STATE))
    flat[path] = value
    return fn.tree.unflatten(flat)


def state_rows() -> list[Row]:
    """Model state (BatchNorm statistics), keys (Dropout) and train/eval modes."""
    key = fn.random.key(0)
    bn = fn.layers.BatchNorm(3)
    return [
        Row("apply", "model with state, no state=", lambda t: STATEFUL.apply(S_PARAMS, X), StateError,
            (BN1, "keeps state", "pass state=model.init_state()")),
        Row("vjp", "model with state, no state=", lambda t: STATEFUL.vjp(S_PARAMS, X, key=key),
            StateError, (BN1, "pass state=model.init_state()")),
        Row("value_and_grad", "model with state, no state=", lambda t: S_VG(S_PARAMS, X, Y, key=key),
            StateError, (BN1, "pass state=model.init_state()")),
        Row("apply", "state= {} for a model with state", lambda t: STATEFUL.apply(S_PARAMS, X, state={}),
            StateError, (BN1, "state must have 'running_mean', got []", "init_state()")),
        Row("apply", "state of another model (unexpected keys)",
            lambda t: STATEFUL.apply(S_PARAMS, X, state={"7": {}}), StateError,
            ("serial: unexpected state keys ['7']", "children with state: ['1']")),
        Row("apply", "state leaf of the wrong shape",
            lambda t: STATEFUL.apply(S_PARAMS, X, state=state_with("1.running_var", np.ones(3, np.float32))),
            StateError, (BN1, "state['running_var'] must be an array of shape (4,)")),
        Row("apply", "state as a list", lambda t: STATEFUL.apply(S_PARAMS, X, state=[]), StateError,
            ("serial: state must be a dict, got list", "model.init_state()")),
        Row("vjp", "Dropout training without key=", lambda t: STATEFUL.vjp(S_PARAMS, X, state=S_STATE),
            RandomKeyError, (DROP3, "training mode needs a random key", "key=fn.random.key(seed)")),
        Row("value_and_grad", "Dropout training without key=",
            lambda t: S_VG(S_PARAMS, X, Y, state=S_STATE), RandomKeyError, (DROP3, "random key")),
        Row("apply", "evaluation (train=False) without key=",
            lambda t: STATEFUL.apply(S_PARAMS, X, state=S_STATE), Ok("accepted: no randomness in evaluation",
                                                                    lambda r: r[0].shape == (5, 1))),
        Row("vjp", "key= not a key (a string)", lambda t: STATEFUL.vjp(S_PARAMS, X, key="k", state=S_STATE),
            TypeError, ("expected a key from fn.random.key(seed)",)),
        Row("vjp", "BatchNorm training on one sample per channel",
            lambda t: STATEFUL.vjp(S_PARAMS, X[:1], key=key, state=S_STATE), ShapeError,
            (BN1, "expected more than 1 value per channel when training, got input of shape (1, 4)")),
        Row("apply", "BatchNorm input with the wrong channel count",
            lambda t: bn.apply(bn.init(0), np.ones((4, 5), np.float32), state=bn.init_state()), ShapeError,
            ("BatchNorm(3): expected (N, 3), (N, 3, L) or (N, 3, H, W) with the channels on axis 1, got (4, 5)",)),
        Row("apply", "LayerNorm input of the wrong trailing shape",
            lambda t: fn.layers.LayerNorm(4).apply(fn.layers.LayerNorm(4).init(0), np.ones((2, 3), np.float32)),
            ShapeError, ("LayerNorm(4): expected (..., 4), got (2, 3)",)),
        Row("layers", "Dropout(rate=1.0)", lambda t: fn.layers.Dropout(1.0), ValueError,
            ("Dropout: rate (the probability of zeroing) must be a number in [0, 1), got 1.0",)),
        Row("layers", "BatchNorm(momentum=2)", lambda t: fn.layers.BatchNorm(3, momentum=2), ValueError,
            ("BatchNorm: momentum must be a number in [0, 1] or None, got 2",)),
        Row("layers", "LayerNorm(normalized_shape=[4])", lambda t: fn.layers.LayerNorm([4]), TypeError,
            ("LayerNorm: normalized_shape must be an int or a non-empty tuple of ints",)),
        Row("apply", "Conv2d: input with the wrong channel count",
            lambda t: fn.layers.Conv2d(3, 4, 3).apply(fn.layers.Conv2d(3, 4, 3).init(0), np.ones((2, 2, 8, 8), np.float32)),
            ShapeError, ("Conv2d(3 -> 4, 3x3): expected input of shape (N, 3, H, W), got (2, 2, 8, 8)",)),
        Row("apply", "Conv2d: input smaller than the kernel",
            lambda t: fn.layers.Conv2d(1, 4, 5).apply(fn.layers.Conv2d(1, 4, 5).init(0), np.ones((2, 1, 3, 3), np.float32)),
            ShapeError, ("Conv2d(1 -> 4, 5x5)", "smaller than the dilated kernel")),
        Row("apply", "MaxPool2d: a 3-d input", lambda t: fn.layers.MaxPool2d(2).apply({}, np.ones((2, 3, 8), np.float32)),
            ShapeError, ("MaxPool2d(2x2): expected (N, C, H, W), got (2, 3, 8)",)),
        Row("apply", "a tuple of branches fed to Linear",
            lambda t: fn.serial(fn.layers.FanOut(2), fn.layers.Linear(2, 1)).apply(
                {"1": fn.layers.Linear(2, 1).init(0)}, X), InputTypeError,
            ("serial[1] Linear(2 -> 1): expected one array, got a tuple of 2", "FanInSum() or FanInConcat()")),
        Row("apply", "FanInSum: branches of different shapes",
            lambda t: fn.layers.FanInSum().apply({}, (np.ones((2, 3)), np.ones((2, 4)))), ShapeError,
            ("FanInSum(): branch 0 has shape (2, 3) but branch 1 has shape (2, 4)",)),
        Row("apply", "Embedding: an index out of range",
            lambda t: fn.layers.Embedding(4, 2).apply(fn.layers.Embedding(4, 2).init(0), np.array([[0, 4]])),
            InputValueError, ("Embedding(4, 2): index 4 at position (0, 1) is out of range for 4 embeddings",)),
        Row("apply", "Embedding: float indices",
            lambda t: fn.layers.Embedding(4, 2).apply(fn.layers.Embedding(4, 2).init(0), np.array([0.0])),
            InputTypeError, ("Embedding(4, 2): expected an integer array of indices, got dtype float64",
                             "x.astype(np.int64)")),
        Row("layers", "Conv2d(3, 4, 3, groups=2)", lambda t: fn.layers.Conv2d(3, 4, 3, groups=2), ValueError,
            ("Conv2d: in_channels (3) and out_channels (4) must both be divisible by groups (2)",)),
        Row("fit", "callbacks= holding a non-function", lambda t: fit(callbacks=[3]), TypeError,
            ("fit: callbacks[0] must be a function of an EpochRecord",)),
        Row("fit", "lr_on_plateau= a number", lambda t: fit(lr_on_plateau=0.5), TypeError,
            ("fit: lr_on_plateau must be an fn.callbacks.ReduceLROnPlateau(...) or None",)),
        Row("fit", "ReduceLROnPlateau(factor=2)",
            lambda t: fit(lr_on_plateau=fn.callbacks.ReduceLROnPlateau(factor=2.0)), ValueError,
            ("ReduceLROnPlateau: factor must be a number in [0.0, 1.0)",)),
        Row("fit", "eval_params='average'", lambda t: fit(eval_params="average"), ValueError,
            ("fit: eval_params must be 'params' or 'ema'",)),
        Row("fit", "eval_params='ema' without an ema optimizer", lambda t: fit(eval_params="ema"),
            StructureError, ("ema",)),
        Row("fit", "a gradient transform as the optimizer", lambda t: fit(opt=fn.optim.clip_grad_norm(1.0)),
            TypeError, ("fit: optimizer is a gradient transform", "fn.optim.chain(transform, fn.optim.adam(1e-3))")),
        Row("fit", "x and y as separate arguments", lambda t: fn.fit(MODEL, fn.losses.mse, fn.optim.adam(0.1), PARAMS,
                                                                     X, Y, epochs=1, batch_size=2, key=0),
            TypeError, ("fit: got 1 positional argument(s) after train", "(x, y)")),
        Row("apply", "calling the model like a function", lambda t: MODEL(PARAMS, X), TypeError,
            ("serial is a Layer, not a function: call model.apply(params, x)",)),
        Row("fit", "state of another model", lambda t: fit(model=STATEFUL, params=S_PARAMS, state={"9": {}}),
            StateError, ("serial: unexpected state keys ['9']",)),
        Row("train_step", "model with state, no state=",
            lambda t: fn.train_step(STATEFUL, fn.losses.mse, fn.optim.adam(0.1))(
                S_PARAMS, fn.optim.adam(0.1).init(S_PARAMS), X, Y, key=key), StateError, (BN1, "keeps state")),
        Row("interop", "from_torch_state_dict: state_like= without like=",
            lambda t: fn.interop.from_torch_state_dict({}, state_like=S_STATE), TypeError,
            ("state_like= needs like=",)),
        Row("interop", "from_torch_state_dict: buffers missing",
            lambda t: fn.interop.from_torch_state_dict(fn.interop.to_torch_state_dict(S_PARAMS), like=S_PARAMS,
                                                       state_like=S_STATE), StructureError,
            ("missing '1.running_mean'", "state_like=model.init_state()")),
        Row("interop", "from_torch_state_dict: float64 net for a float32 model",
            lambda t: fn.interop.from_torch_state_dict(fn.tree.flatten(fn.tree.astype(PARAMS, np.float64)),
                                                       like=PARAMS), StructureError,
            ("'0.weight': expected dtype float32, it has float64", "net.double()")),
        Row("check_grads", "key= for a two-argument user layer",
            lambda t: fn.testing.check_grads(fn.Layer(lambda k: {}, lambda p, x: x, lambda p, x: (x, None)), {},
                                             np.ones(3), key=key), TypeError,
            ("takes no key= or state=", "context=False")),
    ]


CATALOGUE: list[Row] = [
    *model_rows(), *loss_rows(), *optimizer_rows(), *train_step_rows(), *batches_rows(),
    *fit_rows(), *save_rows(), *load_rows(), *debug_rows(), *state_rows(),
]


# --- the test ----------------------------------------------------------------------


def row_id(row: Row) -> str:
    return re.sub(r"[^A-Za-z0-9_.<>=-]+", "_", f"{row.function}-{row.bad_input}").strip("_")


def as_param(row: Row):
    marks = [pytest.mark.xfail(strict=True, reason=row.pending)] if row.pending else []
    return pytest.param(row, id=row_id(row), marks=marks)


def assert_raised_by_funcnn(excinfo) -> None:
    """The error is funcnn's: a funcnn type, or raised in funcnn's code (or by Python
    binding an unknown keyword at the call), never from inside numpy or the stdlib."""
    error = excinfo.value
    innermost = pathlib.Path(excinfo.traceback[-1].path).resolve()
    if innermost == pathlib.Path(__file__).resolve():  # Python's own argument binding
        assert isinstance(error, TypeError) and "unexpected keyword argument" in str(error), (
            f"raised in the test itself: {error!r}")
        return
    assert FUNCNN_DIR in innermost.parents, f"raised outside funcnn, in {innermost}: {error!r}"
    assert isinstance(error, (FuncnnError, TypeError, ValueError, OSError, IntegerTargetWarning)), repr(error)


@pytest.mark.parametrize("row", [as_param(row) for row in CATALOGUE])
def test_catalogue(row: Row, tmp_path):
    quiet = row.ieee or (isinstance(row.outcome, Ok) and row.outcome.ieee)
    with np.errstate(all="ignore") if quiet else np.errstate():
        if isinstance(row.outcome, Ok):
            result = row.call(tmp_path)
            assert row.outcome.check(result), f"{row.outcome.label}: got {result!r}"
            return
        with pytest.raises(row.outcome) as excinfo:
            row.call(tmp_path)
    message = str(excinfo.value)
    for excerpt in row.excerpts:
        assert excerpt in message, f"{excerpt!r} not in {message!r}"
    assert_raised_by_funcnn(excinfo)


def test_catalogue_covers_every_function_and_input_kind():
    functions = {row.function.split()[0] for row in CATALOGUE}
    assert {"apply", "vjp", "loss", "value_and_grad", "batches", "fit", "save", "load"} <= functions
    assert {f"{name} update" for name in OPTIMIZERS} <= {row.function for row in CATALOGUE}
    text = " ".join(row.bad_input for row in CATALOGUE).lower()
    for kind in ["0-d", "wrong feature size", "different lengths", "int array", "bool array",
                 "complex array", "object array", "string array", "python list", "empty",
                 "nan", "inf", "grads missing", "another model", "'.'", "batch_size = 0",
                 "lr < 0", "epochs = 0", "unknown keyword argument"]:
        assert kind in text, kind


def test_val_errors_come_before_any_training():
    opt = CountingAdam()
    with pytest.raises(ShapeError):
        fit(opt=opt, val=(np.ones((5, 3), np.float32), Y))
    with pytest.raises(NonFiniteDataError):
        fit(opt=opt, val=(X, with_row(Y, 1, np.nan)))
    assert opt.updates == 0


def test_fit_data_check_does_not_touch_finite_data_or_results():
    frozen = [a.copy() for a in (X, Y)]
    for a in frozen:
        a.setflags(write=False)
    first, second = fit(train=tuple(frozen)), fit(train=(X, Y))
    assert fn.tree.equal(first.params, second.params)


def test_nan_loss_names_epoch_and_batch_and_keeps_the_last_finite_state():
    """Finite data can still diverge; fit stops at the first non-finite loss."""
    with np.errstate(all="ignore"), pytest.raises(NonFiniteLossError) as info:
        fit(opt=fn.optim.sgd(1e30), epochs=3)
    assert re.search(r"training loss is (nan|inf) at epoch 1, batch 2 of 3", str(info.value))
    result = info.value.result
    assert result.stop_reason == "non_finite_loss"
    assert int(result.opt_state["step"]) == 1  # the params before the bad batch
    assert all(np.isfinite(leaf).all() for leaf in fn.tree.leaves(result.params))


# --- the docs table ----------------------------------------------------------------


def outcome_text(row: Row) -> str:
    if isinstance(row.outcome, Ok):
        return row.outcome.label
    text = row.outcome.__name__
    return f"{text} (pending: {row.pending})" if row.pending else text


def markdown_table() -> str:
    """The catalogue as a markdown table, rows grouped by function (in order of appearance)."""
    order = list(dict.fromkeys(row.function for row in CATALOGUE))
    lines = ["| Function | Bad input | Outcome | Message excerpt |", "|---|---|---|---|"]
    for row in sorted(CATALOGUE, key=lambda row: order.index(row.function)):
        excerpt = " … ".join(f"`{e}`" for e in row.excerpts)
        cells = [row.function, row.bad_input, outcome_text(row), excerpt]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


START, END = "<!-- catalogue:start -->", "<!-- catalogue:end -->"


def test_docs_table_is_current():
    text = DOCS.read_text(encoding="utf-8")
    table = text[text.index(START) + len(START): text.index(END)].strip()
    assert table == markdown_table(), (
        "docs/reliability.md is out of date: regenerate the table with "
        "`python tests/test_reliability_catalogue.py`")


if __name__ == "__main__":
    sys.stdout.write(markdown_table() + "\n")
