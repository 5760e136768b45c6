"""Temperature scaling (Guo et al., 2017, "On Calibration of Modern Neural Networks").

One number T, fitted on the validation split's logits of the trained layer, divides the logits
before the softmax: probabilities = softmax(logits / T). The most likely class never changes,
so accuracy does not either; only how sure the scores say the model is. The export builds T in
(export/saved_model.py), and evaluation/metrics.py measures the expected calibration error on
the test split before and after.
"""

import numpy as np

# The search range of T. Outside it a model is either nearly uniform or nearly one-hot
# whatever the image, and no fit on a few hundred validation images should go there.
MIN_TEMPERATURE = 0.05
MAX_TEMPERATURE = 20.0
# Golden-section steps: each keeps 61.8% of the interval; 60 of them leave ~1e-12 of log T.
_SEARCH_STEPS = 60


def logits(features, head):
    """float32 [n, C]: the trained layer's logits (features float32 [n, D]; head: train.Head)."""
    return np.asarray(features, np.float32) @ head.weights + head.biases


def softmax(logit_rows, temperature=1.0):
    """float64 [n, C]: softmax(logits / temperature), row by row."""
    scaled = np.asarray(logit_rows, np.float64) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)


def negative_log_likelihood(logit_rows, labels, temperature):
    """Mean cross-entropy of softmax(logits / temperature) against int labels [n]."""
    scaled = np.asarray(logit_rows, np.float64) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(scaled).sum(axis=1))
    return float(np.mean(log_norm - scaled[np.arange(len(labels)), labels]))


def fit_temperature(logit_rows, labels):
    """The T in [MIN_TEMPERATURE, MAX_TEMPERATURE] that minimises the validation NLL.

    The NLL is convex in 1/T, hence unimodal in log T, so a golden-section search over log T
    finds its minimum without gradients.

    Args:
      logit_rows: float [n, C] validation logits; labels: int [n] true classes.

    Returns:
      float; 1.0 (no change) when there are no validation images.
    """
    labels = np.asarray(labels, np.int64)
    if len(labels) == 0:
        return 1.0
    low, high = np.log(MIN_TEMPERATURE), np.log(MAX_TEMPERATURE)
    ratio = (np.sqrt(5.0) - 1.0) / 2.0

    def loss(log_t):
        return negative_log_likelihood(logit_rows, labels, np.exp(log_t))

    left, right = high - ratio * (high - low), low + ratio * (high - low)
    left_loss, right_loss = loss(left), loss(right)
    for _ in range(_SEARCH_STEPS):
        if left_loss <= right_loss:
            high, right, right_loss = right, left, left_loss
            left = high - ratio * (high - low)
            left_loss = loss(left)
        else:
            low, left, left_loss = left, right, right_loss
            right = low + ratio * (high - low)
            right_loss = loss(right)
    return float(np.exp((low + high) / 2.0))
