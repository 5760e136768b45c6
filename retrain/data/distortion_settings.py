"""retrain.py's four distortion settings and their checks (see retrain.data.distort for what they do).

No TensorFlow here: the command line checks the settings before the slow imports.
"""

import dataclasses

from retrain.errors import UserError


@dataclasses.dataclass(frozen=True)
class Distortions:
    flip_left_right: bool = False
    random_crop: int = 0  # percent
    random_scale: int = 0  # percent
    random_brightness: int = 0  # percent

    def any(self):
        """True if any distortion is asked for."""
        return bool(self.flip_left_right or self.random_crop or self.random_scale
                    or self.random_brightness)

    def as_flags(self):
        """The flags that ask for these distortions, e.g. "--random_crop=10 --flip_left_right"."""
        words = [f"--{name}={getattr(self, name)}"
                 for name in ("random_crop", "random_scale", "random_brightness")
                 if getattr(self, name)]
        return " ".join(words + ["--flip_left_right"] * self.flip_left_right)

    def describe(self):
        """A stable text naming the settings: part of each variant's cache key."""
        return (f"flip={int(self.flip_left_right)},crop={self.random_crop},"
                f"scale={self.random_scale},brightness={self.random_brightness}")


def check_distortions(distortions):
    """Raises UserError for percentages that cannot mean anything."""
    limits = {"random_crop": 100, "random_scale": 100, "random_brightness": 99}
    for name, limit in limits.items():
        value = getattr(distortions, name)
        if not 0 <= value <= limit:
            raise UserError(f"--{name}={value} is a percentage from 0 to {limit}; "
                            f"for example --{name}=10.")


def check_settings(distortions, copies):
    """Raises UserError unless the distortions and the number of copies make sense together.

    Args:
      distortions: Distortions.
      copies: int, distorted variants per training image (0: no augmentation).
    """
    check_distortions(distortions)
    if copies < 0:
        raise UserError(f"--augmentation_copies={copies} is negative; pass 0 or more, "
                        "for example --augmentation_copies=4.")
    if copies and not distortions.any():
        raise UserError(f"--augmentation_copies={copies} has no distortion to apply; add "
                        "--random_crop, --random_scale, --random_brightness or "
                        "--flip_left_right, or leave out --augmentation_copies.")
    if distortions.any() and not copies:
        raise UserError(f"--augmentation_copies=0 makes no distorted variants, so "
                        f"{distortions.as_flags()} would do nothing; pass "
                        "--augmentation_copies=1 or more, or leave out the distortion flags.")
