"""Balanced factorisation of a dimension into n integer factors."""

from __future__ import annotations

import math

__all__ = ["factorize"]


def _prime_factors(n: int) -> list[int]:
    out, p = [], 2
    while p * p <= n:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    if n > 1:
        out.append(n)
    return out


def factorize(dim: int, n: int) -> tuple[int, ...]:
    """Split ``dim`` into ``n`` integer factors that are as equal as possible.

    Prime factors are handed out largest first, each to the currently smallest factor; the
    factors are then placed with the largest in the middle (index ``n // 2``), alternating
    right and left, so the central core of an MPO carries the largest dimensions.

    Parameters
    ----------
    dim : int
        The dimension to split (>= 1).
    n : int
        Number of factors (>= 1).

    Returns
    -------
    tuple of int, length n
        Factors whose product is ``dim`` (a prime ``dim`` gives ones around it).

    Examples
    --------
    >>> from tnlm import factorize
    >>> factorize(3072, 5)
    (4, 4, 8, 6, 4)
    >>> factorize(4096, 5)
    (4, 4, 8, 8, 4)
    >>> factorize(768, 5)
    (3, 4, 4, 4, 4)
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive int; got {dim!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n (number of factors) must be a positive int; got {n!r}")
    bins = [1] * n
    for p in sorted(_prime_factors(dim), reverse=True):
        i = min(range(n), key=lambda k: (bins[k], k))
        bins[i] *= p
    order = sorted(bins, reverse=True)
    c = n // 2
    positions = [c]
    for step in range(1, n):
        for pos in (c + step, c - step):
            if 0 <= pos < n and len(positions) < n:
                positions.append(pos)
    out = [0] * n
    for pos, val in zip(positions, order):
        out[pos] = val
    assert math.prod(out) == dim  # internal invariant, not user input
    return tuple(out)
