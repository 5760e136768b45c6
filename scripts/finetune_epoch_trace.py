#!/usr/bin/env python3
"""Diagnostic: validation and TEST accuracy after every epoch of cached top fine-tuning, and the
test accuracy each rule for choosing the kept epoch would give.

  python scripts/finetune_epoch_trace.py --sets textures,digits --seeds 0,1 \
      --work_dir /tmp/ft4 --bottleneck_root /tmp/probe --variants '{}' '{"epochs": 12}'
  python scripts/finetune_epoch_trace.py --sets textures --seeds 0,1,2 --work_dir /tmp/ft9 \
      --bottleneck_root /tmp/probe --holdout --holdout_set textures_unused

retrain never looks at the test split while training; this script does, to see how much a
choice of epoch costs (the test accuracy of the epoch kept against the best epoch's). With
--holdout, each epoch is also scored on the images of <set>_full that the --per_class subset
left out (3,100 for digits and fashion; with --holdout_set textures_unused, 562 for
textures): a test set 3 to 17 times the size of the split's, so that settings can be told
apart by less than the split's one image in 190. It
wraps finetune_top's fine_tune_top, make_train_step and private _TopRun._record and
_ActivationCache.originals, so it breaks (loudly) when they change. Each variant is a JSON object of RetrainConfig fields, or of
TopFineTuneSettings fields (epochs, dropout, learning_rate, ...), which override the
settings the run would use, or "anchor_decay": beta, which adds L2-SP to the network's
gradients (beta * (w - w_start): the penalty beta / 2 * |w - w_start|^2 that pulls the top
blocks toward their pretrained weights; Li et al., "Explicit inductive bias for transfer
learning with convolutional networks", 2018). The lower network's activations are computed
once per set, seed and block count, and reused across variants.

The rules compared on each run's trace:
- accuracy, then lower cross-entropy (finetune._is_better, the whole-network path's rule);
- accuracy, ties to the later epoch (the cached path's rule until the guarded last epoch);
- the last epoch run;
- retrain's: the epoch the run kept (finetune_top.keeps_fine_tuned: the last, unless the
  validation split shows the start better beyond its noise).
"""

import argparse
import dataclasses
import json
import os
import sys
import typing

import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=wrong-import-position,protected-access
import benchmark_finetune
import reference_sets
from retrain import pipeline
from retrain.config import RetrainConfig
from retrain.training import finetune
from retrain.training import finetune_checkpoint
from retrain.training import finetune_top

TEST_CACHE = "Fine-tuning cache (test)"
HOLDOUT_CACHE = "Fine-tuning cache (holdout)"


class HoldoutImage(typing.NamedTuple):
    path: str  # all that _ActivationCache.originals reads of an image


def holdout_images(full, subset, extra=None):
    """([HoldoutImage], int labels): the images of full's class folders that subset lacks,
    and every image of extra's class folders (a reference set disjoint from full, or None),
    labelled by their folder's index among subset's sorted folders (retrain's label order)."""
    images, labels = [], []
    for index, label in enumerate(sorted(os.listdir(subset))):
        kept = set(os.listdir(os.path.join(subset, label)))
        folders = [(full, kept)] + ([(extra, set())] if extra else [])
        for root, left_out in folders:
            folder = os.path.join(root, label)
            for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
                if name not in left_out:
                    images.append(HoldoutImage(os.path.join(folder, name)))
                    labels.append(index)
    return images, np.asarray(labels)


class AnchoredOptimizer:
    """An optimizer's apply_gradients with L2-SP's gradient, decay * (w - w_start), added;
    w_start: the variables' values when it is made (the pretrained weights)."""

    def __init__(self, optimizer, variables, decay):
        self.optimizer, self.decay = optimizer, decay
        self.anchors = {variable.ref(): tf.constant(variable.numpy()) for variable in variables}

    def apply_gradients(self, pairs):
        return self.optimizer.apply_gradients(
            [(gradient + self.decay * (variable - self.anchors[variable.ref()]), variable)
             for gradient, variable in pairs])


