"""Checkpoints: save and load pytrees exactly, atomically and without pickle.

    >>> import funcnn as fn, numpy as np
    >>> params = {"0": {"weight": np.ones((3, 2)), "bias": np.zeros(3)}, "1": {}}
    >>> state = {"step": np.array(7), "mu": fn.tree.zeros_like(params)}
    >>> fn.save("run.ckpt", {"params": params, "opt": state})
    >>> restored = fn.load("run.ckpt", like={"params": params, "opt": state})

Format
    A checkpoint is an uncompressed zip in numpy's ``.npz`` layout, so
    ``np.load(path, allow_pickle=False)`` reads it too. Each leaf is the entry
    ``"<dotted key>.npy"`` (the :func:`funcnn.tree.flatten` key, e.g. ``"0.weight"``;
    any key works, ``"file"`` included), written by ``np.lib.format.write_array`` with
    ``allow_pickle=False``. Three metadata entries come first:

    - ``__format__``: 0-d int64, the format version (currently 1).
    - ``__keys__``: 1-d unicode array, every flattened key in order, so the loaded tree
      has the saved key order and a missing entry is detected.
    - ``__empty__``: 1-d unicode array, the keys of empty-dict subtrees (a parameterless
      layer's ``{}``), so they round-trip too.

    Top-level keys starting with ``"__"`` are therefore reserved: :func:`save` rejects
    them (nested keys such as ``"a.__b"`` are fine). Leaves follow in flatten order,
    all with a fixed timestamp, so the same tree always gives the same bytes.
    :func:`load` also reads a plain ``.npz`` without metadata (e.g. written by
    ``np.savez(f, **fn.tree.flatten(tree))``, or ``np.savez_compressed``).

Leaves
    ndarrays of any dtype except object and structured (void) ones: bool, (unsigned)
    integers, float16/32/64, complex, fixed-width str/bytes, datetime64/timedelta64.
    numpy scalars and Python bool/int/float/complex are saved as 0-d arrays and load
    as 0-d arrays. Dtype (byte order included), shape and every bit are kept.

Atomicity
    :func:`save` writes a temporary file ``.<name>.tmp-<pid>-<random>`` in the same
    folder, flushes and fsyncs it, then ``os.replace``-s it onto ``path`` and fsyncs the
    folder (best effort, POSIX). If anything fails, the temporary file is removed, the
    error is raised, and an existing checkpoint at ``path`` is left untouched. A process
    killed mid-save (SIGKILL, power loss) leaves the old checkpoint intact but cannot
    remove its temporary file; the next :func:`save` to the same path deletes such
    leftovers whose writer process no longer exists (POSIX only; only this exact name
    pattern is touched; on a filesystem shared between machines, a save racing one
    from another machine to the same path may then fail with CheckpointError, never
    corrupt the file). A symlink at ``path`` is replaced by the new file.

Safety
    :func:`load` never unpickles and never executes code from the file. Before reading
    any array data it checks every zip entry: only stored or deflated, unencrypted,
    non-overlapping ``.npy`` entries that lie inside the file; the shape and dtype in
    each ``.npy`` header must account for exactly the entry's size, and a deflated
    entry may not claim more than deflate's maximum expansion of its compressed size.
    So memory use is bounded by the arrays the file really holds (a deflated entry, as
    in ``np.savez_compressed`` files, at most ~1100x its compressed size). The CRC of every
    entry is verified, the entry count is cross-checked against the zip's end record,
    and ``__keys__`` must list exactly the entries present, so a damaged file raises
    instead of loading partly. (A plain ``.npz`` has no ``__keys__``; only the zip's
    own checks protect it.) With ``like=``, keys, shapes and dtypes are compared using
    the headers alone, before any array data is read.

Errors
    - :class:`funcnn.errors.CheckpointError` (an ``OSError``): the file could not be
      written, or is missing, a directory, truncated, corrupt, pickled, or otherwise
      not a checkpoint. The message names the path and, where known, the key.
    - :class:`funcnn.errors.StructureError` (a ``ValueError``): ``load(..., like=)``
      found a file that does not match ``like``; one error lists every difference.
    - ``TypeError`` / ``ValueError`` from :func:`save` for a tree that cannot be saved
      (object arrays, lists, reserved or invalid keys), naming the dotted key, raised
      before anything is written.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import re
import secrets
import stat
import struct
import zipfile
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np

from funcnn import tree as tree_lib
from funcnn._fs import fsync_directory
from funcnn.errors import CheckpointError, FuncnnError, StructureError

FORMAT_VERSION = 1
"""The format version :func:`save` writes and the newest one :func:`load` reads."""

_FORMAT, _KEYS, _EMPTY = "__format__", "__keys__", "__empty__"
_LEAF_KINDS = "biufcmMSU"  # everything np.lib.format stores without pickle, bar void
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_ZIP64_FROM = 1 << 30  # force zip64 records for entries this large
_LOCAL_HEADER_SIZE = 30  # fixed part of a zip local file header
_END_RECORD_SIZE = 22  # zip end of central directory record, without its comment
_MAX_DEFLATE_RATIO = 1100  # deflate expands at most ~1032x; a little slack
PathLike = str | os.PathLike


# --- save --------------------------------------------------------------------------


def save(path: PathLike, tree: dict) -> None:
    """Write ``tree`` to exactly ``path`` (no suffix added), atomically.

    Args:
        path: The file to write. Its folder must exist. An existing file is replaced
            only once the new one is complete and on disk.
        tree: A pytree (nested dicts with str keys) of arrays, numpy scalars or Python
            numbers; empty-dict subtrees are kept. Params, optimizer state, or a dict
            holding both plus e.g. an epoch counter.

    Raises:
        CheckpointError: The file could not be written (wraps the ``OSError``); the
            previous file at ``path``, if any, is unchanged.
        TypeError: A leaf is not an array/number, or has object or structured dtype.
        ValueError: A key is invalid, or a top-level key starts with ``"__"``.

    Example:
        >>> fn.save("ckpt.npz", {"params": params, "opt": opt_state, "epoch": 3})
        >>> np.load("ckpt.npz", allow_pickle=False)["params.0.weight"].shape
        (3, 2)
    """
    path = _as_path(path, "save")
    entries = _entries(tree)  # every check happens before the disk is touched
    directory, name = os.path.split(os.path.abspath(path))
    _remove_stale_temps(directory, name)
    try:
        fd, tmp = _create_temp(directory, name)
    except OSError as e:
        raise CheckpointError(f"save: cannot create a temporary file next to {path!r}: {e}") from e
    try:
        with os.fdopen(fd, "wb") as f:
            _write_zip(f, entries)
            f.flush()
            os.fsync(f.fileno())
        _keep_mode(path, tmp)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and not isinstance(e, FuncnnError):
            raise CheckpointError(
                f"save: could not write checkpoint {path!r}: {e} "
                "(any previous file at that path is unchanged)"
            ) from e
        raise
    fsync_directory(directory)


def _entries(tree: dict) -> list[tuple[str, np.ndarray]]:
    """The (entry key, array) pairs to write, metadata first; validates everything."""
    if not isinstance(tree, dict):
        raise TypeError(f"save: expected a dict pytree, got {type(tree).__name__}")
    flat = tree_lib.flatten(tree)
    arrays, empty = [], []
    for key, leaf in flat.items():
        _check_key_path(key)
        if isinstance(leaf, dict):
            empty.append(key)
        else:
            arrays.append((key, _leaf_array(key, leaf)))
    meta = [
        (_FORMAT, np.array(FORMAT_VERSION, dtype=np.int64)),
        (_KEYS, _str_array(list(flat))),
        (_EMPTY, _str_array(empty)),
    ]
    return meta + arrays


def _check_key_path(key: str) -> None:
    if key.startswith("__"):
        top = key.split(".")[0]
        raise ValueError(
            f"save: top-level key {top!r} is reserved: keys starting with '__' hold "
            "checkpoint metadata (rename it, or nest it one level down)"
        )
    if "\x00" in key:
        raise ValueError(
            f"save: key path {key!r} contains a NUL character, which zip names cannot hold"
        )
    try:
        size = len(key.encode("utf-8")) + len(".npy")
    except UnicodeEncodeError as e:
        raise ValueError(f"save: key path {key!r} is not valid unicode ({e})") from e
    if size > 0xFFFF:
        raise ValueError(f"save: key path {key[:40]!r}... is {size} bytes; zip names hold 65535")


def _leaf_array(key: str, leaf: Any) -> np.ndarray:
    if isinstance(leaf, np.ma.MaskedArray):
        raise TypeError(f"save: leaf {key!r} is a masked array; save .data and .mask separately")
    if not isinstance(leaf, (np.ndarray, np.generic, bool, int, float, complex)):
        raise TypeError(
            f"save: leaf {key!r} is a {type(leaf).__name__}; checkpoint leaves must be "
            "numpy arrays, numpy scalars or Python numbers (convert it with np.asarray)"
        )
    if isinstance(leaf, int) and not isinstance(leaf, bool):
        if not -(2**63) <= leaf < 2**63:
            raise ValueError(
                f"save: leaf {key!r} = {leaf} does not fit in int64 (Python ints are saved "
                "as int64; store e.g. np.uint64(...) or split it)"
            )
        leaf = np.int64(leaf)
    arr = np.asarray(leaf)
    if arr.dtype.hasobject:
        raise TypeError(
            f"save: leaf {key!r} has dtype object; object arrays need pickle, which "
            "funcnn checkpoints never use (convert it to a numeric dtype)"
        )
    if arr.dtype.kind not in _LEAF_KINDS or arr.dtype.names is not None:
        raise TypeError(
            f"save: leaf {key!r} has dtype {arr.dtype}; structured and void dtypes are "
            "not supported (save each field as its own key)"
        )
    return arr


def _str_array(strings: list[str]) -> np.ndarray:
    width = max([1, *map(len, strings)])
    return np.array(strings, dtype=f"<U{width}")


def _write_zip(f, entries: list[tuple[str, np.ndarray]]) -> None:
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, arr in entries:
            info = zipfile.ZipInfo(key + ".npy", date_time=_ZIP_EPOCH)
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=arr.nbytes >= _ZIP64_FROM) as out:
                np.lib.format.write_array(out, arr, allow_pickle=False)


def _create_temp(directory: str, name: str) -> tuple[int, str]:
    """Create ``.<name>.tmp-<pid>-<8 hex>`` exclusively; the umask applies as for open()."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = os.path.join(directory, f".{name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary file name for .{name}.tmp-* in {directory!r}")


def _keep_mode(path: str, tmp: str) -> None:
    """Give the new file the permissions of the one it replaces, as open(path, "wb") would."""
    with contextlib.suppress(OSError):
        os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))


