"""Tracing off costs nothing: a gateway built and serving without `telemetry:` never
imports the OpenTelemetry tracing SDK nor its exporter (policies/telemetry/build.py). In a
fresh interpreter: this test process has imported them for the other trace tests.

(redis-py imports `opentelemetry.sdk.metrics` on its own wherever the SDK is installed,
for its opt-in client metrics: not Turnout's tracing, and not asserted here.)"""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import asyncio, os, sys, threading
for name in [n for n in os.environ if n.startswith("OTEL_")]:
    del os.environ[name]
from policies.config import TurnoutConfig
from router.app import create_app
config = TurnoutConfig.model_validate({
    "providers": {"a": {"kind": "openai", "base_url": "http://127.0.0.1:9"}},
    "models": {"m": {"deployments": [{"provider": "a", "model": "a-model"}]}},
})
app = create_app(config)
assert app.state.gateway.tracing is None
loaded = sorted(n for n in sys.modules if n.startswith((
    "opentelemetry.sdk.trace", "opentelemetry.exporter", "policies.telemetry.tracing",
    "policies.telemetry.recorder", "policies.telemetry.otlp_wire",
)))
assert not loaded, loaded
threads = [t.name for t in threading.enumerate() if t.name.startswith("OtelBatch")]
assert not threads, threads
print("ok")
"""


def test_tracing_off_imports_no_tracing_sdk() -> None:
    done = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("ok")
