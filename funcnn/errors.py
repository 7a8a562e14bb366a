"""The exceptions funcnn raises, in one place so users can catch them by type.

Every message follows one template: what is wrong, where (a layer's index path or a
dotted key), expected vs got, and how to fix it where that helps.
"""

from __future__ import annotations


class FuncnnError(Exception):
    """Base class of every error funcnn raises on purpose."""


class LayerError(FuncnnError):
    """A layer or loss got input it cannot use. Base of ShapeError and InputTypeError.

    ``where`` is the layer's index path from the outermost model, e.g.
    ``("serial[2]", "residual", "serial[0]")``; ``layer`` is the failing layer's name.
    Combinators re-raise a child's error with their own step prepended, so the final
    message reads ``serial[2] Linear(16 -> 1): expected (..., 16), got (64, 8)``.
    """

    def __init__(self, detail: str, *, layer: str = "", where: tuple[str, ...] = ()):
        self.detail = detail
        self.layer = layer
        self.where = tuple(where)
        super().__init__(self._message())

    def _message(self) -> str:
        path = ".".join(self.where)
        head = " ".join(part for part in (path, self.layer) if part)
        return f"{head}: {self.detail}" if head else self.detail

    def __reduce__(self):
        return _rebuild_layer_error, (type(self), self.detail, self.layer, self.where)

    def within(self, step: str) -> LayerError:
        """The same error, seen from one level further out (``step`` prepended)."""
        return type(self)(self.detail, layer=self.layer, where=(step, *self.where))


def _rebuild_layer_error(cls, detail, layer, where):
    return cls(detail, layer=layer, where=where)


class ShapeError(LayerError, ValueError):
    """An array has the wrong shape (or ndim) for the layer or loss it was given to."""


class InputTypeError(LayerError, TypeError):
    """An input is of the wrong kind: a list, an int/bool/complex/object array, ..."""


class StateError(LayerError, ValueError):
    """A layer that keeps state (BatchNorm's running statistics) got no ``state=``, or a
    state that is not its own."""


class RandomKeyError(LayerError, TypeError):
    """A layer that is random in training (Dropout) was trained without ``key=``."""

class InputValueError(LayerError, ValueError):
    """An input holds values the layer cannot take: an embedding index out of range."""


class StructureError(FuncnnError, ValueError):
    """Two pytrees that must match (params and grads, params and ``like=``) do not."""


class CheckpointError(FuncnnError, OSError):
    """A checkpoint could not be written, or a file is not a valid funcnn checkpoint.

    Raised for missing, truncated, corrupt or pickled files; funcnn never unpickles.
    """


class DatasetError(FuncnnError, OSError):
    """A dataset file is missing, unreadable, or not the data it should be."""


class DownloadError(DatasetError):
    """A dataset could not be downloaded (offline, HTTP error, bad content)."""


class NonFiniteLossError(FuncnnError, FloatingPointError):
    """Training hit a NaN or Inf loss. ``result`` holds what was trained until then."""

    result = None


class NonFiniteError(FuncnnError, FloatingPointError):
    """``fn.debug.check_finite`` found NaN or Inf: ``where`` (layer path), ``direction``
    (``"input"``, ``"forward"`` or ``"backward"``) and ``rows`` (batch rows affected)."""

    def __init__(self, message: str, *, where: str = "", direction: str = "", rows=()):
        super().__init__(message)
        self.where, self.direction, self.rows = where, direction, list(rows)


class NonFiniteDataError(FuncnnError, ValueError):
    """Training or validation data holds NaN or Inf; ``fit`` refuses it up front.

    ``name`` is the array (e.g. ``"train x"``) and ``rows`` lists the first rows
    (along the sample axis) that hold a non-finite value.
    """

    def __init__(self, message: str, *, name: str = "", rows=()):
        super().__init__(message)
        self.name, self.rows = name, list(rows)


class ParamsError(LayerError, StructureError):
    """A layer got params that are not its own (missing/unexpected keys, wrong shapes or
    dtypes). A :class:`LayerError`, so combinators prepend the index path, and a
    :class:`StructureError`, so code catching that keeps working."""


class IntegerTargetWarning(UserWarning):
    """A regression loss (``mse``, ``l1``, ``huber``) got integer targets: usually class
    labels meant for ``softmax_cross_entropy``. Cast the targets to float to silence it."""

class MPIUnavailableError(FuncnnError, ImportError):
    """``comm=`` was given but mpi4py is not installed (see :mod:`funcnn.distributed`)."""


class DistributedError(FuncnnError, RuntimeError):
    """The ranks of an MPI run disagree where they must not, or rank 0 failed in
    :func:`funcnn.distributed.on_root`. Raised on every rank alike, so none is left
    waiting in a collective. ``rank`` is the first rank concerned and ``path`` the key
    path of the first difference (``""`` when there is none)."""

    def __init__(self, message: str, *, rank: int = 0, path: str = ""):
        super().__init__(message)
        self.rank, self.path = rank, path
