"""The seed tutorial's object-oriented NumPy network, reproduced as a speed baseline.

This is the tutorial's code as written (float64, its own Adam), including its known
bugs, on purpose: it is the speed we compare against, not a reference for correctness.

- ``Linear.backward`` divides the weight and bias gradients by the batch size, and
  ``MSELoss.backward`` already did: the gradients are ``1 / batch`` too small.
- ``ResNetBlock``'s default ``activation=ReLU()`` is evaluated once, so every block
  built with the default shares one ReLU instance and its cache: with several blocks,
  the backward pass uses the last block's mask everywhere.

The only addition is :class:`SoftmaxCrossEntropyLoss` (marked below), which the seed
does not have and workload T4 needs; it is written in the seed's style.
The seed also calls ``np.random.seed(0)`` at import; this module does not (the
benchmark copies the same initial weights into every implementation).
"""

import numpy as np


class Parameter:
    def __init__(self, data):
        self.data = data
        self.grad = np.zeros_like(data)


class Module:
    def forward(self, x):
        raise NotImplementedError

    def backward(self, grad_output):
        raise NotImplementedError

    def parameters(self):
        # Return a list of parameters in this module.
        return []

    def zero_grad(self):
        for p in self.parameters():
            p.grad = np.zeros_like(p.data)


class Linear(Module):
    def __init__(self, in_features, out_features, init='he'):
        if init == 'he':
            weight_data = np.random.randn(out_features, in_features) * np.sqrt(2 / in_features)
        else:
            weight_data = np.random.randn(out_features, in_features)
        self.weight = Parameter(weight_data)
        self.bias = Parameter(np.zeros((1, out_features)))
        self.cache = None  # To store input for backward

    def forward(self, x):
        self.cache = x
        return x.dot(self.weight.data.T) + self.bias.data

    def backward(self, grad_output):
        x = self.cache
        batch_size = x.shape[0]
        self.weight.grad = grad_output.T.dot(x) / batch_size
        self.bias.grad = np.sum(grad_output, axis=0, keepdims=True) / batch_size
        return grad_output.dot(self.weight.data)

    def parameters(self):
        return [self.weight, self.bias]


class ReLU(Module):
    def forward(self, x):
        self.cache = x
        return np.maximum(0, x)

    def backward(self, grad_output):
        x = self.cache
        return grad_output * (x > 0).astype(x.dtype)


class Sigmoid(Module):
    def forward(self, x):
        self.out = 1 / (1 + np.exp(-x))
        return self.out

    def backward(self, grad_output):
        return grad_output * self.out * (1 - self.out)


class Tanh(Module):
    def forward(self, x):
        self.out = np.tanh(x)
        return self.out

    def backward(self, grad_output):
        return grad_output * (1 - self.out**2)


class Identity(Module):
    def forward(self, x):
        return x

    def backward(self, grad_output):
        return grad_output


class Sequential(Module):
    def __init__(self, *modules):
        self.modules = modules

    def forward(self, x):
        for module in self.modules:
            x = module.forward(x)
        return x

    def backward(self, grad_output):
        for module in reversed(self.modules):
            grad_output = module.backward(grad_output)
        return grad_output

    def parameters(self):
        params = []
        for module in self.modules:
            params.extend(module.parameters())
        return params

    def zero_grad(self):
        for p in self.parameters():
            p.grad = np.zeros_like(p.data)


class MSELoss:
    def forward(self, prediction, target):
        self.prediction = prediction
        self.target = target
        return np.mean(0.5 * (prediction - target) ** 2)

    def backward(self):
        batch_size = self.target.shape[0]
        return (self.prediction - self.target) / batch_size


class L1Loss:
    def forward(self, prediction, target):
        self.prediction = prediction
        self.target = target
        return np.mean(np.abs(prediction - target))

    def backward(self):
        batch_size = self.target.shape[0]
        return np.sign(self.prediction - self.target) / batch_size


