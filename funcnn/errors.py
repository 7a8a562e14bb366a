"""The exceptions funcnn raises, in one place so users can catch them by type.

Every message follows one template: what is wrong, where (a layer's index path or a
dotted key), expected vs got, and how to fix it where that helps.
"""

from __future__ import annotations


class FuncnnError(Exception):
    """Base class of every error funcnn raises on purpose."""


class ShapeError(FuncnnError, ValueError):
    """An array has the wrong shape for the layer or loss it was given to.

    ``where`` is the layer's index path from the outermost model, e.g.
    ``("serial[2]", "residual", "serial[0]")``; ``layer`` is the failing layer's repr.
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

    def within(self, step: str) -> "ShapeError":
        """The same error, seen from one level further out (``step`` prepended)."""
        return type(self)(self.detail, layer=self.layer, where=(step, *self.where))


class LayerInputError(ShapeError, TypeError):
    """A layer or loss got an input of the wrong kind (list, int array, complex, ...)."""


class StructureError(FuncnnError, ValueError):
    """Two pytrees that must match (params and grads, params and ``like=``) do not."""


class CheckpointError(FuncnnError, OSError):
    """A checkpoint could not be written, or a file is not a valid funcnn checkpoint.

    Raised for missing, truncated, corrupt or pickled files; funcnn never unpickles.
    """
