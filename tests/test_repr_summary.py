import numpy as np

import funcnn as fn


def seed_airfoil_model():
    return fn.serial(
        fn.Linear(5, 8), fn.ReLU(),
        fn.residual(fn.serial(fn.Linear(8, 16), fn.ReLU(), fn.ResNetBlock(16), fn.ReLU(), fn.Linear(16, 8))),
        fn.ReLU(), fn.Linear(8, 1),
    )


def test_serial_keys_match_torch_sequential():
    params = fn.serial(fn.Linear(2, 3), fn.ReLU(), fn.Linear(3, 1)).init(0)
    assert list(fn.tree.flatten(params)) == ["0.weight", "0.bias", "2.weight", "2.bias"]


def test_nested_serials_nest_dicts():
    params = seed_airfoil_model().init(0)
    assert set(params) == {"0", "2", "4"}
    assert set(params["2"]) == {"0", "2", "4"} and set(params["2"]["2"]) == {"0", "2"}


def test_repr_shows_structure():
    text = repr(seed_airfoil_model())
    assert text.splitlines()[0] == "serial("
    assert "  [2] residual(" in text
    assert "      [0] Linear(8 -> 16)" in text
    assert repr(fn.layers.LeakyReLU(0.2)) == "LeakyReLU(negative_slope=0.2)"


def test_summary_table():
    model = seed_airfoil_model()
    params = model.init(0)
    text = fn.summary(model, params)
    assert "2.2.0  Linear(16 -> 16)  weight (16, 16), bias (16,)    272" in text
    assert text.splitlines()[-1].split()[-1] == f"{fn.tree.size(params):,}"
    assert fn.tree.size(params) == sum(np.size(v) for v in fn.tree.leaves(params)) == 881