def _remove_stale_temps(directory: str, name: str) -> None:
    """Delete temp files of earlier saves to this path whose process has died (POSIX)."""
    if os.name != "posix":
        return
    pattern = re.compile(re.escape(f".{name}.tmp-") + r"(\d+)-[0-9a-f]{8}")
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for entry in names:
        match = pattern.fullmatch(entry)
        if match and _process_is_gone(int(match.group(1))):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, entry))


def _process_is_gone(pid: int) -> bool:
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):
        return False  # exists but is not ours, or an absurd pid: leave it alone
    return False


def _as_path(path: Any, where: str) -> str:
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"{where}: path must be a str or os.PathLike, got {type(path).__name__}")
    return os.fsdecode(path)


# --- load --------------------------------------------------------------------------


class _Spec(NamedTuple):
    """The shape and dtype of a leaf; ``None`` stands for an empty-dict subtree."""

    shape: tuple[int, ...]
    dtype: np.dtype


class _Entry(NamedTuple):
    info: zipfile.ZipInfo
    spec: _Spec


def load(path: PathLike, like: dict | None = None) -> dict:
    """Read a checkpoint written by :func:`save` (or a plain ``.npz``) back into a tree.

    Args:
        path: The checkpoint file.
        like: Optional pytree of the expected structure (e.g. freshly initialised
            params). Leaves may be arrays or anything with ``.shape`` and ``.dtype``.
            The file's keys, shapes and dtypes are checked against it before any array
            data is read, and the result has ``like``'s key order.

    Returns:
        The tree, with ndarray leaves (0-d arrays for saved scalars) and ``{}`` for
        saved empty subtrees, bitwise equal to what was saved.

    Raises:
        CheckpointError: The file is missing, a directory, unreadable, truncated,
            corrupt, holds object/pickled arrays, or is not a checkpoint. The message
            names the path and, where known, the key.
        StructureError: ``like`` was given and the file differs from it; the message
            lists every missing and unexpected key and every shape and dtype
            difference. (Not a CheckpointError: the file itself is fine.)

    Example:
        >>> params = fn.load("ckpt.npz", like=model.init(0))
    """
    path = _as_path(path, "load")
    expected = None if like is None else _specs_of(like)
    try:
        f = open(path, "rb")
    except OSError as e:
        raise CheckpointError(f"load: cannot open checkpoint {path!r}: {e.strerror or e}") from e
    with f, _corrupt_unless_ours(path):
        try:
            archive = zipfile.ZipFile(f)
        except Exception as e:
            raise CheckpointError(
                f"load: {path!r} is not a checkpoint: not a valid .npz (zip) file ({e})"
            ) from e
        with archive:
            size = os.fstat(f.fileno()).st_size
            _check_entry_count(f, size, archive, path)
            return _load_archive(archive, size, path, expected)


