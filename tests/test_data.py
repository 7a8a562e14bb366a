"""fn.data: batching invariants, splits with the seed's arithmetic, standardization."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from funcnn import data, random, tree
from funcnn.errors import StructureError


def frozen(a):
    a = np.array(a)
    a.setflags(write=False)
    return a


def labelled(n, features=2, dtype=np.float64):
    """x row i holds i (and i + 0.5); y row i holds -i, so pairs and order are visible."""
    x = np.stack([np.arange(n), np.arange(n) + 0.5], axis=1)[:, :features].astype(dtype)
    return frozen(x), frozen(-np.arange(n, dtype=dtype)[:, None])


sizes = st.integers(1, 200)
batch_sizes = st.integers(1, 70)
seeds = st.integers(0, 2**32 - 1)


# --- batches ---------------------------------------------------------------------


@given(n=sizes, batch_size=batch_sizes, seed=seeds, shuffle=st.booleans())
def test_every_sample_exactly_once_and_pairs_kept(n, batch_size, seed, shuffle):
    x, y = labelled(n)
    out = list(data.batches(x, y, batch_size, key=seed, shuffle=shuffle))
    xs = np.concatenate([xb for xb, _ in out])
    ys = np.concatenate([yb for _, yb in out])
    assert sorted(xs[:, 0].tolist()) == list(range(n))
    np.testing.assert_array_equal(ys[:, 0], -xs[:, 0])  # x and y rows stay paired
    np.testing.assert_array_equal(xs[:, 1], xs[:, 0] + 0.5)  # rows are not torn apart
    assert len(out) == data.num_batches(n, batch_size)


@given(n=sizes, batch_size=batch_sizes, seed=seeds)
def test_batch_sizes_and_the_short_last_batch(n, batch_size, seed):
    x, y = labelled(n)
    lengths = [len(xb) for xb, _ in data.batches(x, y, batch_size, key=seed)]
    full, rest = divmod(n, batch_size)
    assert lengths == [batch_size] * full + ([rest] if rest else [])


@given(n=sizes, batch_size=batch_sizes, seed=seeds)
def test_order_depends_only_on_key_and_n(n, batch_size, seed):
    x, y = labelled(n)
    order = np.concatenate([xb[:, 0] for xb, _ in data.batches(x, y, batch_size, key=seed)])
    np.testing.assert_array_equal(order, random.permutation(seed, n))
    # another batch size, other data of the same length, the key as an array: same order
    ranks = frozen(np.arange(n, dtype=np.int32)[:, None])
    other = np.concatenate(list(data.batches(ranks, None, 7, key=random.key(seed))))
    np.testing.assert_array_equal(other[:, 0], order)


@given(seed=seeds, n=st.integers(20, 200))
def test_same_key_same_batches_different_key_different_order(seed, n):
    x, y = labelled(n)
    first = [xb for xb, _ in data.batches(x, y, 8, key=seed)]
    again = [xb for xb, _ in data.batches(x, y, 8, key=seed)]
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    other = np.concatenate([xb for xb, _ in data.batches(x, y, 8, key=seed ^ 1)])
    assert not np.array_equal(np.concatenate(first), other)  # P(equal) = 1/n! <= 1/20!


def test_epochs_with_fold_in_give_new_orders():
    x, y = labelled(50)
    orders = [
        np.concatenate([xb[:, 0] for xb, _ in data.batches(x, y, 16, key=random.fold_in(0, e))])
        for e in range(3)
    ]
    assert not np.array_equal(orders[0], orders[1])
    assert not np.array_equal(orders[1], orders[2])


@given(n=sizes, batch_size=batch_sizes, seed=seeds)
def test_drop_last_drops_only_the_short_final_batch(n, batch_size, seed):
    x, y = labelled(n)
    kept = [xb for xb, _ in data.batches(x, y, batch_size, key=seed)]
    if n < batch_size:
        with pytest.raises(ValueError, match="leaves no batch"):
            data.batches(x, y, batch_size, key=seed, drop_last=True)
        return
    dropped = [xb for xb, _ in data.batches(x, y, batch_size, key=seed, drop_last=True)]
    expected = kept[:-1] if n % batch_size else kept
    assert len(dropped) == len(expected) == data.num_batches(n, batch_size, drop_last=True)
    for a, b in zip(dropped, expected, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
@pytest.mark.parametrize("shuffle", [True, False])
def test_batch_dtypes_and_shapes(dtype, shuffle):
    x = frozen(np.arange(7 * 3 * 2).reshape(7, 3, 2).astype(dtype))
    y = frozen(np.arange(7).astype(np.int32))
    for xb, yb in data.batches(x, y, 3, key=1, shuffle=shuffle):
        assert xb.dtype == dtype and yb.dtype == np.int32
        assert xb.shape[1:] == (3, 2) and yb.shape == (len(xb),)


def test_unshuffled_batches_are_in_order_and_need_no_key():
    x, _ = labelled(5)
    out = list(data.batches(x, None, 2, shuffle=False))
    np.testing.assert_array_equal(np.concatenate(out)[:, 0], np.arange(5))
    assert [len(b) for b in out] == [2, 2, 1]


def test_y_none_yields_x_batches_only():
    x, _ = labelled(4)
    out = list(data.batches(x, None, 3, key=0))
    assert all(isinstance(b, np.ndarray) for b in out)
    assert [len(b) for b in out] == [3, 1]


def test_accepts_lists():
    out = list(data.batches([1.0, 2.0, 3.0], [4.0, 5.0, 6.0], 2, shuffle=False))
    np.testing.assert_array_equal(out[0][1], [4.0, 5.0])


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"x": np.zeros((5, 2)), "y": np.zeros((4, 1))}, ValueError, r"len\(x\)=5 and len\(y\)=4"),
        ({"x": np.zeros((0, 2)), "y": None}, ValueError, "x is empty"),
        ({"x": np.zeros((3,)), "y": np.zeros((0,))}, ValueError, "y is empty"),
        ({"x": np.float64(1.0), "y": None}, ValueError, "first \\(sample\\) axis"),
        ({"batch_size": 0}, ValueError, "batch_size must be positive, got 0"),
        ({"batch_size": -3}, ValueError, "batch_size must be positive, got -3"),
        ({"batch_size": 2.0}, TypeError, "batch_size must be an int, got 2.0"),
        ({"batch_size": True}, TypeError, "batch_size must be an int"),
        ({"key": None}, ValueError, "shuffle=True needs key="),
        ({"key": 1.5}, TypeError, "int seed"),
    ],
)
def test_batches_errors_are_raised_at_call_time(kwargs, error, message):
    args = {"x": np.zeros((5, 2)), "y": np.zeros((5, 1)), "batch_size": 2, "key": 0}
    args.update(kwargs)
    x, y, batch_size = args.pop("x"), args.pop("y"), args.pop("batch_size")
    with pytest.raises(error, match=message):
        data.batches(x, y, batch_size, **args)  # no next(): errors come before iterating


@pytest.mark.parametrize(
    "n, batch_size, drop_last, expected",
    [
        (0, 3, False, 0),
        (9, 3, False, 3),
        (10, 3, False, 4),
        (10, 3, True, 3),
        (2, 3, True, 0),
        (5000, 64, False, 79),
        (751, 16, False, 47),
    ],
)
def test_num_batches(n, batch_size, drop_last, expected):
    assert data.num_batches(n, batch_size, drop_last) == expected


def test_num_batches_errors():
    with pytest.raises(ValueError, match="batch_size must be positive"):
        data.num_batches(10, 0)
    with pytest.raises(ValueError, match="n must be >= 0"):
        data.num_batches(-1, 2)
    with pytest.raises(TypeError, match="n must be an int"):
        data.num_batches(10.0, 2)


# --- split -----------------------------------------------------------------------


@given(n=st.integers(10, 3000), seed=seeds)
def test_split_sizes_follow_the_seed_arithmetic(n, seed):
    parts = data.split_indices(seed, n)
    n_train, n_val = int(0.5 * n), int(0.2 * n)
    assert [len(p) for p in parts] == [n_train, n_val, n - n_train - n_val]
    joined = np.concatenate(parts)
    assert sorted(joined.tolist()) == list(range(n))  # disjoint and covering
    np.testing.assert_array_equal(joined, random.permutation(seed, n))  # seed's slicing


def test_split_of_airfoil_size():
    assert [len(p) for p in data.split_indices(0, 1503)] == [751, 300, 452]


@given(n=st.integers(4, 300), seed=seeds, f=st.floats(0.05, 0.95))
def test_split_two_parts_and_pairing(n, seed, f):
    x, y = labelled(n)
    if int(f * n) in (0, n):
        with pytest.raises(ValueError, match="would be empty"):
            data.split(seed, x, y, fractions=(f, 1 - f))
        return
    (x_a, y_a), (x_b, y_b) = data.split(seed, x, y, fractions=(f, 1 - f))
    assert len(x_a) == int(f * n) and len(x_b) == n - int(f * n)
    for xs, ys in ((x_a, y_a), (x_b, y_b)):
        np.testing.assert_array_equal(ys[:, 0], -xs[:, 0])
    assert not set(x_a[:, 0]) & set(x_b[:, 0])


def test_split_same_key_same_split_and_keeps_dtype():
    x = frozen(np.arange(40, dtype=np.float32).reshape(20, 2))
    a = data.split(3, x)
    b = data.split(random.key(3), x)
    for (pa,), (pb,) in zip(a, b, strict=True):
        np.testing.assert_array_equal(pa, pb)
        assert pa.dtype == np.float32
    c = data.split(4, x)
    assert not np.array_equal(a[0][0], c[0][0])


@pytest.mark.parametrize(
    "fractions, message",
    [
        ((0.5, 0.2, 0.2), "must sum to 1"),
        ((0.5, 0.6, -0.1), "positive"),
        ((0.5, 0.0, 0.5), "positive"),
        ((1.0,), "two or more"),
        ((0.5, float("nan"), 0.5), "positive"),
        (("a", "b"), "sequence of numbers"),
    ],
)
def test_split_rejects_bad_fractions(fractions, message):
    with pytest.raises((ValueError, TypeError), match=message):
        data.split(0, np.zeros((10, 1)), fractions=fractions)


def test_split_fractions_within_tolerance_are_fine():
    parts = data.split_indices(0, 100, (0.1, 0.2, 0.7 + 1e-12))
    assert [len(p) for p in parts] == [10, 20, 70]


def test_split_errors():
    with pytest.raises(ValueError, match=r"len\(arrays\[0\]\)=5, len\(arrays\[1\]\)=4"):
        data.split(0, np.zeros(5), np.zeros(4))
    with pytest.raises(TypeError, match="at least one array"):
        data.split(0)
    with pytest.raises(ValueError, match=r"sizes \(1, 0, 2\); part 1 would be empty"):
        data.split(0, np.zeros(3))
    with pytest.raises(ValueError, match="arrays\\[0\\] is empty"):
        data.split(0, np.zeros((0, 2)))


# --- standardization -------------------------------------------------------------


def test_standardizer_uses_the_training_split_only():
    rng = np.random.default_rng(0)
    x = frozen(rng.normal(3.0, 2.0, size=(200, 3)) * [1.0, 10.0, 0.1])
    (x_train,), (x_val,), _ = data.split(0, x)
    stats = data.fit_standardizer(x_train)
    np.testing.assert_allclose(stats["mean"], x_train.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats["std"], x_train.std(axis=0), rtol=1e-12)
    z_train, z_val = data.standardize(stats, x_train), data.standardize(stats, x_val)
    np.testing.assert_allclose(z_train.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(z_train.std(axis=0), 1.0, rtol=1e-12)
    np.testing.assert_allclose(z_val, (x_val - x_train.mean(0)) / x_train.std(0), rtol=1e-12)
    assert not np.allclose(z_val.mean(axis=0), 0.0, atol=1e-6)  # val is not re-centred


@given(seed=seeds, n=st.integers(1, 50), dtype=st.sampled_from([np.float32, np.float64]))
def test_unstandardize_inverts_standardize(seed, n, dtype):
    y = frozen(np.random.default_rng(seed).normal(120.0, 7.0, size=(n, 1)).astype(dtype))
    stats = data.fit_standardizer(y)
    z = data.standardize(stats, y)
    back = data.unstandardize(stats, z)
    assert z.dtype == back.dtype == stats["mean"].dtype == stats["std"].dtype == dtype
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(back, y, rtol=tol)


def test_constant_columns_get_std_one_and_map_to_zero():
    x = frozen(np.array([[0.1, 5.0, 0.0], [0.1, 7.0, 0.0], [0.1, 9.0, 0.0]]))
    stats = data.fit_standardizer(x)
    np.testing.assert_array_equal(stats["std"][[0, 2]], [1.0, 1.0])
    z = data.standardize(stats, x)
    np.testing.assert_array_equal(z[:, [0, 2]], 0.0)  # exactly, no 1e-17 residue
    np.testing.assert_allclose(z[:, 1], [-1.2247448713915890, 0.0, 1.2247448713915890])
    single = data.fit_standardizer(x[:1])
    np.testing.assert_array_equal(single["std"], 1.0)


def test_integer_inputs_standardize_to_float64():
    stats = data.fit_standardizer(np.array([[1], [3]]))
    assert stats["mean"].dtype == np.float64
    np.testing.assert_array_equal(data.standardize(stats, np.array([[1], [3]])), [[-1.0], [1.0]])


def test_stats_save_and_load_as_plain_arrays(tmp_path):
    stats = data.fit_standardizer(frozen(np.arange(12.0).reshape(4, 3) ** 2))
    np.savez(tmp_path / "stats.npz", **tree.flatten(stats))
    with np.load(tmp_path / "stats.npz", allow_pickle=False) as f:
        loaded = tree.unflatten({k: f[k] for k in f.files})
    assert tree.equal(loaded, stats)


def test_standardize_errors():
    stats = data.fit_standardizer(np.zeros((4, 3)) + np.arange(4.0)[:, None])
    with pytest.raises(
        ValueError, match=r"stats\['mean'\] has shape \(3,\) but x has samples of shape \(2,\)"
    ):
        data.standardize(stats, np.zeros((4, 2)))
    with pytest.raises(StructureError, match="'mean', 'std'"):
        data.standardize({"mean": stats["mean"]}, np.zeros((4, 3)))
    with pytest.raises(ValueError, match="must be finite"):
        data.fit_standardizer(np.array([[1.0], [np.inf]]))
    with pytest.raises(ValueError, match="must be finite, got nan at index \\(1, 0\\)"):
        data.unstandardize(stats, np.array([[1.0, 1.0, 1.0], [np.nan, 1.0, 1.0]]))
    with pytest.raises(TypeError, match="real numbers"):
        data.fit_standardizer(np.array([[1 + 1j]]))
    with pytest.raises(ValueError, match="x is empty"):
        data.fit_standardizer(np.zeros((0, 3)))


def test_fit_standardizer_does_not_overflow_in_float32():
    x = frozen(np.array([[3e30], [-3e30]], dtype=np.float32))  # x**2 overflows float32
    stats = data.fit_standardizer(x)
    np.testing.assert_allclose(stats["std"], [3e30], rtol=1e-6)
