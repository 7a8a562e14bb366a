"""Fuzzing fn.load: truncations, byte flips, pickles in place of entries, huge sizes.

Extends tests/test_checkpoint.py (which covers one stored checkpoint cut at every
offset, up to four random flips, hand-made pickle zips and two oversized headers) to
three file layouts (funcnn's own, a plain ``np.savez`` and an ``np.savez_compressed``
file of real params + optimizer state), torn writes that keep the file size, random
trees, flips aimed at the zip and .npy header fields, every entry swapped for every kind
of pickle payload, and every size/count field of every header inflated.

Every load must either raise CheckpointError (the documented error for a bad file) or
return a tree bitwise equal to the original (a flip in a field nobody reads), never
anything else; nothing may be unpickled (the payloads would create a marker file); and
the peak memory of each load, measured with tracemalloc, stays below ``MEMORY_LIMIT``.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import tempfile
import tracemalloc
import warnings
import zipfile

import numpy as np
import pytest
from helpers.reliability import report
from hypothesis import given, settings
from hypothesis import strategies as st

import funcnn as fn
from funcnn.errors import CheckpointError

MEMORY_LIMIT = 8 * 2**20  # the files are a few KB; any load beyond this allocated for a lie
COUNTS: dict[str, int] = {}


# --- the files -----------------------------------------------------------------------


def real_tree():
    """Params and adam state of a small model, plus an empty subtree and a step counter."""
    model = fn.serial(fn.Linear(3, 5), fn.ReLU(), fn.Linear(5, 2))
    params = model.init(0)
    opt = fn.optim.adam(1e-2)
    state = opt.init(params)
    x, y = fn.random.normal(1, (4, 3), np.float32), fn.random.normal(2, (4, 2), np.float32)
    _, grads = fn.value_and_grad(model, fn.losses.mse)(params, x, y)
    params, state = opt.update(grads, state, params)
    return {"params": params, "opt": state, "relu": {}, "epoch": np.array(3)}


TREE = real_tree()
FLAT = {k: v for k, v in fn.tree.flatten(TREE).items() if not isinstance(v, dict)}


def funcnn_bytes(tree=TREE) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        fn.save(os.path.join(folder, "c"), tree)
        with open(os.path.join(folder, "c"), "rb") as f:
            return f.read()


def savez_bytes(compressed: bool) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **FLAT)
    return buf.getvalue()


VARIANTS = {
    "funcnn": (funcnn_bytes(), TREE),
    "savez": (savez_bytes(False), fn.tree.unflatten(FLAT)),
    "savez_compressed": (savez_bytes(True), fn.tree.unflatten(FLAT)),
}


# --- loading, measured -----------------------------------------------------------------


def bitwise_equal(got, want) -> bool:
    fg, fw = fn.tree.flatten(got), fn.tree.flatten(want)
    if list(fg) != list(fw):
        return False
    for key, w in fw.items():
        g = fg[key]
        if isinstance(w, dict) or isinstance(g, dict):
            if g != w:
                return False
        elif not (isinstance(g, np.ndarray) and g.dtype.str == np.asarray(w).dtype.str
                  and g.shape == np.shape(w) and g.tobytes() == np.asarray(w).tobytes()):
            return False
    return True


class Loader:
    """Writes bytes to a scratch file and loads them, optionally under tracemalloc."""

    def __init__(self, folder):
        self.path = os.path.join(folder, "fuzzed")
        # Rewritten in place: truncating a file to 0 and closing it makes ext4 flush it.
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        self.peak = 0

    def outcome(self, data: bytes, original, like=None, measure=True) -> str:
        """``"error"`` (CheckpointError) or ``"equal"``; anything else fails the test.

        A CheckpointError caused by a MemoryError would mean funcnn tried to allocate
        what the file claimed: that fails too. With ``measure``, the peak of the memory
        traced during the load must stay below MEMORY_LIMIT.
        """
        os.pwrite(self.fd, data, 0)
        os.ftruncate(self.fd, len(data))
        if measure:
            tracemalloc.start()
        try:
            loaded = fn.load(self.path, like=like)
        except CheckpointError as e:
            assert not isinstance(e.__cause__, MemoryError), f"tried to allocate: {e}"
            result = "error"
        else:
            assert bitwise_equal(loaded, original), "a damaged file loaded as a different tree"
            result = "equal"
        finally:
            if measure:
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
                self.peak = max(self.peak, peak)
                assert peak < MEMORY_LIMIT, f"load allocated {peak} bytes"
        return result


@pytest.fixture(scope="module")
def loader(tmp_path_factory):
    loader = Loader(tmp_path_factory.mktemp("fuzz"))
    yield loader
    os.close(loader.fd)
    report("load_fuzz", max_peak_bytes=loader.peak, **COUNTS)


def count(name: str, n: int = 1) -> None:
    COUNTS[name] = COUNTS.get(name, 0) + n


# --- truncation ------------------------------------------------------------------------


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_truncation_at_every_offset_and_torn_tails(loader, variant):
    """Cut at every offset; and keep the size but zero the tail (a torn write)."""
    data, original = VARIANTS[variant]
    for n in range(len(data)):
        assert loader.outcome(data[:n], original, measure=False) == "error", f"cut at {n} loaded"
        torn = data[:n] + bytes(len(data) - n)
        # Zeroing bytes that already are zeros (the end record's top bytes) changes nothing.
        assert loader.outcome(torn, original, measure=False) == "error" or torn == data, n
    count(f"truncated_{variant}", len(data))
    count(f"torn_{variant}", len(data))


SMALL_KEYS = st.text(st.characters(min_codepoint=48, max_codepoint=122), min_size=1, max_size=4)
SMALL_LEAVES = st.sampled_from([np.float32, np.float64, np.int64, np.bool_]).flatmap(
    lambda dtype: st.lists(st.integers(0, 3), max_size=2).map(
        lambda shape: (np.arange(int(np.prod(shape))) % 3).astype(dtype).reshape(shape)))
SMALL_SUBTREES = st.recursive(SMALL_LEAVES | st.just({}),
                              lambda children: st.dictionaries(SMALL_KEYS, children, max_size=3),
                              max_leaves=6)
SMALL_TREES = st.dictionaries(SMALL_KEYS.filter(lambda k: not k.startswith("__")), SMALL_SUBTREES,
                              max_size=4)


@settings(max_examples=60)
@given(tree=SMALL_TREES,
       cut=st.floats(0, 1, exclude_max=True), tail=st.sampled_from(["cut", "zeros", "random"]),
       seed=st.integers(0, 2**32 - 1))
def test_random_trees_cut_anywhere(loader, tree, cut, tail, seed):
    data = funcnn_bytes(tree)
    n = int(cut * len(data))
    rest = len(data) - n
    damaged = data[:n] + {"cut": b"", "zeros": bytes(rest),
                          "random": np.random.default_rng(seed).bytes(rest)}[tail]
    outcome = loader.outcome(damaged, tree)
    assert outcome == "error" or tail != "cut"
    count("random_tree_cuts")


# --- byte flips --------------------------------------------------------------------------


def header_offsets(data: bytes, npy_headers: bool = True) -> list[int]:
    """Offsets of every zip header (and .npy header) byte: where a flip is most interesting."""
    offsets = []
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for info in zf.infolist():
            start = info.header_offset
            name_len, extra_len = struct.unpack_from("<HH", data, start + 26)
            body = start + 30 + name_len + extra_len
            stored = info.compress_type == zipfile.ZIP_STORED
            npy_header = min(128, info.compress_size) if stored and npy_headers else 0
            offsets += range(start, body + npy_header)
    cd_offset = struct.unpack_from("<I", data, len(data) - 22 + 16)[0]
    offsets += range(cd_offset, len(data))
    return sorted(set(offsets))


HEADERS = {variant: header_offsets(data) for variant, (data, _) in VARIANTS.items()}


@st.composite
def flips(draw, variant):
    data = VARIANTS[variant][0]
    most = 4 if variant == "funcnn" else 1  # plain .npz has only the zip's own checks
    positions = st.one_of(st.integers(0, len(data) - 1), st.sampled_from(HEADERS[variant]))
    return draw(st.lists(st.tuples(positions, st.integers(1, 255)), min_size=1, max_size=most))


@settings(max_examples=300)
@given(data=st.data(), variant=st.sampled_from(list(VARIANTS)), with_like=st.booleans())
def test_byte_flips_error_or_load_the_original(loader, data, variant, with_like):
    raw, original = VARIANTS[variant]
    damaged = bytearray(raw)
    for position, mask in data.draw(flips(variant)):
        damaged[position] ^= mask
    loader.outcome(bytes(damaged), original, like=original if with_like else None)
    count("byte_flips")


def test_every_bit_of_every_zip_header_flipped(loader):
    """Exhaustively, on a small checkpoint: every bit of every zip header byte, one at a time."""
    original = {"w": np.arange(4, dtype=np.float32).reshape(2, 2), "step": np.array(7)}
    raw = funcnn_bytes(original)
    outcomes = {"error": 0, "equal": 0}
    for position in header_offsets(raw, npy_headers=False):
        for bit in range(8):
            damaged = bytearray(raw)
            damaged[position] ^= 1 << bit
            outcomes[loader.outcome(bytes(damaged), original, measure=False)] += 1
    assert outcomes["error"] > outcomes["equal"] > 0
    count("header_bit_flips", sum(outcomes.values()))
    count("header_bit_flips_harmless", outcomes["equal"])


# --- pickles in place of entries ------------------------------------------------------------


class CreateMarker:
    """Unpickling this creates the file ``marker`` (and returns its descriptor): proof
    that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.open, (self.marker, os.O_CREAT | os.O_WRONLY))


