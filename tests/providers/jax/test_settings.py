"""`kind: jax` configuration, device and dtype choice, and the shape buckets."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from policies.config import TurnoutConfig
from providers.jax.buckets import Buckets, bucket, power_of_two
from providers.jax.loading import resolve_device, resolve_dtype
from providers.jax.settings import JaxSettings
from providers.registry import KINDS
from providers.torch.settings import TorchSettings


def test_settings_have_the_torch_keys_and_defaults() -> None:
    settings = JaxSettings.model_validate({"kind": "jax"})
    assert (settings.model, settings.device, settings.dtype) == (
        "smollm2-135m-instruct",
        "auto",
        "auto",
    )
    assert (settings.max_slots, settings.max_context) == (16, None)
    with pytest.raises(ValueError, match="extra"):
        JaxSettings.model_validate({"kind": "jax", "slots": 4})
    with pytest.raises(ValueError, match="device"):
        JaxSettings.model_validate({"kind": "jax", "device": "tpu0"})


def test_a_torch_deployment_switches_to_jax_by_its_kind_alone() -> None:
    torch_keys = {"model": "smollm2-135m-instruct", "device": "cuda", "dtype": "bfloat16"}
    TorchSettings.model_validate({"kind": "torch", **torch_keys})
    assert JaxSettings.model_validate({"kind": "jax", **torch_keys}).device == "cuda"
    assert JaxSettings.model_validate({"kind": "jax", "device": "gpu"}).device == "gpu"


def test_a_config_with_kind_jax_validates_and_is_registered() -> None:
    config = TurnoutConfig.model_validate(
        {
            "providers": {"local": {"kind": "jax", "max_slots": 2}},
            "models": {"m": {"deployments": [{"provider": "local", "model": "m"}]}},
        }
    )
    assert isinstance(config.providers["local"], JaxSettings)
    assert KINDS["jax"].settings is JaxSettings


def test_device_and_dtype() -> None:
    cpu = resolve_device("cpu")
    assert cpu.platform == "cpu"
    assert resolve_device("auto") == jax.devices()[0]
    assert resolve_dtype("auto", cpu) == np.float32
    assert resolve_dtype("bfloat16", cpu).name == "bfloat16"
    gpus = [device for device in jax.devices() if device.platform == "gpu"]
    for name in ("gpu", "cuda"):  # cuda: kind: torch's name for it
        if gpus:
            assert resolve_device(name) == gpus[0]
        else:
            with pytest.raises(ValueError, match=f"device '{name}' requested"):
                resolve_device(name)


def test_buckets_are_powers_of_two_capped_at_the_cache() -> None:
    assert [power_of_two(n) for n in (1, 2, 3, 5, 16, 17)] == [1, 2, 4, 8, 16, 32]
    assert bucket(3, smallest=16, largest=512) == 16
    assert bucket(300, smallest=16, largest=512) == 512
    assert bucket(300, smallest=16, largest=400) == 400
    assert bucket(17, smallest=16, largest=512, factor=4) == 64
    with pytest.raises(ValueError, match="outside"):
        bucket(401, smallest=16, largest=400)
    buckets = Buckets(max_slots=12, max_context=1000, chunk_tokens=200, block_tokens=16)
    assert [buckets.batch(n) for n in (1, 3, 9, 12)] == [1, 4, 12, 12]
    assert [buckets.window(n) for n in (1, 65, 1000)] == [64, 128, 1000]
    # Prefill passes: chunks up to 256 tokens (200 rounded up), windows x4, rows capped so
    # that rows x length stays within 256.
    assert buckets.chunk_limit == 256
    assert [buckets.chunk(n) for n in (1, 17, 65, 256)] == [16, 32, 128, 256]
    assert [buckets.chunk_rows(n) for n in (16, 64, 256)] == [12, 4, 1]
    assert [buckets.chunk_window(n) for n in (1, 65, 257, 1000)] == [64, 256, 1000, 1000]
    assert [buckets.blocks(n) for n in (1, 2, 5, 62)] == [1, 4, 16, 62]
    # Every bucket, as `compile_ahead` compiles them: each rule's value set, in order.
    assert buckets.batches() == (1, 2, 4, 8, 12)
    assert buckets.windows() == (64, 128, 256, 512, 1000)
    assert buckets.block_counts() == (1, 4, 16, 62)
    shapes = {(s.rows, s.length, s.window) for s in buckets.chunk_shapes()}
    assert {(12, 16, 1000), (8, 32, 64), (1, 256, 256)} <= shapes
    assert not {(2, 256, 256), (16, 32, 64), (1, 256, 64), (1, 128, 64)} & shapes
    defaults = Buckets(max_slots=16, max_context=2048)
    counts = (len(defaults.chunk_shapes()), len(defaults.batches()), len(defaults.windows()))
    assert counts == (57, 5, 6)  # 57 prefill passes + 5 x 6 decode steps + 6 copies
    assert len(defaults.block_counts()) == 5  # a save and a load each: 10
    assert Buckets(max_slots=1, max_context=10).chunk_shapes()[0].length == 10
