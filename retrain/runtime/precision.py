"""The number format of the module's forward pass: float32, or bfloat16 on CPUs built for it.

CPUs with AVX512_BF16 or AMX (Intel Xeons since Cooper Lake and Sapphire Rapids, AMD since
Zen 4) multiply bfloat16 numbers natively. TensorFlow's oneDNN auto-mixed-precision rewrite
then runs convolutions and matrix products in bfloat16, keeping float32 inputs and outputs:
efficientnet_lite0's forward pass runs about 1.7x as fast on this project's 2-core machines.
The vectors move by a few percent of their largest value (bfloat16 keeps 8 bits of
mantissa), so they are cached apart from float32 ones (bottleneck_cache.module_cache_dir).

The rewrite is a process-wide TensorFlow setting, read whenever a function is instantiated:
forward_in() turns it on only while the module computes vectors, so that training the new
layer, which follows, stays float32.

TensorFlow is imported where it is used: the command-line modules take PRECISIONS from here
for their flags, and --help must not wait for TensorFlow.
"""

import contextlib

from retrain.errors import UserError

FLOAT32 = "float32"
BFLOAT16 = "bfloat16"
PRECISIONS = (FLOAT32, BFLOAT16)

# /proc/cpuinfo flags of CPUs that compute in bfloat16 natively.
_BFLOAT16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
_GRAPPLER_OPTION = "auto_mixed_precision_onednn_bfloat16"


def cpu_flags(cpuinfo_path="/proc/cpuinfo"):
    """The CPU's feature flags (Linux); an empty set where they cannot be read."""
    try:
        with open(cpuinfo_path, encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                name, _, value = line.partition(":")
                if name.strip() == "flags":
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def check(precision, flag, cpuinfo_path="/proc/cpuinfo"):
    """Fails with UserError unless `precision` can run here.

    Args:
      precision: one of PRECISIONS.
      flag: the flag that set it, for the message ("--bottleneck_precision").
    """
    if precision not in PRECISIONS:
        raise UserError(f"{flag}={precision!r} is not one of {', '.join(PRECISIONS)}.")
    if precision == FLOAT32:
        return
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    if tf.config.list_physical_devices("GPU"):
        raise UserError(f"{flag}={BFLOAT16} speeds up CPUs only, and this machine computes on "
                        f"its GPU; leave it at {FLOAT32}.")
    if not _BFLOAT16_CPU_FLAGS & cpu_flags(cpuinfo_path):
        raise UserError(
            f"{flag}={BFLOAT16} needs a CPU with AVX512_BF16 or AMX (none of "
            f"{', '.join(sorted(_BFLOAT16_CPU_FLAGS))} in {cpuinfo_path}); elsewhere bfloat16 is "
            f"emulated, several times slower than {FLOAT32}. Leave it at {FLOAT32}.")


@contextlib.contextmanager
def forward_in(precision):
    """While in the block, TensorFlow functions run their matrix work in `precision`."""
    if precision == FLOAT32:
        yield
        return
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    before = tf.config.optimizer.get_experimental_options().get(_GRAPPLER_OPTION, False)
    tf.config.optimizer.set_experimental_options({_GRAPPLER_OPTION: True})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options({_GRAPPLER_OPTION: before})