def _load_archive(archive: zipfile.ZipFile, size: int, path: str, expected) -> dict:
    entries = _read_headers(archive, size, path)
    specs, funcnn_format = _manifest(archive, entries, path)
    if expected is None:
        order = specs
    else:
        _raise_unless_like(
            expected, specs, f"checkpoint {path!r}", short="the file", fill_empty=not funcnn_format
        )
        order = expected
    flat = {}
    for key, spec in order.items():
        flat[key] = {} if spec is None else _read_array(archive, entries[key], path, key)
    return tree_lib.unflatten(flat)


def _check_entry_count(f, size: int, archive: zipfile.ZipFile, path: str) -> None:
    """Cross-check the end record's entry count against the entries zipfile found.

    zipfile walks the central directory by its byte size alone; a corrupted size
    would silently hide entries (and with them, possibly ``__format__``).
    """
    end = size - _END_RECORD_SIZE - len(archive.comment)
    f.seek(end)
    record = f.read(_END_RECORD_SIZE)
    if len(record) != _END_RECORD_SIZE or record[:4] != b"PK\x05\x06":
        raise _corrupt(path, None, "unexpected data after the zip end record")
    (count,) = struct.unpack_from("<H", record, 10)
    f.seek(max(end - 20, 0))
    locator = f.read(20)
    if len(locator) == 20 and locator[:4] == b"PK\x06\x07":  # zip64: the count is there
        f.seek(struct.unpack_from("<Q", locator, 8)[0])
        record64 = f.read(56)
        if len(record64) != 56 or record64[:4] != b"PK\x06\x06":
            raise _corrupt(path, None, "zip64 end record missing")
        (count,) = struct.unpack_from("<Q", record64, 32)
    found = len(archive.infolist())
    if count != found:
        raise _corrupt(
            path,
            None,
            f"the zip end record lists {count} entries but the central directory holds {found}",
        )


