"""The examples' plots: what each figure shows (read back from the figure), and the smoothing."""

from __future__ import annotations

import numpy as np
import pytest

from funcnn.examples import plots

pytest.importorskip("matplotlib")


@pytest.fixture
def drawn(monkeypatch):
    """The figures the plot functions save, kept for inspection (they are still written)."""
    figures = []
    real_save = plots._save

    def save(fig, path):
        figures.append(fig)
        return real_save(fig, path)

    monkeypatch.setattr(plots, "_save", save)
    return figures


def labels(ax) -> list[str]:
    return [line.get_label() for line in ax.get_lines()]


def test_sine_plot_has_a_residual_panel(tmp_path, drawn):
    x = np.linspace(0, 6, 50).reshape(-1, 1)
    reference = np.sin(x)
    best = [(1e-5, reference + 0.01), (2e-5, reference - 0.02)]
    plots.best_models_vs_reference(tmp_path / "p.png", x, reference, best)
    top, bottom = drawn[0].axes
    assert labels(top)[1:] == ["Best Model 1 (Val Loss: 1e-05)", "Best Model 2 (Val Loss: 2e-05)"]
    assert bottom.get_ylabel() == "prediction - reference"
    residuals = [line.get_ydata() for line in bottom.get_lines()[1:]]  # after the zero line
    np.testing.assert_allclose(residuals, [np.full(50, 0.01), np.full(50, -0.02)], atol=1e-12)
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_airfoil_plot_is_predicted_vs_actual_with_the_diagonal_and_the_rmse(tmp_path, drawn):
    y = np.linspace(105, 140, 40).reshape(-1, 1)
    best = [(2.345, y + 1.0), (2.5, y - 1.0), (2.75, y)]
    plots.predicted_vs_actual(tmp_path / "p.png", y, best, title="airfoil")
    (ax,) = drawn[0].axes
    assert ax.get_title() == ("airfoil\nbest model: test RMSE 2.35 dB (the other kept models: "
                              "2.50, 2.75 dB)")
    points = ax.collections[0].get_offsets()
    np.testing.assert_array_equal(points[:, 0], y[:, 0])  # actual on x, predicted on y
    np.testing.assert_array_equal(points[:, 1], y[:, 0] + 1.0)
    (diagonal,) = ax.get_lines()
    np.testing.assert_array_equal(diagonal.get_xdata(), diagonal.get_ydata())
    assert ax.get_xlim() == ax.get_ylim()


@pytest.mark.parametrize("epochs, smoothed", [(150, False), (10000, True)])
def test_a_long_loss_curve_gets_a_moving_average_over_the_raw_one(tmp_path, drawn, epochs,
                                                                  smoothed):
    rng = np.random.default_rng(0)
    trend = np.geomspace(10.0, 0.01, epochs)
    history = {"train_loss": trend * rng.lognormal(0, 0.5, epochs),
               "val_loss": trend * rng.lognormal(0, 0.5, epochs)}
    plots.loss_curves(tmp_path / "loss.png", history, best_epoch=3)
    (ax,) = drawn[0].axes
    assert ax.get_yscale() == "log"
    if not smoothed:
        assert labels(ax)[:2] == ["train (mean over the epoch's batches)",
                                  "validation (after the epoch)"]
        return
    assert labels(ax)[:4] == [
        "train, raw (mean over the epoch's batches)", "train, moving average over 201 epochs",
        "validation, raw (after the epoch)", "validation, moving average over 201 epochs"]
    raw, average = (ax.get_lines()[i].get_ydata() for i in (0, 1))
    assert np.std(np.log(average / trend)) < 0.2 * np.std(np.log(raw / trend))  # the noise goes
    assert ax.get_lines()[0].get_alpha() < 1 and ax.get_lines()[1].get_linewidth() > 1