class Tracer:
    """Patches finetune_top to record (epoch, validation accuracy, validation cross-entropy,
    test accuracy) after every epoch of the next runs, to reuse lower activations, and to
    add L2-SP when anchor_decay is set."""

    def __init__(self):
        self.trace, self.test_labels, self.overrides, self.memo = [], None, {}, {}
        self.anchor_decay = 0.0
        self.holdout = None  # (images, labels) to score after every epoch, or None
        self.holdout_trace = []  # holdout accuracy after every epoch, with a holdout
        self.cache = None  # the run's _ActivationCache
        self.run = None  # the run's _TopRun
        self.test = None  # the test split's cached activations, of the run in progress
        self._originals = finetune_top._ActivationCache.originals
        self._record = finetune_top._TopRun._record
        self._fine_tune_top = finetune_top.fine_tune_top
        self._make_train_step = finetune_top.make_train_step
        tracer = self

        def originals(cache, image_files, what, dtype=np.float16):
            key = (cache.settings.blocks, what, tuple(image.path for image in image_files))
            if key not in tracer.memo:
                tracer.memo[key] = tracer._originals(cache, image_files, what, dtype)
            if what == TEST_CACHE:
                tracer.test = tracer.memo[key]
            tracer.cache = cache
            return tracer.memo[key]

        def record(run, epoch, *args):
            tracer._record(run, epoch, *args)
            tracer.run = run
            logits = finetune_top._map_batches(run.network.logits, tracer.test.activations)
            labels = tracer.test_labels[tracer.test.ok]
            tracer.trace.append((epoch, run.history.validation_accuracy[-1],
                                 run.history.validation_cross_entropy[-1],
                                 float(np.mean(np.argmax(logits, axis=1) == labels))))
            if tracer.holdout:
                images, labels = tracer.holdout
                holdout = originals(tracer.cache, images, HOLDOUT_CACHE, np.float32)
                logits = finetune_top._map_batches(run.network.logits, holdout.activations)
                tracer.holdout_trace.append(
                    float(np.mean(np.argmax(logits, axis=1) == labels[holdout.ok])))

        def fine_tune_top(module, head, data, settings, *args, **kwargs):
            tracer.test_labels = np.asarray(data["testing"][1])
            settings = dataclasses.replace(settings, **tracer.overrides)
            return tracer._fine_tune_top(module, head, data, settings, *args, **kwargs)

        def make_train_step(network, network_optimizer, *args):
            if tracer.anchor_decay:
                network_optimizer = AnchoredOptimizer(network_optimizer,
                                                      network.module_variables,
                                                      tracer.anchor_decay)
            return tracer._make_train_step(network, network_optimizer, *args)

        finetune_top._ActivationCache.originals = originals
        finetune_top.make_train_step = make_train_step
        finetune_top._TopRun._record = record
        finetune_top.fine_tune_top = fine_tune_top  # pipeline calls it through the module


def kept_epoch(trace, replaces):
    """The epoch a rule keeps: replaces(accuracy, cross_entropy, best) -> bool."""
    epoch, accuracy, cross_entropy, _ = trace[0]
    best = finetune_checkpoint.Best([], epoch, accuracy, cross_entropy)
    for epoch, accuracy, cross_entropy, _ in trace[1:]:
        if replaces(accuracy, cross_entropy, best):
            best = finetune_checkpoint.Best([], epoch, accuracy, cross_entropy)
    return best.steps_done


def ties_to_later(accuracy, cross_entropy, best):
    """The start gives way to higher accuracy, or the same with lower cross-entropy; a
    fine-tuned epoch to the same accuracy or higher."""
    if best.steps_done == 0:
        return finetune._is_better(accuracy, cross_entropy, best)
    return accuracy >= best.validation_accuracy