def _read_headers(archive: zipfile.ZipFile, size: int, path: str) -> dict[str, _Entry]:
    """Check every zip entry and parse its .npy header, reading no array data."""
    infos = archive.infolist()
    if not infos:  # even save(path, {}) writes three metadata entries
        raise _corrupt(path, None, "the zip holds no entries")
    _check_layout(infos, size, path)
    entries: dict[str, _Entry] = {}
    for info in infos:
        name = info.filename
        if not name.endswith(".npy"):
            raise _corrupt(path, None, f"unexpected zip entry {name!r} (not a .npy array)")
        key = name[: -len(".npy")]
        if key in entries:
            raise _corrupt(path, key, "the zip holds two entries with this name")
        with _corrupt_unless_ours(path, key):
            entries[key] = _Entry(info, _read_header(archive, info, path, key))
    return entries


def _check_layout(infos: list[zipfile.ZipInfo], size: int, path: str) -> None:
    """Reject encrypted, oddly compressed, oversized or overlapping entries up front."""
    spans = []
    for info in infos:
        key = info.filename.removesuffix(".npy")
        if info.flag_bits & 0x1:
            raise _corrupt(path, key, "the zip entry is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _corrupt(path, key, f"unsupported zip compression method {info.compress_type}")
        stored = info.compress_type == zipfile.ZIP_STORED
        if stored and info.compress_size != info.file_size:
            raise _corrupt(path, key, "stored entry with compressed size != size")
        if info.file_size > _MAX_DEFLATE_RATIO * info.compress_size + 1024:
            raise _corrupt(
                path,
                key,
                f"entry claims {info.file_size} bytes from {info.compress_size} compressed "
                "bytes, more than deflate can produce (a zip bomb?)",
            )
        end = info.header_offset + _LOCAL_HEADER_SIZE + info.compress_size
        if end > size:
            raise _corrupt(path, key, f"entry extends past the end of the {size}-byte file")
        spans.append((info.header_offset, end, key))
    spans.sort()
    for (_, end, _), (start, _, key) in itertools.pairwise(spans):
        if start < end:
            raise _corrupt(path, key, "zip entries overlap")


def _read_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: str, key: str) -> _Spec:
    with archive.open(info) as fp:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(fp)
        else:
            raise _corrupt(path, key, f"unsupported .npy format version {version}")
        header_size = fp.tell()
    if dtype.hasobject:
        raise _corrupt(
            path,
            key,
            "holds an object (pickled) array; funcnn never unpickles, since that can run "
            "arbitrary code",
        )
    if dtype.kind not in _LEAF_KINDS or dtype.names is not None or dtype.itemsize == 0:
        raise _corrupt(path, key, f"unsupported dtype {dtype}")
    if any(d < 0 for d in shape):
        raise _corrupt(path, key, f"negative dimension in shape {shape}")
    nbytes = math.prod(int(d) for d in shape) * dtype.itemsize
    if header_size + nbytes != info.file_size:
        raise _corrupt(
            path,
            key,
            f"the .npy header declares shape {shape} of {dtype} ({nbytes} bytes) but the "
            f"entry holds {info.file_size - header_size} bytes of data",
        )
    return _Spec(tuple(int(d) for d in shape), dtype)


