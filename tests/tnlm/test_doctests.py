"""Run the examples in tnlm's docstrings, one test per docstring that has any."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import tnlm

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _docstring_examples() -> list[doctest.DocTest]:
    finder = doctest.DocTestFinder(exclude_empty=True)
    found: dict[str, doctest.DocTest] = {}
    for info in pkgutil.walk_packages(tnlm.__path__, prefix="tnlm."):
        module = importlib.import_module(info.name)
        for test in finder.find(module):
            # re-exported objects are found from several modules; run each once
            if test.examples:
                found.setdefault(test.name, test)
    return sorted(found.values(), key=lambda t: t.name)


EXAMPLES = _docstring_examples()


def test_the_public_api_has_examples():
    names = {t.name.rsplit(".", 1)[-1] for t in EXAMPLES}
    assert {"mpo_decompose", "tt_decompose", "factorize", "contract", "save", "MPO"} <= names


@pytest.mark.parametrize("example", EXAMPLES, ids=[t.name for t in EXAMPLES])
def test_docstring_example(example):
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    result = runner.run(example)
    assert result.attempted > 0
    assert result.failed == 0, f"{result.failed} example(s) failed in {example.name}"