def npy(arr, allow_pickle=False) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=allow_pickle)
    return buf.getvalue()


def payloads(marker) -> dict[str, bytes]:
    live = CreateMarker(marker)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|O", "fortran_order": False, "shape": (1,)})
    return {
        "object-array": npy(np.array([live], dtype=object), allow_pickle=True),
        "object-field": npy(np.array([(live, 1.0)], dtype=[("a", "O"), ("b", "f8")]), allow_pickle=True),
        "object-subarray": npy(np.array([((live, live),)], dtype=[("a", "O", (2,))]),
                               allow_pickle=True),
        "object-header-raw-pickle": header.getvalue() + pickle.dumps([live], protocol=2),
        **{f"raw-pickle-protocol-{p}": pickle.dumps(live, protocol=p) for p in range(6)},
    }


def _ints_in(obj):
    """The descriptors an unpickled payload returned, wherever numpy put them."""
    if isinstance(obj, int):
        yield obj
    elif isinstance(obj, (list, tuple, np.ndarray, np.void)):
        for item in (obj.tolist() if isinstance(obj, (np.ndarray, np.void)) else obj):
            yield from _ints_in(item)


def rebuild(raw: bytes, replace: dict[str, bytes], compression: int) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(raw)) as src, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(out, "w") as dst:
            for info in src.infolist():
                body = replace.get(info.filename, None)
                if body is None:
                    body = src.read(info)
                new = zipfile.ZipInfo(info.filename, date_time=info.date_time)
                new.compress_type = compression if info.filename in replace else info.compress_type
                dst.writestr(new, body)
    return out.getvalue()