def _manifest(archive: zipfile.ZipFile, entries: dict[str, _Entry], path: str):
    """The ordered ``{key: spec or None}`` of the saved tree, and whether it is our format."""
    meta = [key for key in entries if key.startswith("__")]
    if _FORMAT not in entries:
        if meta:
            raise _corrupt(path, meta[0], "metadata entry in a file without __format__")
        specs = {key: entry.spec for key, entry in entries.items()}
        _check_key_paths(specs, path)
        return specs, False
    unknown = [key for key in meta if key not in (_FORMAT, _KEYS, _EMPTY)]
    if unknown:
        raise _corrupt(path, unknown[0], "unknown metadata entry")
    if _KEYS not in entries or _EMPTY not in entries:
        raise _corrupt(path, None, f"{_FORMAT} present but {_KEYS} or {_EMPTY} missing")
    version = _read_array(archive, entries[_FORMAT], path, _FORMAT)
    if version.shape != () or version.dtype.kind not in "iu":
        raise _corrupt(
            path, _FORMAT, f"expected a 0-d integer, got {version.dtype} {version.shape}"
        )
    if int(version) != FORMAT_VERSION:
        raise _corrupt(
            path,
            _FORMAT,
            f"format version {int(version)}; this funcnn reads version {FORMAT_VERSION} "
            "(upgrade funcnn to read newer checkpoints)",
        )
    keys, empty = (_read_strings(archive, entries[k], path, k) for k in (_KEYS, _EMPTY))
    if len(set(keys)) != len(keys):
        raise _corrupt(path, _KEYS, "lists a key twice")
    empty_set = set(empty)
    if not empty_set <= set(keys):
        raise _corrupt(path, _EMPTY, "lists a key that __keys__ does not")
    arrays = set(keys) - empty_set
    for key in keys:
        if key not in empty_set and key not in entries:
            raise _corrupt(path, key, "listed in __keys__ but its entry is missing")
    for key in entries:
        if key not in meta and key not in arrays:
            raise _corrupt(path, key, "entry not listed in __keys__")
    specs = {key: None if key in empty_set else entries[key].spec for key in keys}
    _check_key_paths(specs, path)
    return specs, True


def _read_strings(archive, entry: _Entry, path: str, key: str) -> list[str]:
    arr = _read_array(archive, entry, path, key)
    if arr.ndim != 1 or arr.dtype.kind != "U":
        raise _corrupt(path, key, f"expected a 1-d unicode array, got {arr.dtype} {arr.shape}")
    return [str(s) for s in arr.tolist()]


