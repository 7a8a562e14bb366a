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
