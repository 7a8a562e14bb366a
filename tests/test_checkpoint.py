"""Checkpoints: exact round trips, the .npz format, atomic writes, hostile files."""

from __future__ import annotations

import errno
import io
import os
import pathlib
import pickle
import random
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import tracemalloc
import types
import warnings
import zipfile

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import funcnn as fn
from funcnn.errors import CheckpointError, StructureError

REPO = pathlib.Path(__file__).resolve().parents[1]


# --- helpers -----------------------------------------------------------------------


def assert_bitwise(got, want):
    """Same keys in the same order, and every leaf an ndarray with equal dtype and bits."""
    flat_got, flat_want = fn.tree.flatten(got), fn.tree.flatten(want)
    assert list(flat_got) == list(flat_want)
    for key, w in flat_want.items():
        g = flat_got[key]
        if isinstance(w, dict):
            assert g == {}, key
            continue
        w = np.asarray(w)
        assert isinstance(g, np.ndarray), key
        assert g.dtype == w.dtype and g.dtype.str == w.dtype.str, (key, g.dtype, w.dtype)
        assert g.shape == w.shape, (key, g.shape, w.shape)
        assert g.tobytes() == w.tobytes(), key


def temp_leftovers(folder):
    return sorted(n for n in os.listdir(folder) if ".tmp-" in n)


def npy_bytes(arr, allow_pickle=False):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=allow_pickle)
    return buf.getvalue()


def write_zip(path, entries, compression=zipfile.ZIP_STORED):
    """A zip of raw ``(name, bytes)`` entries, duplicates allowed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names
        with zipfile.ZipFile(path, "w", compression=compression) as zf:
            for name, data in entries:
                info = zipfile.ZipInfo(name)
                info.compress_type = compression
                zf.writestr(info, data)


def funcnn_entries(keys, empty=(), version=1):
    """The metadata entries a funcnn checkpoint starts with."""
    return [
        ("__format__.npy", npy_bytes(np.array(version, dtype=np.int64))),
        ("__keys__.npy", npy_bytes(np.array(list(keys), dtype="<U16"))),
        ("__empty__.npy", npy_bytes(np.array(list(empty), dtype="<U16"))),
    ]


def small_tree():
    return {
        "0": {
            "weight": np.arange(6, dtype=np.float32).reshape(3, 2),
            "bias": np.ones(3, np.float32),
        },
        "1": {},
        "file": np.array([7, 8], dtype=np.uint32),
        "step": np.array(3, dtype=np.int64),
    }


def optimizer_like_state(params):
    return {
        "step": np.array(25, dtype=np.int64),
        "mu": fn.tree.full_like(params, 0.25),
        "nu": fn.tree.full_like(params, 1e-3),
    }


class MkdirOnUnpickle:
    """Unpickling this creates the directory ``marker``: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def pickled_object_array(marker):
    return npy_bytes(np.array([MkdirOnUnpickle(marker)], dtype=object), allow_pickle=True)


def patch_uint32(data, signature, offset, value):
    """Overwrite a little-endian uint32 field of every zip header with ``signature``."""
    data = bytearray(data)
    start = data.find(signature)
    assert start >= 0
    while start >= 0:
        struct.pack_into("<I", data, start + offset, value)
        start = data.find(signature, start + 1)
    return bytes(data)


LOCAL, CENTRAL = b"PK\x03\x04", b"PK\x01\x02"


# --- strategies --------------------------------------------------------------------

DTYPES = [
    np.float16,
    np.float32,
    np.float64,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.bool_,
    np.complex64,
    np.complex128,
    ">f8",
    ">i4",
    "<U3",
    "S2",
]
KEY_CHARS = st.characters(exclude_characters=".\x00", exclude_categories=("Cs",))
KEYS = st.text(KEY_CHARS, min_size=1, max_size=5) | st.sampled_from(
    ["file", "allow_pickle", "fid", "0", "a/b", "ключ", "__nested", "x"]
)
TOP_KEYS = KEYS.filter(lambda k: not k.startswith("__"))


