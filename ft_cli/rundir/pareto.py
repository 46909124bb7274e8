"""The Pareto front of a sweep's runs scored on several objectives: the runs no other run
beats on every objective at once."""

from __future__ import annotations


def dominates(a: list[float], b: list[float], modes: list[str]) -> bool:
    """Whether `a` is at least as good as `b` on every objective and better on one."""
    signs = [1.0 if mode == "max" else -1.0 for mode in modes]
    at_least = all(s * x >= s * y for s, x, y in zip(signs, a, b, strict=True))
    better = any(s * x > s * y for s, x, y in zip(signs, a, b, strict=True))
    return at_least and better


def front(points: list[list[float]], modes: list[str]) -> list[int]:
    """Indices of the points on the front, in their given order."""
    return [
        i
        for i, point in enumerate(points)
        if not any(dominates(other, point, modes) for j, other in enumerate(points) if j != i)
    ]
