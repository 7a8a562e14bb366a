"""The tutorial's datasets (XOR, sin(x), UCI Airfoil Self-Noise) and UCI digits.

``xor()`` and ``sine()`` are built in memory exactly as the tutorial builds them.
``digits()`` reads the 8x8 handwritten digits shipped inside funcnn (never the network).
``airfoil()`` reads the UCI file from ``path`` if given, else from the cache folder,
else downloads it into the cache (only then is the network used)::

    import funcnn as fn
    x, y = fn.datasets.airfoil()                 # (1503, 5), (1503, 1)
    train, val, test = fn.data.split(0, x, y)    # the tutorial's 50/20/30

The cache folder is ``cache_dir=`` if given, else ``$FUNCNN_DATA_DIR`` if set, else
``~/.cache/funcnn``.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import numbers
import os
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple
from urllib import request

import numpy as np

from funcnn._fs import fsync_directory
from funcnn.errors import DatasetError, DownloadError

AIRFOIL_URL = (
    "http://archive.ics.uci.edu/ml/machine-learning-databases/00291/airfoil_self_noise.dat"
)
AIRFOIL_FILENAME = "airfoil_self_noise.dat"
AIRFOIL_ROWS = 1503
AIRFOIL_COLUMNS = ("frequency_hz", "angle_deg", "chord_m", "velocity_m_s", "thickness_m", "spl_db")
"""The six columns: five features, then the target (sound pressure level in dB)."""

# Slightly looser than the data's actual ranges (200..20000 Hz, 0..22.2 deg,
# 0.0254..0.3048 m, 31.7..71.3 m/s, 0.0004..0.0584 m, 103.4..141.0 dB).
_AIRFOIL_BOUNDS = (
    (100.0, 25000.0),
    (0.0, 25.0),
    (0.02, 0.35),
    (30.0, 75.0),
    (0.0, 0.07),
    (100.0, 145.0),
)
_MAX_DOWNLOAD_BYTES = 4 * 2**20  # the file is about 60 kB
ENV_DATA_DIR = "FUNCNN_DATA_DIR"
# How the messages say "give a file": the argument in Python, the flag of the examples' CLI.
_GIVE_PATH = "(path= in Python, --data PATH on the command line)"


class Dataset(NamedTuple):
    """A training set and a validation set (rows are samples)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


# --- in-memory datasets -----------------------------------------------------------


def xor(dtype: Any = np.float64) -> tuple[np.ndarray, np.ndarray]:
    """The four XOR points: ``x`` of shape (4, 2) and ``y = x0 xor x1`` of shape (4, 1).

    Example:
        >>> x, y = xor()
        >>> y.ravel()
        array([0., 1., 1., 0.])
    """
    dtype = _float_dtype(dtype, "xor")
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=dtype)
    y = np.array([[0], [1], [1], [0]], dtype=dtype)
    return x, y


def sine(n: int = 5000, dtype: Any = np.float64) -> Dataset:
    """``y = sin(x)`` on ``[0, 2 pi]``: the tutorial's regression task.

    ``x_train`` is ``n`` evenly spaced points from 0 to 2 pi (shape ``(n, 1)``);
    ``x_val`` is the same grid shifted by half a step, so every validation point lies
    between two training points (the last one just past 2 pi). Computed in float64 as in
    the tutorial, then cast to ``dtype``.

    Example:
        >>> data = sine()
        >>> data.x_train.shape, data.y_val.shape
        ((5000, 1), (5000, 1))
    """
    dtype = _float_dtype(dtype, "sine")
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 2:
        raise ValueError(f"sine: n must be an int >= 2, got {n!r}")
    x_train = np.linspace(0, 2 * np.pi, n).reshape(-1, 1)
    y_train = np.sin(x_train)
    x_val = (x_train[1] - x_train[0]) / 2 + np.linspace(0, 2 * np.pi, n).reshape(-1, 1)
    y_val = np.sin(x_val)
    return Dataset(*(a.astype(dtype, copy=False) for a in (x_train, y_train, x_val, y_val)))


def _float_dtype(dtype: Any, where: str) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt.kind != "f":
        raise TypeError(f"{where}: dtype must be a float dtype like np.float64, got {dtype!r}")
    return dt


# --- digits -----------------------------------------------------------------------

DIGITS_SHA256 = "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22"
"""sha256 of the shipped ``digits.csv.gz``; :func:`digits` checks it on every load."""
DIGITS_SPLITS = {"train": (0, 1, 2), "val": (3,), "test": (4,)}
"""The fixed split: the ``k``-th image of each digit (in file order, from 0) is in the part
whose tuple holds ``k % 5``."""