# --- not in the seed: added for workload T4, in the seed's style -------------------
class SoftmaxCrossEntropyLoss:
    def forward(self, logits, labels):
        shifted = logits - np.max(logits, axis=1, keepdims=True)
        exp = np.exp(shifted)
        self.probs = exp / np.sum(exp, axis=1, keepdims=True)
        self.labels = labels
        picked = self.probs[np.arange(labels.shape[0]), labels]
        return -np.mean(np.log(picked))

    def backward(self):
        batch_size = self.labels.shape[0]
        grad = self.probs.copy()
        grad[np.arange(batch_size), self.labels] -= 1
        return grad / batch_size
# -------------------------------------------------------------------------------------


class SGD:
    def __init__(self, parameters, lr=0.01):
        self.parameters = parameters
        self.lr = lr

    def step(self):
        for p in self.parameters:
            p.data -= self.lr * p.grad

    def zero_grad(self):
        for p in self.parameters:
            p.grad = np.zeros_like(p.data)


class RMSProp:
    def __init__(self, parameters, lr=0.01, beta=0.9, epsilon=1e-8):
        self.parameters = parameters
        self.lr = lr
        self.beta = beta
        self.epsilon = epsilon
        self.s = {p: np.zeros_like(p.data) for p in self.parameters}
        self.step_count = 0

    def step(self, lr=None):
        self.lr = lr or self.lr
        self.step_count += 1
        for p in self.parameters:
            self.s[p] = self.beta * self.s[p] + (1 - self.beta) * (p.grad ** 2)
            correction = 1 - self.beta ** self.step_count
            p.data -= self.lr * p.grad / (np.sqrt(self.s[p] / correction) + self.epsilon)

    def zero_grad(self):
        for p in self.parameters:
            p.grad = np.zeros_like(p.data)


class Adam:
    def __init__(self, parameters, lr=0.001, weight_decay=0.0, beta1=0.9, beta2=0.999, epsilon=1e-8):
        self.parameters = parameters
        self.lr = lr
        self.weight_decay = weight_decay
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.v = {p: np.zeros_like(p.data) for p in self.parameters}
        self.s = {p: np.zeros_like(p.data) for p in self.parameters}
        self.step_count = 0

    def step(self, lr=None):
        self.lr = lr or self.lr
        self.step_count += 1
        for p in self.parameters:
            p.grad += self.weight_decay * p.data
            self.v[p] = self.beta1 * self.v[p] + (1 - self.beta1) * p.grad
            self.s[p] = self.beta2 * self.s[p] + (1 - self.beta2) * (p.grad ** 2)
            v_corr = self.v[p] / (1 - self.beta1 ** self.step_count)
            s_corr = self.s[p] / (1 - self.beta2 ** self.step_count)
            p.data -= self.lr * v_corr / (np.sqrt(s_corr) + self.epsilon)

    def zero_grad(self):
        for p in self.parameters:
            p.grad = np.zeros_like(p.data)


class SkipConnection(Module):
    def __init__(self, module):
        self.module = module

    def forward(self, x):
        out = self.module.forward(x)
        if out.shape != x.shape:
            raise ValueError(f"Shape mismatch in SkipConnection: input shape {x.shape} vs. output shape {out.shape}")
        return x + out

    def backward(self, grad_output):
        grad_wrapped = self.module.backward(grad_output)
        return grad_output + grad_wrapped

    def parameters(self):
        return self.module.parameters()

    def zero_grad(self):
        self.module.zero_grad()


class ResNetBlock(Module):
    def __init__(self, features, hidden_features=None, activation=ReLU()):  # noqa: B008 - the seed's shared default, kept
        hidden_features = hidden_features or features
        self.block = Sequential(
            Linear(features, hidden_features, init='he'),
            activation,
            Linear(hidden_features, features, init='he')
        )
        self.res_block = SkipConnection(self.block)

    def forward(self, x):
        return self.res_block.forward(x)

    def backward(self, grad_output):
        return self.res_block.backward(grad_output)

    def parameters(self):
        return self.res_block.parameters()

    def zero_grad(self):
        self.res_block.zero_grad()
