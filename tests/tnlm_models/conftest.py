"""Fixtures shared by the model-layer tests."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _one_thread():
    """Run each test here on one torch thread: the tiny models are faster that way and do
    not fight other jobs for the cores (torchrun's worker processes are not affected)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def rebuilds(monkeypatch) -> list[int]:
    """Counts the encoder's batched rebuilds (one per MPO matrix type and rebuild)."""
    import tnlm_models.modeling as modeling

    calls: list[int] = []
    real = modeling.rebuild_weights

    def counting(layers):
        calls.append(1)
        return real(layers)

    monkeypatch.setattr(modeling, "rebuild_weights", counting)
    return calls
