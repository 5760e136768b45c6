"""Fine-tuning's state on disk: the best weights so far, and the latest state to resume from.

Two files in <checkpoint_path>/fine_tune/ (beside the head's folder), each written atomically:
  best.npz    the trained variables when validation accuracy was highest, with that step
              and accuracy: what the run keeps even if it is killed afterwards.
  latest.npz  the trained variables and the optimizer's momentum after the last evaluation,
              the next step, the history and the best so far, and a description of the run
              (module, settings, images) that a resumed run must match.
npz (not tf.train.Checkpoint) because a single file can be renamed into place atomically.
"""

import dataclasses
import os

from absl import logging

from retrain.errors import UserError
from retrain.training import checkpoint

BEST_FILE = "best.npz"
LATEST_FILE = "latest.npz"


@dataclasses.dataclass
class Best:
    """The best weights so far: values of the trained variables, in their order."""

    values: list  # [np.ndarray], float32, shapes of the trained variables
    steps_done: int  # 0: the network as head training left it
    validation_accuracy: float  # in [0, 1]; None without validation images
    validation_cross_entropy: float  # mean over the validation sample; None without them


@dataclasses.dataclass
class LatestState:
    variable_values: list  # [np.ndarray]: the trained variables
    optimizer_values: list  # [np.ndarray]: the optimizer's variables (step count, momentum)
    next_step: int
    history: dict  # dataclasses.asdict(train.History)
    best: Best


def save_best(directory, best):
    _save(os.path.join(directory, BEST_FILE), best.values,
          {"steps_done": best.steps_done, "validation_accuracy": best.validation_accuracy,
           "validation_cross_entropy": best.validation_cross_entropy})


def save_latest(directory, state, description):
    metadata = {"next_step": state.next_step, "history": state.history,
                "variable_count": len(state.variable_values), "description": description,
                "best_steps_done": state.best.steps_done}
    _save(os.path.join(directory, LATEST_FILE),
          list(state.variable_values) + list(state.optimizer_values), metadata)


def load_latest(directory, description):
    """The state to resume from, or None if there is none.

    Raises:
      UserError: the checkpoint belongs to a run with other settings, module or images.
    """
    path = os.path.join(directory, LATEST_FILE)
    if not os.path.exists(path):
        return None
    arrays, metadata = _load(path)
    if metadata.get("description") != description:
        changed = sorted(key for key in set(description) | set(metadata.get("description", {}))
                         if description.get(key) != metadata.get("description", {}).get(key))
        raise UserError(
            f"Cannot resume fine-tuning from {directory!r}: it was made with other "
            f"{', '.join(changed)}; drop --resume to start over, or pass another "
            "--checkpoint_path.")
    count = metadata["variable_count"]
    best_values, best_metadata = _load(os.path.join(directory, BEST_FILE))
    if best_metadata["steps_done"] != metadata["best_steps_done"]:
        # Killed between the two writes: best.npz is newer than latest.npz. Resuming from
        # latest.npz repeats the steps since, which reach that best again.
        logging.info("best.npz is ahead of latest.npz; the steps after it are repeated.")
    best = Best(best_values, best_metadata["steps_done"], best_metadata["validation_accuracy"],
                best_metadata["validation_cross_entropy"])
    return LatestState(arrays[:count], arrays[count:], metadata["next_step"], metadata["history"],
                       best)


def _save(path, arrays, metadata):
    checkpoint.write_archive(path, {f"array_{index:05d}": array
                                    for index, array in enumerate(arrays)}, metadata)


def _load(path):
    """([np.ndarray] in the order _save got them, metadata dict) from a file _save wrote."""
    arrays, metadata = checkpoint.read_archive(path, "fine-tuning checkpoint")
    return [arrays[name] for name in sorted(arrays)], metadata
