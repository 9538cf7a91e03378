"""Checks of the arguments that the processor and the pipelines take, each raising a ValueError that names the
argument and what it must be."""

import math
import numbers

import numpy as np


def check_number(value, name: str, integer: bool = False, positive: bool = False, unit: bool = False):
    """`value` if it is a finite real number (an integer with `integer`, > 0 with `positive`, in [0, 1] with `unit`),
    else a ValueError naming the argument `name`. NumPy scalars count; bools and strings do not."""
    kind = numbers.Integral if integer else numbers.Real
    number = isinstance(value, kind) and not isinstance(value, (bool, np.bool_))
    if not (number and math.isfinite(value)) or (positive and value <= 0) or (unit and not 0 <= value <= 1):
        noun = "integer" if integer else "number"
        requirement = f"a positive {noun}" if positive else f"a {noun} in [0, 1]" if unit else f"a finite {noun}"
        raise ValueError(f"{name} must be {requirement}, got {value!r}")
    return value


def check_kernel_size(kernel_size) -> int:
    """The Gaussian blur kernel of the DARK refinement: a positive odd integer."""
    if check_number(kernel_size, "kernel_size", integer=True, positive=True) % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size!r}")
    return kernel_size


__all__ = ["check_kernel_size", "check_number"]