def _check_key_paths(specs: dict, path: str) -> None:
    """The saved keys must form a tree: valid dotted paths, no leaf that is also a parent."""
    try:
        tree_lib.unflatten(dict.fromkeys(specs, 0))
    except (ValueError, StructureError) as e:
        raise _corrupt(path, None, f"the keys do not form a tree: {e}") from e


def _read_array(archive: zipfile.ZipFile, entry: _Entry, path: str, key: str) -> np.ndarray:
    """Read one entry whose header :func:`_read_header` has vetted; the CRC is checked."""
    with _corrupt_unless_ours(path, key), archive.open(entry.info) as fp:
        arr = np.lib.format.read_array(fp, allow_pickle=False)
        if fp.read(1):
            raise _corrupt(path, key, "trailing data after the array")
    if arr.shape != entry.spec.shape or arr.dtype != entry.spec.dtype:
        raise _corrupt(path, key, "the array changed between header check and read")
    return arr


def _corrupt(path: str, key: str | None, detail: str) -> CheckpointError:
    where = f" (entry {key!r})" if key is not None else ""
    return CheckpointError(f"load: {path!r}{where} is not a valid funcnn checkpoint: {detail}")


@contextlib.contextmanager
def _corrupt_unless_ours(path: str, key: str | None = None) -> Iterator[None]:
    """Turn any parsing failure (zipfile, zlib, numpy, struct, ...) into CheckpointError."""
    try:
        yield
    except FuncnnError:
        raise
    except MemoryError as e:
        raise _corrupt(path, key, "not enough memory to read it") from e
    except Exception as e:
        detail = f"{type(e).__name__}: {e}" if str(e) else f"{type(e).__name__} (truncated?)"
        raise _corrupt(path, key, detail) from e


# --- like= -------------------------------------------------------------------------


def _specs_of(like: dict) -> dict[str, _Spec | None]:
    """``{dotted key: _Spec or None}`` for a ``like`` tree."""
    if not isinstance(like, dict):
        raise TypeError(f"like= must be a dict pytree, got {type(like).__name__}")
    return {key: _spec_of(leaf) for key, leaf in tree_lib.flatten(like).items()}


def _spec_of(leaf: Any) -> _Spec | None:
    if isinstance(leaf, dict):
        return None
    if not isinstance(leaf, (np.ndarray, np.generic)):
        try:
            return _Spec(tuple(leaf.shape), np.dtype(leaf.dtype))
        except (AttributeError, TypeError):
            leaf = np.asarray(leaf)
    return _Spec(tuple(leaf.shape), leaf.dtype)


def _describe(spec: _Spec | None) -> str:
    return "an empty dict {}" if spec is None else f"shape {spec.shape} {spec.dtype}"


def _raise_unless_like(
    expected: dict[str, _Spec | None],
    got: dict[str, _Spec | None],
    source: str,
    *,
    short: str,
    fill_empty: bool,
    hint: str = "Pass the like= tree of the model that wrote it, or load without like= to inspect it.",
) -> None:
    """Raise one :class:`StructureError` listing every difference between the specs.

    ``source`` names what was read in the headline (``"checkpoint 'a.npz'"``), ``short``
    in each line (``"the file"``). With ``fill_empty``, empty-dict subtrees of ``like``
    that the source lacks are not differences (plain ``.npz`` files and torch
    state_dicts cannot hold them).
    """
    problems = []
    for key, want in expected.items():
        if key not in got:
            if not (want is None and fill_empty):
                problems.append(
                    f"missing {key!r}: expected {_describe(want)}, {short} has no such key"
                )
            continue
        have = got[key]
        if want is None or have is None:
            if want is not have:
                problems.append(
                    f"{key!r}: expected {_describe(want)}, {short} has {_describe(have)}"
                )
            continue
        if want.shape != have.shape:
            problems.append(f"{key!r}: expected shape {want.shape}, {short} has {have.shape}")
        if want.dtype != have.dtype:
            problems.append(f"{key!r}: expected dtype {want.dtype}, {short} has {have.dtype}")
    for key, have in got.items():
        if key not in expected:
            problems.append(
                f"unexpected {key!r}: {short} has {_describe(have)}, like= has no such key"
            )
    if problems:
        plural = "s" if len(problems) > 1 else ""
        raise StructureError(
            f"{source} does not match like= ({len(problems)} difference{plural}; "
            f"expected = like=):\n  "
            + "\n  ".join(problems)
            + "\n" + hint
        )
