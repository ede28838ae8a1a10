"""
Checks of option values shared by the public functions.
"""

from __future__ import annotations

import math


__all__ = ["check_seconds"]


def check_seconds(name: str, value: object) -> float:
    """
    *value*, the option *name*, as a positive and finite number of seconds.

    Raises:
        TypeError: *value* is not a number (a bool is not one).
        ValueError: *value* is not positive and finite.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{name} must be a number of seconds, not {type(value).__name__}"
        )
    if not 0 < value < math.inf:
        raise ValueError(f"{name} must be positive and finite, not {value}")
    return float(value)