@st.composite
def leaves(draw):
    arr = draw(
        hnp.arrays(
            st.sampled_from(DTYPES),
            hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3),
        )
    )
    if arr.ndim >= 2 and draw(st.booleans()):
        arr = np.asfortranarray(arr)
    return arr


SUBTREES = st.recursive(
    st.just({}) | st.dictionaries(KEYS, leaves(), max_size=3),
    lambda children: st.dictionaries(KEYS, children | leaves(), max_size=3),
    max_leaves=8,
)
TREES = st.dictionaries(TOP_KEYS, SUBTREES | leaves(), max_size=4)


def freeze(tree):
    def frozen(x):
        x = x.copy()
        x.setflags(write=False)
        return x

    return fn.tree.map(frozen, tree)


# --- round trips -------------------------------------------------------------------


@given(TREES)
def test_round_trip_is_bitwise_for_random_trees(tree):
    tree = freeze(tree)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "ckpt")
        fn.save(path, tree)
        assert_bitwise(fn.load(path), tree)
        assert_bitwise(fn.load(path, like=tree), tree)
        assert os.listdir(folder) == ["ckpt"]


def test_round_trip_params_and_optimizer_state(tmp_path):
    params = {
        "0": {
            "weight": np.linspace(-1, 1, 6, dtype=np.float32).reshape(3, 2),
            "bias": np.zeros(3, np.float32),
        },
        "1": {},
        "2": {"weight": np.full((1, 3), np.nan, np.float64), "bias": np.array([-0.0])},
    }
    checkpoint = {
        "params": params,
        "opt": optimizer_like_state(params),
        "key": fn.random.key(1234),
        "flags": np.array([True, False]),
        "half": np.array([1e-7, 65504], dtype=np.float16),
    }
    fn.save(tmp_path / "run.ckpt", checkpoint)
    loaded = fn.load(tmp_path / "run.ckpt", like=checkpoint)
    assert_bitwise(loaded, checkpoint)
    assert loaded["opt"]["step"].shape == () and loaded["opt"]["step"].dtype == np.int64
    assert loaded["key"].dtype == np.uint32


def test_scalars_are_saved_as_0d_arrays(tmp_path):
    tree = {"i": 3, "f": 0.5, "b": True, "c": 1j, "np": np.float32(2.5), "u": np.uint32(7)}
    fn.save(tmp_path / "c", tree)
    loaded = fn.load(tmp_path / "c")
    assert_bitwise(loaded, {k: np.asarray(v) for k, v in tree.items()})
    assert all(type(v) is np.ndarray and v.ndim == 0 for v in loaded.values())


def test_empty_tree_and_empty_subtrees_round_trip(tmp_path):
    for tree in [{}, {"a": {}}, {"a": {"b": {}, "c": np.ones(1)}, "d": {}}]:
        fn.save(tmp_path / "c", tree)
        assert_bitwise(fn.load(tmp_path / "c"), tree)


def test_key_order_is_kept_and_like_order_wins(tmp_path):
    tree = {"z": np.ones(1), "a": {"y": np.ones(2), "b": {}}, "m": np.ones(3)}
    fn.save(tmp_path / "c", tree)
    assert list(fn.tree.flatten(fn.load(tmp_path / "c"))) == ["z", "a.y", "a.b", "m"]
    like = {"m": np.zeros(3), "a": {"b": {}, "y": np.zeros(2)}, "z": np.zeros(1)}
    assert list(fn.tree.flatten(fn.load(tmp_path / "c", like=like))) == ["m", "a.b", "a.y", "z"]


def test_fortran_and_big_endian_arrays_round_trip(tmp_path):
    tree = {"f": np.asfortranarray(np.arange(12.0).reshape(3, 4)), "be": np.arange(4, dtype=">i4")}
    fn.save(tmp_path / "c", tree)
    loaded = fn.load(tmp_path / "c")
    assert_bitwise(loaded, tree)
    assert loaded["f"].flags.f_contiguous and loaded["be"].dtype.str == ">i4"


