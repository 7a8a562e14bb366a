"""Build the tutorial notebooks from the cells below: ``python notebooks/build_notebooks.py``.

The notebooks are generated so that a change shows up as a readable diff of this file,
and they are committed without outputs. Every notebook reads ``FUNCNN_NOTEBOOK_EPOCHS``
(CI sets it to 2 and runs them top to bottom, see tests/test_notebooks.py); unset, it
trains for the tutorial's epochs. The airfoil notebook reads the data from
``FUNCNN_AIRFOIL_PATH`` if set, else from funcnn's cache (downloading it once).

Needs ``pip install 'funcnn[notebooks]'`` (nbformat).
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent


def md(text: str):
    return new_markdown_cell(text.strip("\n"))


def code(text: str):
    return new_code_cell(text.strip("\n"))


def setup(default_epochs: int, extra: str = "") -> str:
    return f'''
import os

import matplotlib.pyplot as plt
import numpy as np

import funcnn as fn

# CI runs every notebook with FUNCNN_NOTEBOOK_EPOCHS=2 so that they never rot;
# unset, the tutorial's number of epochs is used.
EPOCHS = int(os.environ.get("FUNCNN_NOTEBOOK_EPOCHS", {default_epochs}))
{extra}'''


XOR = [
    md("""
# XOR: by hand, then with funcnn

The tutorial starts with the smallest network that needs a hidden layer: two
inputs, two sigmoid units, one sigmoid output, trained on the four XOR points by
full-batch gradient descent (learning rate 0.1, 10000 epochs) on the squared error
$L = \\frac{1}{2}\\sum_i (a^{(2)}_i - y_i)^2$, with the backward pass written out by hand.

This notebook runs the tutorial's code unchanged, then does the same training with funcnn
and checks that both give the same numbers. From a shell:
`python -m funcnn.examples xor`.
"""),
    code(setup(10000)),
    md("""
## By hand: the tutorial's code

Forward pass, error, the two deltas of backpropagation, and the update, exactly as in
the tutorial (with `epochs = EPOCHS`).
"""),
    code("""
np.random.seed(0)
# Activation functions and their derivatives
def sigmoid(x):
    return 1 / (1 + np.exp(-x))

def sigmoid_deriv(output):
    return output * (1 - output)

# XOR dataset
X_xor = np.array([[0, 0],
                  [0, 1],
                  [1, 0],
                  [1, 1]], dtype=float)
y_xor = np.array([[0],
                  [1],
                  [1],
                  [0]], dtype=float)

# Network architecture: 2 inputs -> 2 hidden neurons -> 1 output
input_dim = 2
hidden_dim = 2
output_dim = 1

# Weight initialization
np.random.seed(0)
W1 = np.random.randn(input_dim, hidden_dim) * 0.5
b1 = np.random.randn(hidden_dim) * 0.5
W2 = np.random.randn(hidden_dim, output_dim) * 0.5
b2 = np.random.randn(output_dim) * 0.5

# Training parameters
learning_rate = 0.1
epochs = EPOCHS

# Training loop for XOR
for epoch in range(epochs):
    # Forward pass
    z1 = X_xor.dot(W1) + b1
    a1 = sigmoid(z1)
    z2 = a1.dot(W2) + b2
    y_pred = sigmoid(z2)
    if epoch%1000 == 0:
        print("XOR Predictions in epoch ", epoch, y_pred.ravel())
    # Compute error
    error = y_xor - y_pred

    # Backpropagation
    d_out = error * sigmoid_deriv(y_pred)
    grad_W2 = a1.T.dot(d_out)
    grad_b2 = np.sum(d_out, axis=0)

    error_hidden = d_out.dot(W2.T)
    d_hidden = error_hidden * sigmoid_deriv(a1)
    grad_W1 = X_xor.T.dot(d_hidden)
    grad_b1 = np.sum(d_hidden, axis=0)

    # Update weights and biases
    W2 += learning_rate * grad_W2
    b2 += learning_rate * grad_b2
    W1 += learning_rate * grad_W1
    b1 += learning_rate * grad_b1