ENTRIES = {variant: zipfile.ZipFile(io.BytesIO(data)).namelist() for variant, (data, _) in VARIANTS.items()}


def test_the_payloads_are_live(tmp_path):
    for name, body in payloads(tmp_path / "proof").items():
        if name.startswith("raw-pickle"):
            unpickled = pickle.loads(body)
        else:
            unpickled = np.lib.format.read_array(io.BytesIO(body), allow_pickle=True)
        for fd in set(_ints_in(unpickled)):
            os.close(fd)
        assert (tmp_path / "proof").exists(), name
        (tmp_path / "proof").unlink()


@settings(max_examples=200)
@given(data=st.data(), variant=st.sampled_from(["funcnn", "savez", "savez_compressed"]),
       compression=st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]),
       with_like=st.booleans(), how_many=st.integers(1, 3))
def test_entries_swapped_for_pickles_are_never_unpickled(loader, data, variant, compression,
                                                         with_like, how_many):
    raw, original = VARIANTS[variant]
    marker = os.path.join(os.path.dirname(loader.path), "pwned")
    bodies = payloads(marker)
    names = data.draw(st.lists(st.sampled_from(ENTRIES[variant]), min_size=1, max_size=how_many,
                               unique=True))
    replace = {name: bodies[data.draw(st.sampled_from(sorted(bodies)))] for name in names}
    outcome = loader.outcome(rebuild(raw, replace, compression), original,
                             like=original if with_like else None)
    assert outcome == "error"
    assert not os.path.exists(marker), "a pickle was unpickled"
    count("pickle_swaps")


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_whole_file_pickles_of_the_tree_are_refused(loader, tmp_path, protocol):
    marker = tmp_path / "pwned"
    for obj in (CreateMarker(marker), {"params": CreateMarker(marker)}, TREE):
        assert loader.outcome(pickle.dumps(obj, protocol=protocol), TREE) == "error"
    assert not marker.exists()
    count("whole_file_pickles", 3)