def digits(
    split: str | None = None,
    *,
    dtype: Any = np.float32,
    scale: bool = True,
    path: str | os.PathLike | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """UCI handwritten digits: 8x8 images (1797 of them) and their labels 0..9.

    The test set of the UCI Optical Recognition of Handwritten Digits data (E. Alpaydin,
    C. Kaynak, 1998; https://doi.org/10.24432/C50P49; the file scikit-learn ships as
    ``load_digits``), licensed CC BY 4.0 and shipped inside funcnn
    (``funcnn/data_files/digits.csv.gz``, with its attribution beside it), so it loads
    offline. Each pixel counts the set bits in a 4x4 block of a 32x32 bitmap (0..16).

    The fixed split (``DIGITS_SPLITS``) is stratified and needs no random numbers: the
    ``k``-th image of each digit, counting in file order from 0, is in ``"test"`` when
    ``k % 5 == 4``, in ``"val"`` when ``k % 5 == 3``, else in ``"train"``: 1085 train
    images (105..111 of each digit), 357 val (35..36 each) and 355 test (34..36 each).
    Rows keep the file's order.

    Args:
        split: ``None`` for all 1797 rows, or ``"train"``, ``"val"``, ``"test"``.
        dtype: Float dtype of the images (float32 by default, as funcnn's layers).
        scale: Divide pixels by 16, to [0, 1] (default); ``False`` keeps the counts 0..16.
        path: Another copy of ``digits.csv.gz`` to read (default: the shipped one).

    Returns:
        ``(images, labels)``: images ``(n, 1, 8, 8)`` (channels first, as ``Conv2d``
        takes them; ``images.reshape(n, 64)`` for an MLP), labels ``(n,)`` int64.

    Raises:
        DatasetError: the file is missing or its sha256 is not ``DIGITS_SHA256``.

    Example:
        >>> x_train, y_train = digits("train")
        >>> x_train.shape, x_train.dtype, y_train[:5]
        ((1085, 1, 8, 8), dtype('float32'), array([0, 1, 2, 3, 4]))
    """
    dtype = _float_dtype(dtype, "digits")
    if split is not None and split not in DIGITS_SPLITS:
        raise ValueError(f"digits: split must be None or one of {list(DIGITS_SPLITS)}, got {split!r}")
    table = _read_digits(Path(path) if path is not None else None)
    if split is not None:
        labels = table[:, 64]
        rank = np.empty(len(table), np.int64)  # k: the how-manieth of its digit each row is
        for digit in range(10):
            rows = np.flatnonzero(labels == digit)
            rank[rows] = np.arange(len(rows))
        table = table[np.isin(rank % 5, DIGITS_SPLITS[split])]
    images = table[:, :64].reshape(-1, 1, 8, 8).astype(dtype)
    if scale:
        images /= 16
    return images, table[:, 64].astype(np.int64)


def _read_digits(path: Path | None) -> np.ndarray:
    """The checked table (1797, 65) of ints: 64 pixels, then the label."""
    source = resources.files("funcnn").joinpath("data_files").joinpath("digits.csv.gz") if path is None else path
    try:
        raw = source.read_bytes()
    except OSError as exc:
        raise DatasetError(
            f"digits: cannot read {source}: {exc}; reinstall funcnn, or pass path= to a copy"
        ) from exc
    digest = hashlib.sha256(raw).hexdigest()
    if digest != DIGITS_SHA256:
        raise DatasetError(
            f"digits: {source} is not the UCI digits file: its sha256 is {digest}, expected "
            f"{DIGITS_SHA256}; reinstall funcnn, or pass path= to a good copy"
        )
    text = gzip.decompress(raw).decode("ascii")
    return np.array([line.split(",") for line in text.splitlines()], dtype=np.int64)


# --- airfoil ----------------------------------------------------------------------


def default_cache_dir() -> Path:
    """The cache folder: ``$FUNCNN_DATA_DIR`` if set (and non-empty), else ``~/.cache/funcnn``."""
    env = os.environ.get(ENV_DATA_DIR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "funcnn"


def airfoil(
    path: str | os.PathLike | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    download: bool = True,
    url: str = AIRFOIL_URL,
    timeout: float = 30.0,
    dtype: Any = np.float64,
) -> tuple[np.ndarray, np.ndarray]:
    """UCI Airfoil Self-Noise: ``x`` of shape (1503, 5) and ``y`` (dB) of shape (1503, 1).

    Where the file comes from, first match wins:

    1. ``path``, if given (never downloads);
    2. ``<cache>/airfoil_self_noise.dat``, where ``<cache>`` is ``cache_dir``, else
       ``$FUNCNN_DATA_DIR``, else ``~/.cache/funcnn``;
    3. a download from ``url`` (the tutorial's UCI address) into that cache file, when
       ``download`` is true. The file is written to a temporary name in the cache
       folder, synced, checked, and only then renamed into place, so an interrupted
       or bad download never leaves a partial file behind.

    Every file is checked: 1503 rows of 6 numbers, each column in a sane range (see
    ``AIRFOIL_COLUMNS``). Feature columns are frequency (Hz), angle of attack (deg),
    chord length (m), free-stream velocity (m/s) and suction-side displacement
    thickness (m).

    Args:
        path: A local copy of ``airfoil_self_noise.dat``.
        cache_dir: Folder of the cached copy (overrides ``$FUNCNN_DATA_DIR``).
        download: Whether to download when there is no local copy.
        url: Where to download from.
        timeout: Seconds to wait on the network.
        dtype: Float dtype of the returned arrays.

    Returns:
        ``(x, y)``; split them with :func:`funcnn.data.split`.

    Raises:
        DatasetError: the file is missing, unreadable or not the airfoil data (the
            message names the path).
        DownloadError: there is no local copy and the download failed.

    Example:
        >>> x, y = airfoil("airfoil_self_noise.dat")
        >>> x.shape, y.shape
        ((1503, 5), (1503, 1))
    """
    dtype = _float_dtype(dtype, "airfoil")
    if path is not None:
        hint = f"give the path of a good copy of the UCI file {_GIVE_PATH}"
        data = _read_airfoil(Path(path), hint)
    else:
        folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        cached = folder / AIRFOIL_FILENAME
        if cached.exists():
            data = _read_airfoil(cached, "delete it to download it again, or give the path of "
                                         f"a good copy {_GIVE_PATH}")
        elif download:
            data = _download_airfoil(url, cached, timeout)
        else:
            raise DatasetError(
                f"airfoil: no local copy at {cached} and download=False; give the path of a "
                f"copy {_GIVE_PATH}, put the file there, or set {ENV_DATA_DIR} to a folder "
                "that holds it"
            )
    data = data.astype(dtype, copy=False)
    return np.ascontiguousarray(data[:, :-1]), np.ascontiguousarray(data[:, -1:])


def _read_airfoil(path: Path, hint: str) -> np.ndarray:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"airfoil: cannot read {path}: {exc}; {hint}") from exc
    return _parse_airfoil(raw, str(path), hint)


def _parse_airfoil(raw: bytes, source: str, hint: str) -> np.ndarray:
    """Parse and check the UCI text: 1503 rows of 6 whitespace-separated numbers."""

    def fail(what: str) -> DatasetError:
        tail = f"; {hint}" if hint else ""
        return DatasetError(f"airfoil: {source} is not the UCI airfoil data: {what}{tail}")

    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as exc:
        raise fail(f"not plain text (byte {exc.start})") from None
    rows, lines = [], []
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != len(AIRFOIL_COLUMNS):
            raise fail(f"line {lineno}: expected {len(AIRFOIL_COLUMNS)} columns, got {len(fields)}")
        try:
            rows.append([float(f) for f in fields])
        except ValueError:
            raise fail(f"line {lineno} is not all numbers: {line[:60]!r}") from None
        lines.append(lineno)
    if len(rows) != AIRFOIL_ROWS:
        raise fail(f"it has {len(rows)} rows, expected {AIRFOIL_ROWS}")
    data = np.array(rows, dtype=np.float64)
    for j, (name, (lo, hi)) in enumerate(zip(AIRFOIL_COLUMNS, _AIRFOIL_BOUNDS)):
        column = data[:, j]
        bad = np.flatnonzero(~np.isfinite(column) | (column < lo) | (column > hi))
        if bad.size:
            i = bad[0]
            raise fail(f"line {lines[i]}: {name} = {float(column[i])!r} is outside [{lo}, {hi}]")
    if np.any(data[:, 4] == 0):
        raise fail(f"line {lines[int(np.flatnonzero(data[:, 4] == 0)[0])]}: thickness_m is 0")
    return data


def _download_airfoil(url: str, dest: Path, timeout: float) -> np.ndarray:
    """Download ``url``, check it, then save it to ``dest`` atomically."""
    where = (
        f"give the path of a local copy {_GIVE_PATH}, put the file at {dest}, or set "
        f"{ENV_DATA_DIR} to a folder that holds it"
    )
    try:
        raw = _fetch(url, timeout)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise DownloadError(
            f"airfoil: download from {url} failed ({type(exc).__name__}: {exc}); {where}"
        ) from exc
    try:
        data = _parse_airfoil(raw, f"the download from {url}", "")
    except DatasetError as exc:
        raise DownloadError(f"{exc}; {where}") from None
    try:
        _write_atomic(dest, raw)
    except OSError as exc:
        raise DatasetError(
            f"airfoil: downloaded, but could not save it to {dest} ({exc}); pass "
            f"cache_dir= or set {ENV_DATA_DIR} to a writable folder"
        ) from exc
    return data


def _write_atomic(dest: Path, raw: bytes) -> None:
    """Write to a temporary file beside ``dest``, sync it, then rename it into place."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(raw)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_directory(dest.parent)


def _fetch(url: str, timeout: float) -> bytes:
    chunks, size = [], 0
    with request.urlopen(url, timeout=timeout) as response:
        while chunk := response.read(2**16):
            chunks.append(chunk)
            size += len(chunk)
            if size > _MAX_DOWNLOAD_BYTES:
                raise DatasetError(f"the response is larger than {_MAX_DOWNLOAD_BYTES} bytes")
    return b"".join(chunks)