def test_moving_average_is_a_centred_geometric_mean_shorter_at_the_ends_without_nans():
    v = np.array([1.0, 100.0, 1.0, np.nan, 10.0])
    got = plots._moving_average(v, 3)
    geo = lambda *a: float(np.exp(np.mean(np.log(a))))
    np.testing.assert_allclose(got, [geo(1, 100), geo(1, 100, 1), geo(100, 1), geo(1, 10),
                                     geo(10)], rtol=1e-12)
    with_zero = plots._moving_average(np.array([0.0, 2.0, 4.0]), 3)  # no log of 0: arithmetic
    np.testing.assert_allclose(with_zero, [1.0, 2.0, 3.0])
    assert np.isnan(plots._moving_average(np.array([np.nan, np.nan]), 3)).all()
    assert [plots._smoothing_window(n) for n in (1, 200, 201, 1000, 10000)] == [1, 1, 5, 21, 201]


def test_loss_and_accuracy_draws_the_loss_beside_the_accuracy_in_percent(tmp_path, drawn):
    history = {"train_loss": np.array([2.0, 0.5, 0.2]), "val_loss": np.array([1.0, 0.4, 0.3])}
    accuracy = {"train": [0.5, 0.9, 0.97], "validation": [0.6, 0.88, 0.95]}
    plots.loss_and_accuracy(tmp_path / "loss.png", history, accuracy, best_epoch=3,
                            ylabel="softmax cross-entropy", title="digits")
    left, right = drawn[0].axes
    assert left.get_ylabel() == "softmax cross-entropy" and left.get_yscale() == "log"
    np.testing.assert_array_equal(left.get_lines()[1].get_ydata(), history["val_loss"])
    train, val, best = right.get_lines()
    np.testing.assert_allclose(train.get_ydata(), [50.0, 90.0, 97.0])
    np.testing.assert_allclose(val.get_ydata(), [60.0, 88.0, 95.0])
    np.testing.assert_array_equal(val.get_xdata(), [1, 2, 3])  # epochs count from 1
    assert best.get_label() == "best model (epoch 3)" and list(best.get_xdata()) == [3, 3]
    assert right.get_ylabel() == "accuracy (%)" and right.get_ylim()[1] > 100
    assert drawn[0].get_suptitle() == "digits"


def test_confusion_matrix_writes_every_nonzero_count_in_its_cell(tmp_path, drawn):
    counts = np.diag([30, 31, 32])
    counts[2, 0] = 4  # four 2s taken for 0s
    plots.confusion_matrix(tmp_path / "c.png", counts, title="test")
    ax = drawn[0].axes[0]
    np.testing.assert_array_equal(ax.images[0].get_array(), counts)
    cells = {(int(t.get_position()[1]), int(t.get_position()[0])): t.get_text() for t in ax.texts}
    assert cells == {(0, 0): "30", (1, 1): "31", (2, 2): "32", (2, 0): "4"}
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted digit", "true digit")
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("n", [0, 3, 9])
def test_misclassified_digits_shows_each_image_with_its_labels(tmp_path, drawn, monkeypatch, n):
    monkeypatch.setattr(plots, "MAX_SHOWN", 6)  # 48 in the examples; fewer draw faster
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (n, 8, 8))
    labels, predicted = list(range(n)), [(i + 1) % 10 for i in range(n)]
    plots.misclassified_digits(tmp_path / "m.png", images, labels, predicted, total=355)
    fig = drawn[0]
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == min(n, plots.MAX_SHOWN)
    for i, ax in enumerate(shown):
        np.testing.assert_array_equal(ax.images[0].get_array(), images[i])
        assert ax.get_title() == f"true {labels[i]}, predicted {predicted[i]}"
    more = f" (the first {plots.MAX_SHOWN})" if n > plots.MAX_SHOWN else ""
    assert fig.get_suptitle() == f"Misclassified test digits: {n} of 355{more}"
    if n == 0:
        (text,) = fig.axes[0].texts
        assert text.get_text() == "every test digit is classified correctly"
