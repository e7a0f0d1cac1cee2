"""Numbers as tables, labels and progress lines write them."""

from __future__ import annotations

import doctest

import numpy as np

from lrsweep import numbers


def test_module_doctest():
    assert doctest.testmod(numbers).failed == 0


def test_numpy_values_read_as_python_ones():
    assert numbers.short(np.float64(0.30000001)) == "0.3"
    assert numbers.short(np.float64("nan")) == "–"
    assert numbers.short(np.int64(7)) == "7"
    assert numbers.short(1e-7) == "1e-07" and numbers.short(123456.0) == "1.235e+05"