def test_same_tree_gives_same_bytes(tmp_path):
    fn.save(tmp_path / "a", small_tree())
    time.sleep(0.01)
    fn.save(tmp_path / "b", small_tree())
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()


# --- the format --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ckpt", "ckpt.npz", "weights.pt", "no_suffix."])
def test_save_writes_exactly_the_path(tmp_path, name):
    fn.save(tmp_path / name, small_tree())
    assert os.listdir(tmp_path) == [name]
    fn.save(str(tmp_path / name), small_tree())
    assert os.listdir(tmp_path) == [name]


def test_readable_by_np_load_without_pickle(tmp_path):
    tree = {"file": np.arange(3), "allow_pickle": np.ones(2), "a": {"b": {}, "c": np.int8(1)}}
    fn.save(tmp_path / "c", tree)
    with np.load(tmp_path / "c", allow_pickle=False) as z:
        assert z.files == ["__format__", "__keys__", "__empty__", "file", "allow_pickle", "a.c"]
        assert z["__format__"] == 1 and z["__format__"].dtype == np.int64
        assert z["__keys__"].tolist() == ["file", "allow_pickle", "a.b", "a.c"]
        assert z["__empty__"].tolist() == ["a.b"]
        assert z["__keys__"].dtype.kind == "U"
        np.testing.assert_array_equal(z["file"], np.arange(3))
        assert z["a.c"].dtype == np.int8


def test_plain_npz_files_load(tmp_path):
    flat = {"0.weight": np.ones((3, 2)), "0.bias": np.zeros(3), "file": np.arange(2)}
    np.savez(tmp_path / "plain.npz", **{k: v for k, v in flat.items() if k != "file"})
    assert_bitwise(
        fn.load(tmp_path / "plain.npz"), {"0": {"weight": flat["0.weight"], "bias": flat["0.bias"]}}
    )
    np.savez_compressed(tmp_path / "zipped.npz", zeros=np.zeros(1 << 20))
    assert_bitwise(fn.load(tmp_path / "zipped.npz"), {"zeros": np.zeros(1 << 20)})
    like = {"0": {"weight": np.ones((3, 2)), "bias": np.ones(3)}, "1": {}}
    assert_bitwise(
        fn.load(tmp_path / "plain.npz", like=like),
        {"0": {"weight": flat["0.weight"], "bias": flat["0.bias"]}, "1": {}},
    )


def test_reserved_top_level_keys_are_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"'__meta'.*reserved"):
        fn.save(tmp_path / "c", {"__meta": np.ones(1)})
    with pytest.raises(ValueError, match=r"'__format__'.*reserved"):
        fn.save(tmp_path / "c", {"__format__": {"x": np.ones(1)}})
    assert os.listdir(tmp_path) == []
    fn.save(tmp_path / "c", {"a": {"__format__": np.ones(1)}})  # nested is fine
    assert_bitwise(fn.load(tmp_path / "c"), {"a": {"__format__": np.ones(1)}})


@pytest.mark.parametrize(
    ("leaf", "error", "match"),
    [
        (np.array([1, None], dtype=object), TypeError, "'a.b' has dtype object"),
        (np.zeros(2, dtype=[("x", "f4")]), TypeError, "'a.b' has dtype"),
        ([1.0, 2.0], TypeError, "'a.b' is a list"),
        ("text", TypeError, "'a.b' is a str"),
        (None, TypeError, "'a.b' is a NoneType"),
        (np.ma.masked_array([1.0], mask=[True]), TypeError, "'a.b' is a masked array"),
        (2**70, ValueError, "'a.b'.*int64"),
    ],
)
def test_unsaveable_leaves_name_the_key_and_write_nothing(tmp_path, leaf, error, match):
    fn.save(tmp_path / "c", small_tree())
    before = (tmp_path / "c").read_bytes()
    with pytest.raises(error, match=match):
        fn.save(tmp_path / "c", {"ok": np.ones(1), "a": {"b": leaf}})
    assert (tmp_path / "c").read_bytes() == before
    assert os.listdir(tmp_path) == ["c"]