# Evaluate the network on XOR inputs
z1 = X_xor.dot(W1) + b1
a1 = sigmoid(z1)
z2 = a1.dot(W2) + b2
y_pred = sigmoid(z2)
print("XOR Predictions after training:", y_pred.ravel())
"""),
    md("""
## With funcnn

The same network is a `serial` of layers. funcnn stores a Linear layer's weight as
`(out, in)` (torch's layout), so the tutorial's `W1` of shape `(in, out)` goes in
transposed. We draw the tutorial's initial values from a private `RandomState(0)` in the
tutorial's order: the same numbers as `np.random.seed(0); np.random.randn(...)`.
"""),
    code("""
L = fn.layers
model = fn.serial(L.Linear(2, 2, dtype=np.float64), L.Sigmoid(),
                  L.Linear(2, 1, dtype=np.float64), L.Sigmoid())

rs = np.random.RandomState(0)
w1, b1_init = rs.randn(2, 2) * 0.5, rs.randn(2) * 0.5
w2, b2_init = rs.randn(2, 1) * 0.5, rs.randn(1) * 0.5
init_params = {"0": {"weight": w1.T.copy(), "bias": b1_init},
               "2": {"weight": w2.T.copy(), "bias": b2_init}}
print(fn.summary(model, init_params))
"""),
    md("""
The tutorial's loss is half the *sum* of squared errors over the four points, whose
gradient with respect to the output is `pred - y` (the tutorial's `-error`).
`fn.losses.mse` is the *mean*, four times smaller, so we write the tutorial's loss with
`make_loss`: a value and its exact gradient. The layers' pullbacks do the rest of
backpropagation.
"""),
    code("""
@fn.losses.make_loss
def half_sse(pred, target):
    d = pred - target
    return 0.5 * np.sum(d * d), d

x, y = fn.datasets.xor()
step = fn.value_and_grad(model, half_sse)   # (params, x, y) -> (loss, grads)
opt = fn.optim.sgd(0.1)

params, opt_state = init_params, opt.init(init_params)
losses = []
for epoch in range(EPOCHS):
    if epoch % 1000 == 0:
        print("XOR Predictions in epoch ", epoch, model.apply(params, x).ravel())
    loss, grads = step(params, x, y)
    params, opt_state = opt.update(grads, opt_state, params)
    losses.append(loss)

fn_pred = model.apply(params, x).ravel()
print("XOR Predictions after training:", fn_pred)
"""),
    code("""
print("largest difference to the hand-written version:", np.max(np.abs(fn_pred - y_pred.ravel())))
np.testing.assert_allclose(fn_pred, y_pred.ravel(), rtol=1e-10)
np.testing.assert_allclose(params["0"]["weight"], W1.T, rtol=1e-10, atol=1e-14)
"""),
    md("""
## The same with `fn.fit`

`fn.fit` runs that loop for us. With one batch of all four points (`batch_size=4`,
`shuffle=False`) it is the same gradient descent, step for step. Its progress prints
one line per epoch, so we keep it silent here.
"""),
    code("""
result = fn.fit(model, half_sse, fn.optim.sgd(0.1), init_params, (x, y), epochs=EPOCHS,
                batch_size=4, shuffle=False, key=0, keep_best=1, progress="silent")
print("fit gives the same params as the loop:", fn.tree.allclose(result.params, params, rtol=1e-12))
assert fn.tree.allclose(result.params, params, rtol=1e-12)
"""),
    md("""
## Plots

Left: the network's output over the unit square, with the four XOR points coloured by
their target. Right: the loss per epoch.
"""),
    code("""
grid = np.linspace(-0.25, 1.25, 101)
g0, g1 = np.meshgrid(grid, grid)
z = model.apply(params, np.column_stack([g0.ravel(), g1.ravel()])).reshape(g0.shape)

fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 4.5))
surface = ax0.contourf(g0, g1, z, levels=np.linspace(0, 1, 11), cmap="coolwarm")
fig.colorbar(surface, ax=ax0, label="network output")
ax0.scatter(x[:, 0], x[:, 1], c=y[:, 0], cmap="coolwarm", vmin=0, vmax=1, s=150, edgecolors="black")
ax0.set(title="XOR: network output and targets", xlabel="x0", ylabel="x1")
ax1.semilogy(np.arange(1, len(losses) + 1), losses)
ax1.set(title="loss per epoch", xlabel="epoch", ylabel="0.5 * sum of squared errors")
plt.show()
"""),
]


def sine_notebook(arch: str) -> list:
    if arch == "mlp":
        title = "sin(x) with the tutorial's MLP"
        model_src = """