# --- huge declared sizes ---------------------------------------------------------------------


def zip_size_fields(data: bytes) -> list[tuple[str, int, int]]:
    """``(name, offset, width)`` of every size, count and offset field in the zip headers."""
    fields = []
    end = len(data) - 22
    fields += [("end.entries_on_disk", end + 8, 2), ("end.entries", end + 10, 2),
               ("end.cd_size", end + 12, 4), ("end.cd_offset", end + 16, 4)]
    cd_size, cd_offset = struct.unpack_from("<II", data, end + 12)
    at = cd_offset
    while at < cd_offset + cd_size:
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", data, at + 28)
        local = struct.unpack_from("<I", data, at + 42)[0]
        fields += [("central.compress_size", at + 20, 4), ("central.file_size", at + 24, 4),
                   ("central.name_len", at + 28, 2), ("central.extra_len", at + 30, 2),
                   ("central.local_offset", at + 42, 4), ("local.compress_size", local + 18, 4),
                   ("local.file_size", local + 22, 4), ("local.name_len", local + 26, 2),
                   ("local.extra_len", local + 28, 2)]
        at += 46 + name_len + extra_len + comment_len
    return fields


SIZE_FIELDS = {variant: zip_size_fields(data) for variant, (data, _) in VARIANTS.items()}


@settings(max_examples=250)
@given(data=st.data(), variant=st.sampled_from(list(VARIANTS)))
def test_huge_zip_sizes_are_refused_in_bounded_memory(loader, data, variant):
    raw, original = VARIANTS[variant]
    _, offset, width = data.draw(st.sampled_from(SIZE_FIELDS[variant]))
    top = 2 ** (8 * width) - 1
    value = data.draw(st.sampled_from([top, top - 1, top // 2, top // 2 + 1]) | st.integers(0, top))
    damaged = bytearray(raw)
    damaged[offset:offset + width] = value.to_bytes(width, "little")
    loader.outcome(bytes(damaged), original)
    count("huge_zip_fields")


def npy_with_shape(arr: np.ndarray, shape) -> bytes:
    """``arr``'s .npy bytes with a header that declares ``shape`` instead."""
    header = io.BytesIO()
    np.lib.format.write_array_header_2_0(header, {
        "descr": np.lib.format.dtype_to_descr(arr.dtype), "fortran_order": False, "shape": shape})
    return header.getvalue() + arr.tobytes()


@settings(max_examples=150)
@given(data=st.data(), variant=st.sampled_from(["funcnn", "savez"]),
       compression=st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]),
       dims=st.lists(st.sampled_from([2**31 - 1, 2**32, 2**40, 2**62, 2**63 - 1, 3, 0]),
                     min_size=1, max_size=3))
def test_huge_npy_shapes_are_refused_before_allocating(loader, data, variant, compression, dims):
    raw, original = VARIANTS[variant]
    name = data.draw(st.sampled_from(ENTRIES[variant]))
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        arr = np.lib.format.read_array(io.BytesIO(zf.read(name)), allow_pickle=False)
    if int(np.prod(dims, dtype=object)) * arr.dtype.itemsize == arr.nbytes:
        dims = [d + 1 for d in dims]  # a shape that accounts for the real bytes is not a lie
    outcome = loader.outcome(rebuild(raw, {name: npy_with_shape(arr, tuple(dims))}, compression),
                             original)
    assert outcome == "error"
    count("huge_npy_shapes")


def test_deflated_entries_claiming_huge_sizes(loader):
    """Every entry of the compressed file claims 4 GiB - 1 (both headers agree): no bomb."""
    raw, original = VARIANTS["savez_compressed"]
    damaged = bytearray(raw)
    for field, offset, width in SIZE_FIELDS["savez_compressed"]:
        if field.endswith("file_size"):
            damaged[offset:offset + width] = (2**32 - 1).to_bytes(4, "little")
    assert loader.outcome(bytes(damaged), original) == "error"
    count("huge_deflate_claims")
