import numpy as np
import pytest

import funcnn as fn


def test_same_key_same_params_bitwise_and_int_seed_means_key():
    model = fn.serial(fn.Linear(3, 8), fn.ReLU(), fn.Linear(8, 2))
    a = model.init(fn.random.key(7))
    b = model.init(fn.random.key(7))
    c = model.init(7)
    assert fn.tree.equal(a, b) and fn.tree.equal(a, c)


def test_different_keys_give_different_params():
    model = fn.Linear(3, 8)
    assert not np.array_equal(model.init(0)["weight"], model.init(1)["weight"])


def test_serial_gives_each_child_its_own_key():
    model = fn.serial(fn.Linear(4, 4), fn.Linear(4, 4))
    params = model.init(0)
    assert not np.array_equal(params["0"]["weight"], params["1"]["weight"])


def test_split_is_deterministic_and_distinct():
    k = fn.random.key(3)
    s1, s2 = fn.random.split(k, 5), fn.random.split(k, 5)
    assert s1.shape == (5, 2) and s1.dtype == np.uint32
    np.testing.assert_array_equal(s1, s2)
    assert len({tuple(row) for row in s1}) == 5
    a, b = fn.random.split(k)
    assert not np.array_equal(a, b)


def test_no_global_rng_is_touched():
    np.random.seed(0)
    before = np.random.get_state()[1].copy()
    fn.serial(fn.Linear(3, 3), fn.ReLU()).init(0)
    fn.random.permutation(1, 10)
    np.testing.assert_array_equal(np.random.get_state()[1], before)


def test_bad_keys_are_clear_errors():
    with pytest.raises(TypeError, match="expected a key"):
        fn.Linear(2, 2).init(np.zeros(3))
    with pytest.raises(TypeError, match="seed must be an int"):
        fn.random.key(1.5)
    with pytest.raises(ValueError, match="num must be a positive int"):
        fn.random.split(0, 0)


def test_fold_in_and_samplers():
    k = fn.random.key(0)
    assert not np.array_equal(fn.random.fold_in(k, 1), fn.random.fold_in(k, 2))
    assert fn.random.normal(k, (3,), np.float32).dtype == np.float32
    u = fn.random.uniform(k, (100,), -1, 1)
    assert u.min() >= -1 and u.max() < 1
    assert sorted(fn.random.permutation(k, 6)) == list(range(6))