L = fn.layers
model = fn.serial(
    L.Linear(1, 16),
    L.ReLU(),
    L.Linear(16, 16),
    L.ReLU(),
    L.Linear(16, 1),
)"""
        about = ("A multilayer perceptron with two hidden layers of 16 ReLU units, "
                 "He-initialised (weights `normal(0, sqrt(2 / fan_in))`, biases zero).")
    else:
        title = "sin(x) with the tutorial's ResNet"
        model_src = """
L = fn.layers
model = fn.serial(
    L.Linear(1, 16),     # initial projection to a higher-dimensional space
    L.ReLU(),
    L.ResNetBlock(16),   # x + Linear(ReLU(Linear(x))): three residual blocks
    L.ResNetBlock(16),
    L.ResNetBlock(16),
    L.Linear(16, 1),     # final projection back to the output dimension
)"""
        about = ("The tutorial's ResNet: a projection to 16 features, three residual blocks "
                 "`y = x + Linear(ReLU(Linear(x)))` (`fn.layers.ResNetBlock`, built from "
                 "`fn.residual` and `fn.serial`), and a projection back to one output.")
    cli = f"python -m funcnn.examples sine-{arch}"
    return [
        md(f"""
# {title}

The tutorial's regression task: 5000 evenly spaced points $x \\in [0, 2\\pi]$ with targets
$\\sin x$; the validation points lie halfway between the training points. Loss
$\\frac{{1}}{{2}}\\,\\mathrm{{mean}}\\,(\\hat y - y)^2$, Adam with learning rate 0.01 and weight
decay $10^{{-6}}$, batches of 64 reshuffled every epoch, 1000 epochs, and the best 3
models by validation loss. From a shell: `{cli}`.
"""),
        code(setup(1000)),
        code("""
data = fn.datasets.sine(dtype=np.float32)
print({name: a.shape for name, a in data._asdict().items()})
"""),
        md(f"## The model\n\n{about}"),
        code(model_src + """

init_key, fit_key = fn.random.split(0)   # funcnn has no global RNG: keys are explicit
params = model.init(init_key)
print(fn.summary(model, params))
"""),
        md("""
## Training

`fn.fit` shuffles the training set every epoch (the order comes from `fit_key`),
evaluates the validation loss after each epoch and keeps the best 3 models. Params are
never changed in place, so keeping a model costs no copy. `progress="lines"` would print
one line per epoch; here we keep the notebook short and plot the history instead.
"""),
        code("""
result = fn.fit(
    model, fn.losses.mse, fn.optim.adam(0.01, weight_decay=1e-6), params,
    (data.x_train, data.y_train), val=(data.x_val, data.y_val),
    epochs=EPOCHS, batch_size=64, key=fit_key, keep_best=3, progress="silent",
)
for i, best in enumerate(result.best, 1):
    print(f"best model {i}: epoch {best.epoch}, validation MSE {best.loss:.4g}")
"""),
        md("## The tutorial's plot: the best 3 models vs the reference"),
        code("""
plt.figure(figsize=(8, 5))
plt.plot(data.x_val, data.y_val, label="Reference (sin)", color="black", linewidth=2)
for i, best in enumerate(result.best, 1):
    predictions = model.apply(best.params, data.x_val)
    plt.plot(data.x_val, predictions, linestyle="--",
             label=f"Best Model {i} (Val Loss: {best.loss:.4g})")