def test_invalid_keys_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="'a.b'"):
        fn.save(tmp_path / "c", {"a.b": np.ones(1)})
    with pytest.raises(ValueError, match="NUL"):
        fn.save(tmp_path / "c", {"a\x00b": np.ones(1)})
    with pytest.raises(TypeError):
        fn.save(tmp_path / "c", [np.ones(1)])
    assert os.listdir(tmp_path) == []


# --- atomic writes -----------------------------------------------------------------


def test_no_temp_files_after_saves(tmp_path):
    for i in range(20):
        fn.save(tmp_path / "c", {"i": np.array(i)})
    assert os.listdir(tmp_path) == ["c"]
    assert int(fn.load(tmp_path / "c")["i"]) == 19


def fail_on_call(real, n, exc):
    """Wrap write_array: the n-th call writes half of its bytes, then raises ``exc``."""
    calls = []

    def write_array(fp, array, *args, **kwargs):
        calls.append(1)
        if len(calls) < n:
            return real(fp, array, *args, **kwargs)
        buf = io.BytesIO()
        real(buf, array)
        fp.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        raise exc

    return write_array


@pytest.mark.parametrize("step", ["write_array", "fsync", "replace", "interrupt"])
def test_failure_midway_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch, step):
    old = small_tree()
    fn.save(tmp_path / "c", old)
    before = (tmp_path / "c").read_bytes()
    new = {str(i): np.full(1000, i, np.float64) for i in range(10)}
    disk_full = OSError(errno.ENOSPC, "No space left on device")
    if step == "write_array":
        monkeypatch.setattr(
            np.lib.format, "write_array", fail_on_call(np.lib.format.write_array, 6, disk_full)
        )
    elif step == "interrupt":
        monkeypatch.setattr(
            np.lib.format,
            "write_array",
            fail_on_call(np.lib.format.write_array, 6, KeyboardInterrupt()),
        )
    elif step == "fsync":
        monkeypatch.setattr(
            os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error"))
        )
    else:
        monkeypatch.setattr(
            os, "replace", lambda a, b: (_ for _ in ()).throw(OSError(errno.EXDEV, "cross-device"))
        )
    expected = KeyboardInterrupt if step == "interrupt" else CheckpointError
    with pytest.raises(expected) as info:
        fn.save(tmp_path / "c", new)
    monkeypatch.undo()
    if expected is CheckpointError:
        assert str(tmp_path / "c") in str(info.value) and "unchanged" in str(info.value)
        assert isinstance(info.value.__cause__, OSError)
    assert os.listdir(tmp_path) == ["c"]
    assert (tmp_path / "c").read_bytes() == before
    assert_bitwise(fn.load(tmp_path / "c"), old)


