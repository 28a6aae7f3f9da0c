"""Session-wide fixtures: each packaged model is loaded once for all torch tests."""

from __future__ import annotations

import pytest

pytest.importorskip("torch", reason="the torch provider needs the 'local' extra")

from providers.torch.embedder import TorchEmbedder
from providers.torch.loading import LoadedModel
from tests import local_model


@pytest.fixture(scope="session")
def smollm2() -> LoadedModel:
    return local_model.smollm2()


@pytest.fixture(scope="session")
def minilm() -> TorchEmbedder:
    return local_model.minilm()