plt.xlabel("x")
plt.ylabel("y")
plt.title("Validation Data: Best 3 Models vs Reference")
plt.legend()
plt.show()
"""),
        md("""
## Loss curves and the error of the best model

The training loss is the mean over the epoch's batches (while the params change); the
validation loss is measured after the epoch. Both on a log scale.
"""),
        code("""
history = result.history
epochs = np.arange(1, len(history["train_loss"]) + 1)
best = result.best[0]
error = np.abs(model.apply(best.params, data.x_val) - data.y_val)

fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 4.5))
ax0.semilogy(epochs, history["train_loss"], label="train")
ax0.semilogy(epochs, history["val_loss"], label="validation")
ax0.axvline(best.epoch, color="gray", linestyle=":", label="best model")
ax0.set(xlabel="epoch", ylabel="0.5 * mean squared error", title="loss per epoch")
ax0.legend()
ax1.semilogy(data.x_val, error + 1e-12)
ax1.set(xlabel="x", ylabel="|prediction - sin(x)|", title="error of the best model")
plt.show()
"""),
        md("""
## Save and load the best model

A checkpoint is a plain `.npz` zip of the params, written atomically. `like=` checks
that the file matches the model's structure.
"""),
        code(f"""
fn.save("sine_{arch}_best.ckpt", best.params)
restored = fn.load("sine_{arch}_best.ckpt", like=params)
print("validation MSE of the restored model:",
      fn.losses.mse(model.apply(restored, data.x_val), data.y_val))
assert fn.tree.equal(restored, best.params)
"""),
    ]


AIRFOIL = [
    md("""
# Airfoil self-noise

The tutorial's last experiment: the UCI Airfoil Self-Noise data, 1503 NASA wind-tunnel
measurements of the sound pressure level (dB) of airfoil blades, from five inputs:
frequency (Hz), angle of attack (deg), chord length (m), free-stream velocity (m/s) and
suction-side displacement thickness (m). Split 50/20/30 into train/validation/test.

First the tutorial's model and settings, then a better recipe along the lines the tutorial
suggests at the end (input scaling, a learning-rate schedule, a wider net). From a
shell: `python -m funcnn.examples airfoil --recipe tutorial|better`; measured numbers over
several seeds are in `docs/quality.md`.
"""),
    code(setup(10000, '''BETTER_EPOCHS = int(os.environ.get("FUNCNN_NOTEBOOK_EPOCHS", 600))

# The data: FUNCNN_AIRFOIL_PATH if set, else funcnn's cache (downloaded once from UCI).
x, y = fn.datasets.airfoil(os.environ.get("FUNCNN_AIRFOIL_PATH"))
print(x.shape, y.shape)
''')),
    md("""
## The split

`fn.data.split` cuts one random permutation into the tutorial's 50/20/30 parts (751, 300
and 452 rows). The keys are the ones `python -m funcnn.examples airfoil --seed 0` uses,
so the numbers here match the command line.
"""),
    code("""
split_key, init_key, fit_key = fn.random.split(0, 3)
(x_train, y_train), (x_val, y_val), (x_test, y_test) = fn.data.split(split_key, x, y)
print(len(x_train), len(x_val), len(x_test))


def rmse(pred, target):
    return float(np.sqrt(np.mean((np.asarray(pred, np.float64) - target) ** 2)))


baseline = rmse(np.full_like(y_test, y_train.mean()), y_test)
print(f"predicting the training mean: test RMSE {baseline:.2f} dB")
"""),
    md("""
## The tutorial's recipe

The tutorial's network, raw inputs and targets, Adam (learning rate $10^{-3}$, weight decay
$10^{-6}$), batches of 16, 10000 epochs (about 4 minutes), best 3 models by
validation loss.
"""),
    code("""
L = fn.layers
tutorial_model = fn.serial(
    L.Linear(5, 8),
    L.ReLU(),
    fn.residual(fn.serial(
        L.Linear(8, 16),
        L.ReLU(),
        L.ResNetBlock(16),
        L.ReLU(),
        L.Linear(16, 8),
    )),
    L.ReLU(),
    L.Linear(8, 1),
)
tutorial_params = tutorial_model.init(init_key)
print(fn.summary(tutorial_model, tutorial_params))