RULES = {"accuracy_then_cross_entropy": finetune._is_better,
         "accuracy_ties_to_later": ties_to_later,
         "last_epoch": lambda *_: True}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", default="textures,digits")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--work_dir", default="benchmark_finetune")
    parser.add_argument("--bottleneck_root", help="where <set>_bottlenecks caches are")
    parser.add_argument("--per_class", type=int, default=190)
    parser.add_argument("--variants", nargs="+", default=["{}"])
    parser.add_argument("--holdout", action="store_true",
                        help="also score every epoch on the images of <set>_full left out of "
                        "the subset")
    parser.add_argument("--holdout_set", help="with --holdout, add this reference set's images "
                        "(textures_unused for textures), written under --work_dir on first use")
    args = parser.parse_args()
    settings_fields = {field.name for field in dataclasses.fields(finetune_top.TopFineTuneSettings)}
    tracer = Tracer()
    for name in args.sets.split(","):
        full = reference_sets.ensure(name, os.path.join(args.work_dir, f"{name}_full"))
        image_dir = benchmark_finetune.subset(
            full, os.path.join(args.work_dir, f"{name}_{args.per_class}"), args.per_class)
        bottleneck_dir = os.path.join(args.bottleneck_root or args.work_dir, f"{name}_bottlenecks")
        extra = (reference_sets.ensure(args.holdout_set,
                                       os.path.join(args.work_dir, args.holdout_set))
                 if args.holdout and args.holdout_set else None)
        tracer.holdout = holdout_images(full, image_dir, extra) if args.holdout else None
        for seed in map(int, args.seeds.split(",")):
            for variant in args.variants:
                overrides = json.loads(variant)
                tracer.anchor_decay = float(overrides.pop("anchor_decay", 0.0))
                tracer.overrides = {k: v for k, v in overrides.items() if k in settings_fields}
                config = RetrainConfig(
                    image_dir=image_dir, bottleneck_dir=bottleneck_dir, fine_tune=True,
                    random_seed=seed, audit=False,
                    output_dir=os.path.join(args.work_dir, f"trace-{name}-{seed}"),
                    **{k: v for k, v in overrides.items() if k not in settings_fields})
                tracer.trace, tracer.holdout_trace = [], []
                result = pipeline.run(config)
                trace = tracer.trace
                frozen = trace[0][3]
                print(f"TRACE {name} seed={seed} {variant} N={result.test.count}: " + " ".join(
                    f"e{e}:val {v * 100:.1f}/ce {c:.3f}/test {t * 100:.1f}"
                    for e, v, c, t in trace), flush=True)
                kept = {rule: kept_epoch(trace, replaces) for rule, replaces in RULES.items()}
                kept["retrain"] = tracer.run.best.steps_done
                print(f"KEPT {name} seed={seed} {variant}: " + "; ".join(
                    f"{rule} e{epoch} {(trace[epoch][3] - frozen) * 100:+.1f}"
                    for rule, epoch in kept.items())
                    + f"; best epoch on test {(max(t for *_, t in trace) - frozen) * 100:+.1f}",
                    flush=True)
                if tracer.holdout_trace:
                    print(_holdout_line(name, seed, variant, tracer.holdout_trace, kept,
                                        len(tracer.holdout[1])), flush=True)


def _holdout_line(name, seed, variant, accuracies, kept, count):
    """HOLDOUT line: accuracy after every epoch, and each rule's kept epoch's gain."""
    frozen = accuracies[0]
    return (f"HOLDOUT {name} seed={seed} {variant} N={count}: "
            + " ".join(f"e{epoch}:{accuracy * 100:.1f}" for epoch, accuracy in enumerate(accuracies))
            + "; " + "; ".join(f"{rule} e{epoch} {(accuracies[epoch] - frozen) * 100:+.2f}"
                               for rule, epoch in kept.items())
            + f"; best epoch {(max(accuracies) - frozen) * 100:+.1f}")


if __name__ == "__main__":
    main()
