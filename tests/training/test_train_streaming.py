"""Training from a memory-mapped file or any row store matches training from memory."""

import numpy as np
import pytest

from retrain.training import feeding
from retrain.training import train


def _toy_problem(examples=600, feature_dim=16, classes=3, seed=0):
    """float32 features [examples, feature_dim] whose mean depends on the int32 label."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, examples).astype(np.int32)
    centres = rng.normal(0, 1, (classes, feature_dim))
    features = (centres[labels] + rng.normal(0, 1.0, (examples, feature_dim))).astype(np.float32)
    return features, labels


def _settings(**overrides):
    values = dict(steps=120, batch_size=32, learning_rate=0.05, eval_step_interval=25,
                  validation_batch_size=50, seed=3)
    values.update(overrides)
    return train.TrainingSettings(**values)


class CountingRowStore:
    """A row store that is not an array: records the indices it is asked for."""

    def __init__(self, array):
        self._array = array
        self.shape = array.shape
        self.requests = []

    def __len__(self):
        return len(self._array)

    def __getitem__(self, indices):
        self.requests.append(np.array(indices))
        return self._array[indices]


def _memmap_of(array, path):
    np.save(path, array)
    return np.load(path, mmap_mode="r")


@pytest.mark.parametrize("class_balance", ["classes", "loss_weight"])
def test_memmap_training_matches_in_memory_training(tmp_path, class_balance):
    features, labels = _toy_problem()
    settings = _settings(class_balance=class_balance)
    memmap = _memmap_of(features, tmp_path / "features.npy")
    assert feeding.is_in_memory(features) and not feeding.is_in_memory(memmap)
    in_memory, history = train.train_head(features[:500], labels[:500], features[500:],
                                          labels[500:], 3, settings)
    streamed, streamed_history = train.train_head(memmap[:500], labels[:500], memmap[500:],
                                                  labels[500:], 3, settings)
    np.testing.assert_allclose(streamed.weights, in_memory.weights, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(streamed.biases, in_memory.biases, rtol=1e-5, atol=1e-6)
    assert streamed_history.validation_accuracy == pytest.approx(history.validation_accuracy)
    assert history.validation_accuracy[-1] > 0.8  # It learned something.


def test_row_store_is_read_in_sorted_unique_rows():
    features, labels = _toy_problem()
    store = CountingRowStore(features[:500])
    head, _ = train.train_head(store, labels[:500], features[500:], labels[500:], 3,
                               _settings(validation_batch_size=-1))
    reference, _ = train.train_head(features[:500], labels[:500], features[500:], labels[500:], 3,
                                    _settings(validation_batch_size=-1))
    np.testing.assert_allclose(head.weights, reference.weights, rtol=1e-5, atol=1e-6)
    assert store.requests
    for request in store.requests:
        assert request.dtype == np.int64
        assert np.all(np.diff(request) > 0)  # Ascending, each row once.
    # One read per evaluation interval, each at most interval steps * batch rows.
    assert len(store.requests) == len(list(train.training_intervals(120, 25)))
    assert max(len(request) for request in store.requests) <= 25 * 32


def test_large_arrays_are_streamed(monkeypatch):
    features, labels = _toy_problem()
    monkeypatch.setattr(feeding, "IN_MEMORY_LIMIT_BYTES", features[:500].nbytes - 1)
    assert not feeding.is_in_memory(features[:500])
    head, _ = train.train_head(features[:500], labels[:500], features[500:], labels[500:], 3,
                               _settings())
    monkeypatch.undo()
    reference, _ = train.train_head(features[:500], labels[:500], features[500:], labels[500:], 3,
                                    _settings())
    np.testing.assert_allclose(head.weights, reference.weights, rtol=1e-5, atol=1e-6)


def test_whole_split_validation_from_memmap_in_chunks(tmp_path, monkeypatch):
    features, labels = _toy_problem()
    memmap = _memmap_of(features[500:], tmp_path / "validation.npy")
    _, in_memory = train.train_head(features[:500], labels[:500], features[500:], labels[500:], 3,
                                    _settings(validation_batch_size=-1))
    monkeypatch.setattr(feeding, "VALIDATION_CHUNK_ROWS", 30)  # 100 rows: 4 chunks
    _, chunked = train.train_head(features[:500], labels[:500], memmap, labels[500:], 3,
                                  _settings(validation_batch_size=-1))
    assert chunked.validation_accuracy == pytest.approx(in_memory.validation_accuracy)
    assert chunked.validation_cross_entropy == pytest.approx(in_memory.validation_cross_entropy,
                                                             rel=1e-5)


def test_gather_rows_keeps_order_and_shape():
    store = np.arange(40, dtype=np.float32).reshape(10, 4)
    indices = np.array([[7, 2, 7], [0, 9, 2]], dtype=np.int64)
    np.testing.assert_array_equal(feeding.gather_rows(store, indices), store[indices])
