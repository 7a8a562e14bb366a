"""funcnn.ops.embedding: lookup and its gradient equal torch's; repeated indices; errors."""

import numpy as np
import pytest
from helpers.arrays import frozen
from hypothesis import given
from hypothesis import strategies as st

from funcnn.errors import InputTypeError, InputValueError, LayerError
from funcnn.ops.embedding import check_indices, embedding_backward, embedding_forward

torch = pytest.importorskip("torch")




@given(rows=st.integers(1, 40), dim=st.integers(1, 6),
       shape=st.lists(st.integers(0, 5), min_size=0, max_size=3).map(tuple),
       dtype=st.sampled_from([np.int64, np.int32, np.uint8, np.intp]), seed=st.integers(0, 2**16))
def test_forward_and_grad_equal_torch(rows, dim, shape, dtype, seed):
    rng = np.random.default_rng(seed)
    weight = frozen(rng.standard_normal((rows, dim)))
    indices = frozen(rng.integers(0, min(rows, 256), shape).astype(dtype))
    y, saved = embedding_forward(check_indices(indices, rows), weight)
    dy = frozen(rng.standard_normal(y.shape))
    dweight = embedding_backward(saved, dy)
    wt = torch.tensor(np.array(weight), requires_grad=True)
    yt = torch.nn.functional.embedding(torch.tensor(indices.astype(np.int64)), wt)
    yt.backward(torch.tensor(np.array(dy)))
    assert y.shape == (*shape, dim) and dweight.shape == (rows, dim)
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_allclose(dweight, wt.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("rows", [3, 1000])  # both reductions: bincount (rows <= n), np.add.at
def test_repeated_indices_sum_their_grads_and_unused_rows_get_zero(rows):
    indices = np.array([[1, 2, 1], [1, 0, 2]])
    weight = np.arange(rows * 2, dtype=np.float64).reshape(rows, 2)
    _y, saved = embedding_forward(indices, weight)
    dy = np.arange(12, dtype=np.float64).reshape(2, 3, 2)
    dweight = embedding_backward(saved, dy)
    expected = np.zeros((rows, 2))
    expected[0] = dy[1, 1]
    expected[1] = dy[0, 0] + dy[0, 2] + dy[1, 0]
    expected[2] = dy[0, 1] + dy[1, 2]
    np.testing.assert_array_equal(dweight, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows", [4, 1000])
def test_dtype_kept_and_grads_written_into_the_given_output(dtype, rows):
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((rows, 3)).astype(dtype)
    indices = rng.integers(0, 4, (5, 7))
    y, saved = embedding_forward(indices, weight)
    assert y.dtype == dtype
    dy = rng.standard_normal(y.shape).astype(dtype)
    flat = np.full(rows * 3 + 2, np.nan, dtype)
    out = flat[1:-1].reshape(rows, 3)
    assert embedding_backward(saved, dy, dweight_out=out) is out
    assert np.isnan(flat[0]) and np.isnan(flat[-1])
    expected = np.zeros((rows, 3))
    np.add.at(expected, indices.ravel(), dy.reshape(-1, 3).astype(np.float64))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, expected, rtol=tol, atol=tol * np.abs(expected).max())
    assert out.dtype == dtype
    with pytest.raises(ValueError, match=rf"must have the table's shape \({rows}, 3\), got \(3, 3\)"):
        embedding_backward(saved, dy, dweight_out=np.zeros((3, 3), dtype))


@pytest.mark.parametrize("indices, error, message", [
    (np.array([[1, 2], [3, 12]]), InputValueError,
     r"index 12 at position \(1, 1\) is out of range for 10 embeddings \(0..9\)"),
    (np.array([0, -1]), InputValueError, r"index -1 at position \(1,\) is out of range"),
    (np.array([1.0, 2.0]), InputTypeError, r"expected an integer array of indices, got dtype float64"),
    (np.array([True]), InputTypeError, r"got dtype bool"),
    ([1, 2], InputTypeError, r"expected an integer array of indices, got list"),
])
def test_bad_indices(indices, error, message):
    with pytest.raises(error, match=message) as info:
        check_indices(indices, 10)
    assert isinstance(info.value, LayerError)  # a layer wrapping the op can add its name


def test_empty_indices_are_fine():
    y, saved = embedding_forward(check_indices(np.zeros((0, 3), np.int64), 5), np.ones((5, 2)))
    assert y.shape == (0, 3, 2)
    np.testing.assert_array_equal(embedding_backward(saved, np.ones((0, 3, 2))), np.zeros((5, 2)))