def test_save_into_a_missing_folder_or_onto_a_directory(tmp_path):
    with pytest.raises(CheckpointError, match="no_such_folder"):
        fn.save(tmp_path / "no_such_folder" / "c", small_tree())
    (tmp_path / "d").mkdir()
    with pytest.raises(CheckpointError, match="could not write"):
        fn.save(tmp_path / "d", small_tree())
    assert os.listdir(tmp_path) == ["d"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_permissions_follow_umask_or_the_replaced_file(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    fn.save(tmp_path / "c", small_tree())
    assert (tmp_path / "c").stat().st_mode & 0o777 == 0o666 & ~umask
    os.chmod(tmp_path / "c", 0o640)
    fn.save(tmp_path / "c", small_tree())
    assert (tmp_path / "c").stat().st_mode & 0o777 == 0o640


KILLED_WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    import funcnn as fn
    big = {str(i): np.full(1 << 18, i, np.float64) for i in range(32)}  # 64 MiB
    print("ready", flush=True)
    while True:
        fn.save(sys.argv[1], big)
    """
)


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL")
def test_sigkilled_writer_leaves_the_old_or_the_new_file(tmp_path):
    path = tmp_path / "ckpt"
    old = small_tree()
    big = {str(i): np.full(1 << 18, i, np.float64) for i in range(32)}
    fn.save(path, old)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    rng = random.Random(0)
    killed_mid_write = 0
    for _ in range(6):
        child = subprocess.Popen(
            [sys.executable, "-c", KILLED_WRITER, str(path)], stdout=subprocess.PIPE, env=env
        )
        try:
            assert child.stdout.readline() == b"ready\n"
            time.sleep(rng.uniform(0.02, 0.4))
        finally:
            child.kill()
            child.wait()
            child.stdout.close()
        loaded = fn.load(path)
        assert_bitwise(loaded, old if "step" in loaded else big)
        killed_mid_write += bool(temp_leftovers(tmp_path))
    assert killed_mid_write >= 1, "no kill landed during a write; the test proved nothing"
    fn.save(path, old)  # cleans the dead writer's temp file
    assert os.listdir(tmp_path) == ["ckpt"]
    assert_bitwise(fn.load(path), old)


@pytest.mark.skipif(os.name != "posix", reason="pid liveness check is POSIX only")
def test_stale_temp_cleanup_touches_only_dead_writers_of_this_path(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        keep = [
            f".c.tmp-{sleeper.pid}-0123abcd",  # a live writer
            f".c.tmp-{os.getpid()}-0123abcd",  # this process (another thread, say)
            f".other.tmp-{dead.pid}-0123abcd",  # another checkpoint
            f".c.tmp-{dead.pid}-0123abcd.bak",  # not our exact pattern
            "c.tmp-1-0123abcd",
        ]
        for name in [*keep, f".c.tmp-{dead.pid}-deadbeef"]:
            (tmp_path / name).write_bytes(b"x")
        fn.save(tmp_path / "c", small_tree())
        assert sorted(os.listdir(tmp_path)) == sorted([*keep, "c"])
    finally:
        sleeper.kill()
        sleeper.wait()


# --- hostile and broken files ------------------------------------------------------


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(CheckpointError, match="cannot open checkpoint .*nope"):
        fn.load(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="cannot open checkpoint"):
        fn.load(tmp_path)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello, world\n",
        b"PK\x03\x04" + b"\x00" * 40,
        npy_bytes(np.ones(3)),
        pickle.dumps({"a": 1}),
    ],
    ids=["empty", "text", "zip-magic", "npy", "pickle"],
)
def test_not_a_checkpoint(tmp_path, data):
    (tmp_path / "c").write_bytes(data)
    with pytest.raises(CheckpointError, match=r"'.*c'.* not a"):
        fn.load(tmp_path / "c")


@given(st.binary(max_size=600))
def test_random_bytes_give_checkpoint_error(data):
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "c")
        with open(path, "wb") as f:
            f.write(data)
        with pytest.raises(CheckpointError):
            fn.load(path)


@pytest.mark.parametrize("funcnn_format", [True, False])
@pytest.mark.parametrize("payload", ["object-array", "raw-pickle"])
def test_pickle_payloads_are_never_unpickled(tmp_path, funcnn_format, payload):
    marker = tmp_path / "pwned"
    data = (
        pickled_object_array(marker)
        if payload == "object-array"
        else pickle.dumps(MkdirOnUnpickle(marker))
    )
    # The payload is live: unpickling it does create the marker.
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(MkdirOnUnpickle(proof)))
    assert proof.is_dir()
    meta = funcnn_entries(["w", "b"]) if funcnn_format else []
    write_zip(tmp_path / "c", [*meta, ("b.npy", npy_bytes(np.ones(2))), ("w.npy", data)])
    for like in (None, {"w": np.ones(1), "b": np.ones(2)}):
        with pytest.raises(CheckpointError, match="'w'") as info:
            fn.load(tmp_path / "c", like=like)
        assert not marker.exists()
    if payload == "object-array":
        assert "never unpickles" in str(info.value)


def test_whole_file_pickle_is_not_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "c").write_bytes(pickle.dumps(MkdirOnUnpickle(marker)))
    with pytest.raises(CheckpointError):
        fn.load(tmp_path / "c")
    assert not marker.exists()


def test_truncation_at_every_offset(tmp_path):
    fn.save(tmp_path / "c", small_tree())
    data = (tmp_path / "c").read_bytes()
    for n in range(len(data)):
        (tmp_path / "t").write_bytes(data[:n])
        with pytest.raises(CheckpointError):
            fn.load(tmp_path / "t")


@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=4))
def test_byte_flips_error_or_load_the_original(tmp_path_factory, flips):
    folder = tmp_path_factory.mktemp("flips")
    tree = small_tree()
    fn.save(folder / "c", tree)
    data = bytearray((folder / "c").read_bytes())
    for position, mask in flips:
        data[position % len(data)] ^= mask
    (folder / "c").write_bytes(bytes(data))
    try:
        loaded = fn.load(folder / "c")
    except CheckpointError:
        return
    assert_bitwise(loaded, tree)  # flips in fields nobody reads (timestamps, ...) are harmless


def test_crc_mismatch_is_detected(tmp_path):
    fn.save(tmp_path / "c", {"w": np.zeros(64)})
    data = bytearray((tmp_path / "c").read_bytes())
    data[data.rfind(b"\x00" * 64) + 10] = 1  # one bit inside the array data
    (tmp_path / "c").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="'w'.*CRC"):
        fn.load(tmp_path / "c")


def test_huge_declared_shape_is_rejected_before_allocating(tmp_path):
    fake = _npy_with_shape((1 << 40,), np.float64, payload=b"\x00" * 16)  # claims 8 TiB
    write_zip(tmp_path / "c", [("w.npy", fake)])
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match=r"'w'.*declares shape \(1099511627776,\)"):
            fn.load(tmp_path / "c")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5 * 2**20


def _npy_with_shape(shape, dtype, payload):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf,
        {
            "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
            "fortran_order": False,
            "shape": shape,
        },
    )
    return buf.getvalue() + payload


def test_zip_bomb_sizes_are_rejected_before_allocating(tmp_path):
    header = _npy_with_shape((1 << 28,), np.float64, payload=b"")  # claims 2 GiB
    write_zip(
        tmp_path / "c", [("w.npy", header + b"\x00" * 4096)], compression=zipfile.ZIP_DEFLATED
    )
    data = (tmp_path / "c").read_bytes()
    size = len(header) + (1 << 31)
    data = patch_uint32(patch_uint32(data, LOCAL, 22, size), CENTRAL, 24, size)
    (tmp_path / "c").write_bytes(data)
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match="'w'.*zip bomb"):
            fn.load(tmp_path / "c")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5 * 2**20


def test_stored_entry_claiming_more_than_the_file_holds(tmp_path):
    write_zip(tmp_path / "c", [("w.npy", npy_bytes(np.zeros(4)))])
    data = (tmp_path / "c").read_bytes()
    for field in ((LOCAL, 18), (CENTRAL, 20)):  # compressed size
        data = patch_uint32(data, *field, 1 << 31)
    for field in ((LOCAL, 22), (CENTRAL, 24)):  # size
        data = patch_uint32(data, *field, 1 << 31)
    (tmp_path / "c").write_bytes(data)
    with pytest.raises(CheckpointError, match="past the end"):
        fn.load(tmp_path / "c")


def test_highly_compressible_legit_arrays_still_load(tmp_path):
    np.savez_compressed(tmp_path / "z.npz", w=np.zeros(1 << 21, np.uint8))
    assert fn.load(tmp_path / "z.npz")["w"].shape == (1 << 21,)


@pytest.mark.parametrize(
    ("entries", "compression", "match"),
    [
        (
            [("w.npy", npy_bytes(np.ones(2))), ("w.npy", npy_bytes(np.ones(3)))],
            zipfile.ZIP_STORED,
            "two entries",
        ),
        ([("w.txt", b"hello")], zipfile.ZIP_STORED, "not a .npy"),
        ([("dir/", b"")], zipfile.ZIP_STORED, "not a .npy"),
        ([("w.npy", b"\x93NUMPY\x01\x00" + b"\xff" * 40)], zipfile.ZIP_STORED, "'w'"),
        ([("w.npy", npy_bytes(np.ones(3))[:-8])], zipfile.ZIP_STORED, "'w'.*declares shape"),
        ([("w.npy", npy_bytes(np.ones(3)) + b"x" * 8)], zipfile.ZIP_STORED, "'w'.*declares shape"),
        ([("w.npy", _npy_with_shape((-1, 0), np.float64, b""))], zipfile.ZIP_STORED, "'w'"),
        (
            [("w.npy", npy_bytes(np.zeros(2, dtype=[("x", "f4")])))],
            zipfile.ZIP_STORED,
            "'w'.*dtype",
        ),
        ([("w.npy", npy_bytes(np.ones(2)))], zipfile.ZIP_LZMA, "compression"),
        ([("w.npy", npy_bytes(np.ones(2)))], zipfile.ZIP_BZIP2, "compression"),
        (
            [("a.npy", npy_bytes(np.ones(1))), ("a.b.npy", npy_bytes(np.ones(1)))],
            zipfile.ZIP_STORED,
            "tree",
        ),
        ([(".npy", npy_bytes(np.ones(1)))], zipfile.ZIP_STORED, "tree"),
        ([("__x.npy", npy_bytes(np.ones(1)))], zipfile.ZIP_STORED, "'__x'.*metadata"),
    ],
    ids=[
        "duplicate",
        "not-npy",
        "directory",
        "bad-header",
        "short-data",
        "long-data",
        "negative-dim",
        "structured",
        "lzma",
        "bzip2",
        "leaf-and-parent",
        "empty-key",
        "meta-no-format",
    ],
)
def test_malformed_entries(tmp_path, entries, compression, match):
    write_zip(tmp_path / "c", entries, compression)
    with pytest.raises(CheckpointError, match=match):
        fn.load(tmp_path / "c")


def test_an_empty_zip_is_not_a_checkpoint(tmp_path):
    np.savez(tmp_path / "empty.npz")
    with pytest.raises(CheckpointError, match="no entries"):
        fn.load(tmp_path / "empty.npz")


def test_entries_hidden_by_a_corrupt_directory_size_are_detected(tmp_path):
    np.savez(tmp_path / "c.npz", a=np.zeros(3), b=np.ones(3))
    data = bytearray((tmp_path / "c.npz").read_bytes())
    end = data.rfind(b"PK\x05\x06")
    struct.pack_into("<HH", data, end + 8, 3, 3)  # the end record now claims 3 entries
    (tmp_path / "c.npz").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="lists 3 entries but the central directory holds 2"):
        fn.load(tmp_path / "c.npz")


def test_trailing_data_after_the_zip_is_rejected(tmp_path):
    fn.save(tmp_path / "c", small_tree())
    with open(tmp_path / "c", "ab") as f:
        f.write(b"trailing")
    with pytest.raises(CheckpointError):
        fn.load(tmp_path / "c")


def test_encrypted_entries_are_rejected(tmp_path):
    write_zip(tmp_path / "c", [("w.npy", npy_bytes(np.ones(2)))])
    data = bytearray((tmp_path / "c").read_bytes())
    for signature, offset in ((LOCAL, 6), (CENTRAL, 8)):
        data[data.find(signature) + offset] |= 1
    (tmp_path / "c").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="encrypted"):
        fn.load(tmp_path / "c")


@pytest.mark.parametrize(
    ("entries", "match"),
    [
        (
            funcnn_entries(["w"], version=2) + [("w.npy", npy_bytes(np.ones(1)))],
            "version 2.*upgrade",
        ),
        (funcnn_entries(["w", "v"]) + [("w.npy", npy_bytes(np.ones(1)))], "'v'.*missing"),
        (
            funcnn_entries(["w"])
            + [("w.npy", npy_bytes(np.ones(1))), ("v.npy", npy_bytes(np.ones(1)))],
            "'v'.*not listed",
        ),
        (funcnn_entries(["w", "w"]) + [("w.npy", npy_bytes(np.ones(1)))], "twice"),
        (funcnn_entries(["w"], empty=["e"]) + [("w.npy", npy_bytes(np.ones(1)))], "__empty__"),
        (
            funcnn_entries(["w"])
            + [("w.npy", npy_bytes(np.ones(1))), ("__new__.npy", npy_bytes(np.ones(1)))],
            "'__new__'.*unknown",
        ),
        (funcnn_entries(["w"])[:1] + [("w.npy", npy_bytes(np.ones(1)))], "__keys__"),
        (
            [("__format__.npy", npy_bytes(np.ones(2)))]
            + funcnn_entries(["w"])[1:]
            + [("w.npy", npy_bytes(np.ones(1)))],
            "'__format__'.*0-d integer",
        ),
    ],
    ids=[
        "newer",
        "missing-entry",
        "unlisted-entry",
        "duplicate-key",
        "bad-empty",
        "unknown-meta",
        "no-keys",
        "bad-format",
    ],
)
def test_inconsistent_metadata(tmp_path, entries, match):
    write_zip(tmp_path / "c", entries)
    with pytest.raises(CheckpointError, match=match):
        fn.load(tmp_path / "c")


# --- like= -------------------------------------------------------------------------


def test_like_reports_every_difference_in_one_error(tmp_path):
    fn.save(tmp_path / "c", small_tree())
    like = {
        "0": {"weight": np.zeros((2, 3), np.float32), "bias": np.zeros(3, np.float64)},
        "1": {"w": np.zeros(1)},
        "extra": np.zeros(2),
        "file": np.zeros(2, np.uint32),
    }
    with pytest.raises(StructureError) as info:
        fn.load(tmp_path / "c", like=like)
    message = str(info.value)
    for expected in [
        "'0.weight': expected shape (2, 3), the file has (3, 2)",
        "'0.bias': expected dtype float64, the file has float32",
        "missing '1.w': expected shape (1,) float64",
        "missing 'extra': expected shape (2,) float64",
        "unexpected '1': the file has an empty dict {}",
        "unexpected 'step': the file has shape () int64",
        str(tmp_path / "c"),
    ]:
        assert expected in message, (expected, message)
    assert "6 differences" in message
    assert not isinstance(info.value, CheckpointError)


def test_like_accepts_shape_dtype_records(tmp_path):
    tree = small_tree()
    fn.save(tmp_path / "c", tree)
    spec = fn.tree.map(lambda x: types.SimpleNamespace(shape=x.shape, dtype=x.dtype), tree)
    assert_bitwise(fn.load(tmp_path / "c", like=spec), tree)


def test_like_mismatch_is_reported_before_reading_data(tmp_path):
    fn.save(tmp_path / "c", {"w": np.zeros(100_000)})
    data = bytearray((tmp_path / "c").read_bytes())
    data[len(data) // 2] = 1  # corrupt data: a CRC error, once read
    (tmp_path / "c").write_bytes(bytes(data))
    with pytest.raises(StructureError, match="'w': expected shape"):
        fn.load(tmp_path / "c", like={"w": np.zeros(3)})


def test_like_must_be_a_tree(tmp_path):
    fn.save(tmp_path / "c", small_tree())
    with pytest.raises(TypeError, match="like="):
        fn.load(tmp_path / "c", like=[1, 2])


def test_ctrl_c_while_saving_raises_keyboardinterrupt_and_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    fn.save(path, {"a": np.zeros(3), "b": np.ones(2)})
    real_write = np.lib.format.write_array
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # mid-archive: some entries written, one half open
            raise KeyboardInterrupt
        return real_write(*args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fn.save(path, {"a": np.full(3, 5.0), "b": np.full(2, 7.0)})
    monkeypatch.undo()
    assert fn.tree.equal(fn.load(path), {"a": np.zeros(3), "b": np.ones(2)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.npz"]  # no temp file left