f32 = lambda a: a.astype(np.float32)
tutorial_result = fn.fit(
    tutorial_model, fn.losses.mse, fn.optim.adam(1e-3, weight_decay=1e-6), tutorial_params,
    (f32(x_train), f32(y_train)), val=(f32(x_val), f32(y_val)),
    epochs=EPOCHS, batch_size=16, key=fit_key, keep_best=3, progress="silent",
)
for i, best in enumerate(tutorial_result.best, 1):
    pred = tutorial_model.apply(best.params, f32(x_test))
    print(f"best model {i} (epoch {best.epoch}): test RMSE {rmse(pred, y_test):.2f} dB")
"""),
    md("## The tutorial's plot: test predictions vs reference, sorted by the target"),
    code("""
def plot_sorted(predict, best_models, title):
    order = np.argsort(y_test[:, 0])
    index = np.arange(len(order))
    plt.figure(figsize=(8, 5))
    plt.scatter(index, y_test[order], label="Reference", color="black", s=20)
    for i, (best, color) in enumerate(zip(best_models, ["red", "blue", "green"]), 1):
        pred = predict(best.params, x_test)
        plt.scatter(index, pred[order], color=color, marker="x", s=15,
                    label=f"Best Model {i} (test RMSE {rmse(pred, y_test):.2f} dB)")
    plt.xlabel("Index (sorted by y)")
    plt.ylabel("sound pressure level (dB)")
    plt.title(title)
    plt.legend()
    plt.show()


plot_sorted(lambda p, a: tutorial_model.apply(p, f32(a)), tutorial_result.best,
            "Tutorial recipe: Test Data: Predictions vs Reference (Sorted by y)")
"""),
    md("""
## A better recipe

The raw frequency column runs from 200 to 20000 while the thickness is below 0.06, so
the tutorial's network mostly sees frequency. The better recipe:

- takes the log of frequency and of thickness (both span two decades), then
  standardizes every input **and** the target with statistics of the training split
  only (`fn.data.fit_standardizer`);
- uses a wider residual net, 128 features and 3 `ResNetBlock`s;
- trains with AdamW (decoupled weight decay $10^{-4}$) on a schedule: 5 epochs of linear
  warm-up to $3\\cdot10^{-3}$, then a cosine decay to 0 (`fn.optim.schedules.warmup_cosine`);
- batches of 32, 600 epochs, early stopping after 150 epochs without a better
  validation loss (fit then returns the best params).
"""),
    code("""
def features(a):
    return np.column_stack([np.log(a[:, 0]), a[:, 1], a[:, 2], a[:, 3], np.log(a[:, 4])])


x_stats = fn.data.fit_standardizer(features(x_train))   # training split only
y_stats = fn.data.fit_standardizer(y_train)


def encode(a):
    return f32(fn.data.standardize(x_stats, features(a)))


def predict(params, a):   # back to dB
    return fn.data.unstandardize(y_stats, better_model.apply(params, encode(a)).astype(np.float64))


better_model = fn.serial(L.Linear(5, 128), L.ReLU(), L.ResNetBlock(128), L.ResNetBlock(128),
                         L.ResNetBlock(128), L.Linear(128, 1))
steps_per_epoch = fn.data.num_batches(len(x_train), 32)
total_steps = BETTER_EPOCHS * steps_per_epoch
warmup_steps = min(5 * steps_per_epoch, total_steps - 1)   # 5 epochs (fewer in a tiny run)
schedule = fn.optim.schedules.warmup_cosine(3e-3, warmup_steps, total_steps)

