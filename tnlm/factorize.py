"""Balanced factorisation of a dimension into n integer factors."""

from __future__ import annotations

import math
import numbers
import operator
from functools import cache
from typing import Any

__all__ = ["factorize"]

#: Primes below this are found by trial division; larger ones by Miller-Rabin and Pollard's rho.
_TRIAL_LIMIT = 1000

#: Largest ``dim`` accepted: no array axis is longer, and below it Miller-Rabin is exact and
#: Pollard's rho needs at most about 2**16 steps per factor (a product of two 32-bit primes:
#: 0.04 s).
_MAX_DIM = 2**64 - 1

#: Miller-Rabin bases that decide primality exactly for n < 3.3e24 (Sorenson and Webster 2015).
_MR_BASES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41)


def _is_probable_prime(n: int) -> bool:
    """Miller-Rabin with the first 13 prime bases: exact for ``n < 3.3e24``, and a
    probable-prime test beyond."""
    if n < 2:
        return False
    for p in _MR_BASES:
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for a in _MR_BASES:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def _pollard_rho(n: int) -> int:
    """A non-trivial factor of the odd composite ``n`` (Brent's variant of Pollard's rho)."""
    for c in range(1, n):
        y, r, q, g, m = 2, 1, 1, 1, 128
        x = ys = y
        while g == 1:
            x = y
            for _ in range(r):
                y = (y * y + c) % n
            k = 0
            while k < r and g == 1:
                ys = y
                for _ in range(min(m, r - k)):
                    y = (y * y + c) % n
                    q = q * abs(x - y) % n
                g = math.gcd(q, n)
                k += m
            r *= 2
        if g == n:  # the batch overshot: step back one at a time
            g = 1
            while g == 1:
                ys = (ys * ys + c) % n
                g = math.gcd(abs(x - ys), n)
        if g != n:
            return g
    raise ArithmeticError(f"Pollard's rho found no factor of {n}")  # unreachable for composites


def _prime_factors(n: int) -> list[int]:
    """Prime factors of ``n >= 1`` with multiplicity, ascending. Trial division by the small
    primes, then Miller-Rabin and Pollard's rho: ``2**61 - 1`` takes microseconds, not the
    minutes of trial division up to its square root."""
    out: list[int] = []
    p = 2
    while p < _TRIAL_LIMIT and p * p <= n:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1 if p == 2 else 2
    stack = [n] if n > 1 else []
    while stack:
        m = stack.pop()
        if m < _TRIAL_LIMIT * _TRIAL_LIMIT or _is_probable_prime(m):
            out.append(m)  # no factor below _TRIAL_LIMIT: below its square, m is prime
            continue
        d = _pollard_rho(m)
        stack += [d, m // d]
    return sorted(out)


def _divisors(primes: list[int]) -> list[int]:
    """All divisors of the product of ``primes`` (with multiplicity), ascending."""
    divs = [1]
    for p in sorted(set(primes)):
        k = primes.count(p)
        divs = [d * p**e for d in divs for e in range(k + 1)]
    return sorted(divs)


def _most_balanced(dim: int, n: int) -> tuple[int, ...]:
    """The factors of the most balanced factorisation, in descending order (see
    :func:`factorize`)."""
    divs = _divisors(_prime_factors(dim))

    @cache
    def best(d: int, k: int) -> tuple[int, ...]:
        # the lexicographically smallest descending k-tuple with product d: its largest
        # factor f is the smallest divisor of d, at least d**(1/k), for which the rest splits
        # into factors no larger than f; the rest is then best(d // f, k - 1)
        if k == 1:
            return (d,)
        for f in divs:
            if f > d:
                break
            if d % f or f**k < d:
                continue
            rest = best(d // f, k - 1)
            if rest[0] <= f:
                return (f, *rest)
        raise AssertionError("unreachable: (d, 1, ..., 1) always qualifies")

    return best(dim, n)


def _check_positive_int(value: Any, name: str) -> int:
    """``value`` as a Python int >= 1: Python or numpy integers; bool and floats (even
    integral ones such as 8.0) raise ``ValueError`` naming the value. (``numpy.bool_`` is
    not an ``Integral``.)"""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        out = operator.index(value)
        if out >= 1:
            return out
    raise ValueError(f"{name} must be a positive int; got {value!r}")


def factorize(dim: int, n: int) -> tuple[int, ...]:
    """Split ``dim`` into the most balanced ``n`` integer factors.

    "Most balanced" is defined exactly: among all multisets of ``n`` positive integers whose
    product is ``dim``, the one whose factors, sorted in descending order, form the
    lexicographically smallest tuple. That is, the largest factor is as small as possible;
    among those, the second largest is as small as possible; and so on. (So no factor exceeds
    the smallest one by more than a prime factor of ``dim``: moving that prime would give a
    smaller tuple.) The factors are then placed with the largest in the middle (index
    ``n // 2``), the next ones alternating right and left, so the central core of an MPO
    carries the largest dimensions.

    Parameters
    ----------
    dim : int
        The dimension to split (>= 1). Python or numpy integers.
    n : int
        Number of factors (>= 1).

    Returns
    -------
    tuple of int, length n
        Factors whose product is ``dim`` (a prime ``dim`` gives ones around it).

    Raises
    ------
    ValueError
        ``dim`` or ``n`` not a positive integer (bool and floats such as 8.9 included), or
        ``dim`` above ``2**64 - 1`` (longer than any array axis).

    Notes
    -----
    ``dim`` is factored by trial division by the odd numbers below 1000, then Miller-Rabin
    (deterministic in this range) and Pollard's rho (Brent), so large primes such as
    ``2**61 - 1`` are recognised at once and a product of two 32-bit primes splits in
    hundredths of a second. The search for the most balanced split runs over the divisors of
    ``dim`` with memoisation.

    Examples
    --------
    >>> from tnlm import factorize
    >>> factorize(3072, 5)
    (4, 4, 8, 6, 4)
    >>> factorize(4096, 5)
    (4, 4, 8, 8, 4)
    >>> factorize(768, 5)
    (3, 4, 4, 4, 4)
    >>> factorize(3456, 3)
    (12, 18, 16)
    """
    dim = _check_positive_int(dim, "dim")
    n = _check_positive_int(n, "n (number of factors)")
    if dim > _MAX_DIM:
        raise ValueError(
            f"dim must be at most 2**64 - 1 (no array axis is longer); got {dim}, which "
            "could take Pollard's rho hours to factor"
        )
    order = _most_balanced(dim, n)
    c = n // 2
    positions = [c]
    for step in range(1, n):
        for pos in (c + step, c - step):
            if 0 <= pos < n and len(positions) < n:
                positions.append(pos)
    out = [0] * n
    for pos, val in zip(positions, order):
        out[pos] = val
    if math.prod(out) != dim:  # internal invariant, not user input
        raise AssertionError(f"factorize({dim}, {n}) produced {out}")
    return tuple(out)
