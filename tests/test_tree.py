import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import funcnn as fn
from funcnn.errors import StructureError

key_names = st.text(alphabet="abcxyz_019", min_size=1, max_size=4)
leaf_arrays = st.integers(0, 3).map(lambda n: np.arange(n, dtype=np.float32))
trees = st.recursive(
    st.dictionaries(key_names, leaf_arrays, max_size=3),
    lambda children: st.dictionaries(key_names, children | leaf_arrays, max_size=3),
    max_leaves=12,
)


@given(trees)
def test_flatten_unflatten_round_trip_keeps_empty_subtrees_and_order(tree):
    flat = fn.tree.flatten(tree)
    back = fn.tree.unflatten(flat)
    assert fn.tree.equal(back, tree)
    assert list(fn.tree.flatten(back)) == list(flat)


def test_flatten_order_and_empty_dicts():
    tree = {"b": {"y": np.ones(1), "x": np.zeros(2)}, "a": {}, "c": {"d": {}}}
    flat = fn.tree.flatten(tree)
    assert list(flat) == ["b.y", "b.x", "a", "c.d"]
    assert flat["a"] == {} and flat["c.d"] == {}
    assert fn.tree.unflatten(flat) == {"b": {"y": flat["b.y"], "x": flat["b.x"]}, "a": {}, "c": {"d": {}}}


@pytest.mark.parametrize("bad", ["a.b", ""])
def test_keys_with_dots_or_empty_are_rejected(bad):
    with pytest.raises(ValueError, match="must not contain '.'"):
        fn.tree.flatten({"ok": {bad: np.ones(1)}})


def test_non_string_key_is_rejected_with_path():
    with pytest.raises(TypeError, match="under 'outer'"):
        fn.tree.flatten({"outer": {1: np.ones(1)}})


def test_map_applies_leafwise_and_checks_structure():
    a = {"w": np.ones(2), "sub": {"b": np.ones(3)}}
    b = {"sub": {"b": np.full(3, 2.0)}, "w": np.full(2, 3.0)}  # other order is fine
    out = fn.tree.map(lambda x, y: x + y, a, b)
    np.testing.assert_array_equal(out["w"], [4, 4])
    np.testing.assert_array_equal(out["sub"]["b"], [3, 3, 3])
    with pytest.raises(StructureError, match="'sub.b': missing"):
        fn.tree.map(lambda x, y: x, a, {"w": np.ones(2), "sub": {"c": np.ones(3)}})


def test_structure_errors_name_first_differing_path():
    a = {"0": {"weight": 1, "bias": 2}, "2": {"weight": 3}}
    with pytest.raises(StructureError, match=r"'2.weight': missing"):
        fn.tree.assert_same_structure(a, {"0": {"weight": 1, "bias": 2}, "2": {}})
    with pytest.raises(StructureError, match=r"'3': unexpected"):
        fn.tree.assert_same_structure(a, {**a, "3": 1})
    with pytest.raises(StructureError, match=r"'0': a dict vs a leaf"):
        fn.tree.assert_same_structure(a, {"0": 1, "2": {"weight": 3}})


def test_unflatten_rejects_conflicts():
    with pytest.raises(StructureError, match="'a' is a leaf"):
        fn.tree.unflatten({"a": np.ones(1), "a.b": np.ones(1)})


def test_tree_math():
    a = {"x": np.array([3.0, 4.0], np.float32), "y": {"z": np.array([[0.0]], np.float32)}}
    assert fn.tree.global_norm(a) == pytest.approx(5.0)
    assert fn.tree.sum_of_squares(a) == pytest.approx(25.0)
    assert fn.tree.size(a) == 3
    assert fn.tree.vdot(a, a) == pytest.approx(25.0)
    scaled = fn.tree.scale(a, 0.5)
    assert scaled["x"].dtype == np.float32
    np.testing.assert_array_equal(fn.tree.add(a, a)["x"], [6, 8])
    np.testing.assert_array_equal(fn.tree.sub(a, a)["x"], [0, 0])
    assert fn.tree.equal(fn.tree.zeros_like(a), fn.tree.full_like(a, 0))
    assert fn.tree.astype(a, np.float64)["y"]["z"].dtype == np.float64
    assert fn.tree.paths(a) == ["x", "y.z"]
    assert not fn.tree.equal(a, fn.tree.astype(a, np.float64))  # dtype counts
    assert fn.tree.allclose(a, fn.tree.astype(a, np.float64))


def test_map_with_path():
    tree = {"0": {"weight": np.ones((2, 2)), "bias": np.ones(2)}}
    out = fn.tree.map_with_path(lambda path, leaf: path, tree)
    assert out == {"0": {"weight": "0.weight", "bias": "0.bias"}}