better_result = fn.fit(
    better_model, fn.losses.mse, fn.optim.adamw(schedule, weight_decay=1e-4),
    better_model.init(init_key),
    (encode(x_train), f32(fn.data.standardize(y_stats, y_train))),
    val=(encode(x_val), f32(fn.data.standardize(y_stats, y_val))),
    epochs=BETTER_EPOCHS, batch_size=32, key=fit_key, keep_best=3, patience=150,
    progress="silent",
)
best = better_result.best[0]
print(f"stopped: {better_result.stop_reason or 'all epochs ran'}; best epoch {best.epoch}")
print(f"test RMSE of the best model: {rmse(predict(best.params, x_test), y_test):.2f} dB")
"""),
    code("""
plot_sorted(predict, better_result.best,
            "Better recipe: Test Data: Predictions vs Reference (Sorted by y)")
"""),
    md("## Loss curves (log scale)"),
    code("""
fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
for ax, (name, result, units) in zip(axes, [("tutorial recipe", tutorial_result, "dB^2"),
                                            ("better recipe", better_result, "standardized")]):
    h = result.history
    epochs = np.arange(1, len(h["train_loss"]) + 1)
    ax.semilogy(epochs, h["train_loss"], label="train")
    ax.semilogy(epochs, h["val_loss"], label="validation")
    ax.axvline(result.best[0].epoch, color="gray", linestyle=":", label="best model")
    ax.set(xlabel="epoch", ylabel=f"0.5 * mean squared error ({units})", title=name)
    ax.legend()
plt.show()
"""),
]

DIGITS = [
    md("""
# Handwritten digits: an MLP, then a CNN, then a CNN trained in PyTorch

The UCI handwritten digits: 1797 images of 8x8 pixels (each pixel counts the set bits
in a 4x4 block of a 32x32 bitmap, 0..16), labels 0..9. The file is shipped inside
funcnn (`fn.datasets.digits()`), so this notebook runs offline. The split is fixed and
stratified, no random numbers: of each digit's images in file order, the k-th goes to
test when `k % 5 == 4`, to validation when `k % 5 == 3`, else to training (1085, 357
and 355 images).

First an MLP on the 64 pixels as a flat vector, then a small CNN that sees the image
as an image, then a CNN trained in PyTorch whose `state_dict` loads into the same
funcnn model. From a shell: `python -m funcnn.examples digits` (the CNN below, with
loss, accuracy, confusion-matrix and misclassified-digit plots).
"""),
    code(setup(60, """
(x_train, y_train), (x_val, y_val), (x_test, y_test) = (
    fn.datasets.digits(part) for part in ("train", "val", "test"))
print(x_train.shape, x_train.dtype, y_train.dtype, len(x_val), len(x_test))
""")),
    code("""
fig, axes = plt.subplots(2, 10, figsize=(12, 3))
for ax, image, label in zip(axes.ravel(), x_train, y_train):
    ax.imshow(image[0], cmap="gray_r")
    ax.set_title(str(label))
    ax.axis("off")
plt.show()
"""),
    md("""
## The same training for both models

Softmax cross-entropy on the int labels (`fn.losses.softmax_cross_entropy`), AdamW
(decoupled weight decay $10^{-4}$) with the learning rate warmed up over 2 epochs to
$3\cdot10^{-2}$ and then decayed to 0 on a cosine, batches of 32, and the best model by
validation loss. The test split is only used to report.
"""),
    code("""
def train(model, key):
    init_key, fit_key = fn.random.split(key)
    steps = EPOCHS * fn.data.num_batches(len(x_train), 32)
    warmup = min(2 * steps // EPOCHS, steps - 1)   # 2 epochs (fewer in a tiny run)
    opt = fn.optim.adamw(fn.optim.schedules.warmup_cosine(3e-2, warmup, steps), weight_decay=1e-4)
    return fn.fit(model, fn.losses.softmax_cross_entropy, opt, model.init(init_key),
                  (x_train, y_train), val=(x_val, y_val), epochs=EPOCHS, batch_size=32,
                  key=fit_key, state=model.init_state(), progress="silent")


def predict(model, params, state, images):
    if not state:
        return model.apply(params, images).argmax(axis=-1)
    return model.apply(params, images, state=state)[0].argmax(axis=-1)   # evaluation mode


def report(name, model, result):
    best = result.best[0]
    for part, images, labels in (("val", x_val, y_val), ("test", x_test, y_test)):
        accuracy = np.mean(predict(model, best.params, best.state, images) == labels)
        print(f"{name}: {part} accuracy {100 * accuracy:.2f}% (best epoch {best.epoch})")
"""),
    md("""
## An MLP on the flat pixels

`Flatten` turns each `(1, 8, 8)` image into 64 numbers; the MLP does not know which
pixels are neighbours.
"""),
    code("""
L = fn.layers
mlp = fn.serial(L.Flatten(), L.Linear(64, 64), L.ReLU(), L.Linear(64, 64), L.ReLU(),
                L.Linear(64, 10))
print(fn.summary(mlp, mlp.init(0)))
mlp_result = train(mlp, 0)
report("MLP", mlp, mlp_result)
"""),
    md("""
## A small CNN

Two 3x3 convolutions, each followed by a 2x2 max-pool, see the image as an image:
8x8 to 16 channels of 4x4 to 32 channels of 2x2, then one Linear layer on those 128
numbers. BatchNorm after the first convolution (so that convolution needs no bias:
BatchNorm subtracts the mean anyway) and Dropout before the last layer. Both are
explicit arguments in funcnn: `fit` passes the model `state` (BatchNorm's running
statistics) from batch to batch and a new dropout `key` per batch, and evaluation
(`train=False`, the default of `apply`) uses the running statistics and no dropout.

Run for its 60 epochs (`FUNCNN_NOTEBOOK_EPOCHS` unset), this notebook gives the MLP
94.4% validation and 95.5% test accuracy and the CNN 99.4% and 98.3%: the CNN is the
better model. (The CNN's run is `python -m funcnn.examples digits --seed 0`'s, with one
BLAS thread. The MLP does better with a lower peak lr, 1e-2, about 97% validation
accuracy over seeds 0-4 in `docs/quality.md`: still 2% below the CNN.)
"""),
    code("""
cnn = fn.serial(
    L.Conv2d(1, 16, 3, padding=1, bias=False), L.BatchNorm(16), L.ReLU(), L.MaxPool2d(2),
    L.Conv2d(16, 32, 3, padding=1), L.ReLU(), L.MaxPool2d(2), L.Flatten(),
    L.Dropout(0.25), L.Linear(128, 10),
)
print(fn.summary(cnn, cnn.init(0)))
cnn_result = train(cnn, 0)
report("CNN", cnn, cnn_result)
"""),
    code("""
fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
for ax, (name, result) in zip(axes, [("MLP", mlp_result), ("CNN", cnn_result)]):
    h = result.history
    epochs = np.arange(1, len(h["train_loss"]) + 1)
    ax.semilogy(epochs, h["train_loss"], label="train")
    ax.semilogy(epochs, h["val_loss"], label="validation")
    ax.axvline(result.best[0].epoch, color="gray", linestyle=":", label="best model")
    ax.set(xlabel="epoch", ylabel="softmax cross-entropy", title=name)
    ax.legend()
plt.show()
"""),
    md("""
## What the CNN gets wrong

The test confusion matrix (rows: the true digit, columns: the predicted one), then the
misclassified test images, each titled with its true label and what the CNN said
("9, not 5": a 9 the CNN read as a 5).
"""),
    code("""
best = cnn_result.best[0]
predicted = predict(cnn, best.params, best.state, x_test)
counts = np.zeros((10, 10), int)
np.add.at(counts, (y_test, predicted), 1)
wrong = np.flatnonzero(predicted != y_test)

fig, ax = plt.subplots(figsize=(5.5, 5))
ax.imshow(counts, cmap="Blues")
for (true, guess), count in np.ndenumerate(counts):
    if count:
        ax.text(guess, true, count, ha="center", va="center",
                color="white" if count > counts.max() / 2 else "black")
ax.set(xticks=range(10), yticks=range(10), xlabel="predicted", ylabel="true",
       title=f"CNN: {len(wrong)} of {len(y_test)} test images wrong")
plt.show()

if len(wrong):
    shown = wrong[:16]
    fig, axes = plt.subplots(1, len(shown), figsize=(1.3 * len(shown), 1.8), squeeze=False)
    for ax, i in zip(axes[0], shown):
        ax.imshow(x_test[i, 0], cmap="gray_r")
        ax.set_title(f"{y_test[i]}, not {predicted[i]}", fontsize=9)
        ax.axis("off")
    plt.show()
"""),
    md("""
## Save it, load it

A model with state has two trees to keep: the params and the BatchNorm statistics.
"""),
    code("""
fn.save("digits_cnn.ckpt", best.params)
fn.save("digits_cnn.state.ckpt", best.state)
params = fn.load("digits_cnn.ckpt", like=cnn.init(0))
state = fn.load("digits_cnn.state.ckpt", like=cnn.init_state())
assert np.array_equal(predict(cnn, params, state, x_test), predicted)
"""),
    md("""
## A CNN trained in PyTorch, evaluated with funcnn

funcnn's layers use torch's layouts and key names (`Conv2d` weights `(out, in, kh, kw)`,
BatchNorm's `running_mean`, `running_var`, `num_batches_tracked`), and `serial` keys its
children by index like `nn.Sequential`. So the same architecture trained in PyTorch
loads into the funcnn model as it is: `fn.interop.from_torch_state_dict` with
`like=` (the params) and `state_like=` (the state) checks every key, shape and dtype.

PyTorch is a test-time dependency of funcnn, not a runtime one: without it these
cells say so and skip.
"""),
    code("""
try:
    import torch
    from torch import nn
except ImportError:
    torch = None
    print("PyTorch is not installed (pip install torch==2.13.0): skipping the PyTorch cells")

if torch is not None:
    torch.set_num_threads(1)   # a model this small trains fastest on one thread
    torch.manual_seed(0)   # torch's own init and shuffling: a different run from funcnn's
    net = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Dropout(0.25), nn.Linear(128, 10),
    )
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    images, labels = torch.from_numpy(x_train), torch.from_numpy(y_train)
    for epoch in range(EPOCHS):
        net.train()
        for index in torch.randperm(len(images)).split(32):
            opt.zero_grad()
            nn.functional.cross_entropy(net(images[index]), labels[index]).backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        torch_logits = net(torch.from_numpy(x_test)).numpy()
    print(f"PyTorch CNN: test accuracy {100 * np.mean(torch_logits.argmax(-1) == y_test):.2f}%")
"""),
    code("""
if torch is not None:
    params, state = fn.interop.from_torch_state_dict(net.state_dict(), like=cnn.init(0),
                                                     state_like=cnn.init_state())
    logits, _ = cnn.apply(params, x_test, state=state)   # evaluation mode, as net.eval()
    accuracy = np.mean(logits.argmax(-1) == y_test)
    print(f"the same weights in funcnn: test accuracy {100 * accuracy:.2f}%")
    print("largest difference of the logits:", np.abs(logits - torch_logits).max())
    np.testing.assert_allclose(logits, torch_logits, rtol=1e-4, atol=1e-4)
"""),
]

NOTEBOOKS = {
    "01_xor.ipynb": XOR,
    "02_sine_mlp.ipynb": sine_notebook("mlp"),
    "03_sine_resnet.ipynb": sine_notebook("resnet"),
    "04_airfoil.ipynb": AIRFOIL,
    "05_digits_cnn.ipynb": DIGITS,
}


def build(name: str, cells: list) -> nbformat.NotebookNode:
    nb = new_notebook(cells=cells)
    for i, cell in enumerate(nb.cells):
        cell.id = f"{Path(name).stem}-{i:02d}"  # fixed ids: rebuilding gives the same file
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python",
                                 "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    nbformat.validate(nb)
    return nb


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name, cells in NOTEBOOKS.items():
        path = HERE / name
        text = nbformat.writes(build(name, cells)) + "\n"
        if check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print(f"out of date (run python notebooks/build_notebooks.py): {', '.join(stale)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
