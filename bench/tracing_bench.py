"""What tracing adds to a request (issue 20): Turnout with tracing off, and with tracing on
(every request sampled, exported over OTLP/HTTP to a real receiver on loopback), against
the mock upstream directly, interleaved in one run as `gateway_bench.py` does.

    python bench/tracing_bench.py [--sequential 2000] [--rounds 3] [--baseline DIR]
        [--baseline-on DIR]
    python bench/tracing_bench.py --micro     # per-span costs, in process

Variants, each its own `turnout serve` (granian) process:
- `off`: no `telemetry:` section (the gateway bench's configuration): no tracer at all;
- `on`: `telemetry: {otlp_endpoint: <receiver>, sample_ratio: 1.0}`: a server span and a
  client span per request, exported in batches by the SDK's thread;
- `on@base` (with `--baseline-on DIR`): another checkout's Turnout with tracing on, to
  compare two versions of tracing within one run (`on - on@base`);
- `off@base` (with `--baseline DIR`, a checkout from before tracing, e.g. `git worktree
  add /tmp/base <commit>`): whether tracing being off costs anything at all.

Sequential non-streaming and streaming requests on keep-alive connections, the variants
interleaved request by request (order alternating), `--rounds` times; each round reports
every variant's added p50 (through Turnout minus direct) and `on - off`. The receiver (its
own process, decoding every export with opentelemetry-proto) reports how many spans it got,
so the run shows the spans really left. Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from gateway_bench import (  # noqa: E402 - the bench's own helpers, beside this file
    MOCK,
    ROOT,
    check_imports_from,
    free_port,
    sequential,
    wait_ready,
)


def sink(port: int) -> None:
    """An OTLP/HTTP receiver: decodes each export, counts its spans (GET /count)."""
    import gzip

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    )

    spans = [0]
    empty = ExportTraceServiceResponse().SerializeToString()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length", "0")))
            if self.headers.get("content-encoding") == "gzip":
                raw = gzip.decompress(raw)
            request = ExportTraceServiceRequest.FromString(raw)
            spans[0] += sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
            self._answer(empty, "application/x-protobuf")

        def do_GET(self) -> None:
            self._answer(str(spans[0]).encode(), "text/plain")

        def _answer(self, body: bytes, kind: str) -> None:
            self.send_response(200)
            self.send_header("content-type", kind)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    class Quiet(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # a readiness probe hanging up on its keep-alive connection

    Quiet(("127.0.0.1", port), Handler).serve_forever()


@contextmanager
def running(
    mock_port: int, sink_port: int, turnouts: dict[str, int], bases: dict[str, Path]
) -> Iterator[None]:
    """The mock, the receiver and a Turnout per variant; `bases`: the checkout a variant
    runs from, where not this one."""
    base_url = f"http://127.0.0.1:{mock_port}/v1"
    plain: dict[str, Any] = {
        "providers": {"mock": {"kind": "openai", "base_url": base_url}},
        "models": {"mock-model": {"deployments": [{"provider": "mock", "model": "mock-model"}]}},
    }
    traced = {**plain, "telemetry": {"otlp_endpoint": f"http://127.0.0.1:{sink_port}"}}
    procs = [
        subprocess.Popen([sys.executable, str(MOCK), "--port", str(mock_port)]),
        subprocess.Popen([sys.executable, __file__, "--sink", str(sink_port)]),
    ]
    files: list[str] = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    for name, port in turnouts.items():
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            json.dump(traced if name.startswith("on") else plain, f)  # JSON is YAML
            files.append(f.name)
        root, own_env = ROOT, env
        if name in bases:
            root, own_env = bases[name], {**env, "PYTHONPATH": str(bases[name])}
            check_imports_from(root, own_env)
        command = ["-m", "router", "serve", "--config", f.name, "--port", str(port)]
        procs.append(
            subprocess.Popen(
                [sys.executable, *command, "--server", "granian"],
                cwd=root,
                env=own_env,
                stderr=subprocess.DEVNULL,
            )
        )
    try:
        wait_ready(mock_port, "/v1/models")
        wait_ready(sink_port, "/count")
        for port in turnouts.values():
            wait_ready(port, "/health/ready")
        yield
    finally:
        for p in reversed(procs):
            p.terminate()
            p.wait(timeout=10)
        for path in files:
            os.unlink(path)


def spans_received(sink_port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{sink_port}/count", timeout=5) as answer:
        return int(answer.read())


def micro(count: int = 5000) -> None:
    """Per span, in this process: the SDK tracer's span against Turnout's recorder, and
    the exporter package's encoder against Turnout's OTLP writer (µs, best of 3)."""
    sys.path.insert(0, str(ROOT))
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import SpanKind

    from policies.telemetry.exporter import readable
    from policies.telemetry.otlp_wire import WireEncoder
    from policies.telemetry.recorder import CLIENT, RecordedSpan, SpanRecorder

    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "mock-model",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.max_tokens": 64,
        "gen_ai.request.temperature": 0.7,
        "gen_ai.response.model": "mock-model",
        "gen_ai.response.finish_reasons": ["stop"],
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 40,
        "turnout.deployment": "mock/mock-model",
        "turnout.attempt.reason": "first",
        "turnout.attempt.outcome": "ok",
    }

    def best(work: Any, n: int) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            work()
            times.append((time.perf_counter() - start) / n * 1e6)
        return min(times)

    resource = Resource.create({"service.name": "turnout"})
    tracer = TracerProvider(resource=resource, shutdown_on_exit=False).get_tracer("bench")
    ended: list[RecordedSpan] = []
    recorder = SpanRecorder(ended.append, 1 << 64)

    def sdk() -> None:
        for _ in range(count):
            tracer.start_span("chat mock-model", None, SpanKind.CLIENT, attributes).end()

    def ours() -> None:
        ended.clear()
        for _ in range(count):
            span = recorder.root("chat mock-model", CLIENT)
            span.set_attributes(attributes)
            span.end()

    print(
        f"span start + 12 attributes + end: SDK tracer {best(sdk, count):.1f} µs, "
        f"Turnout's recorder {best(ours, count):.1f} µs"
    )
    queued = ended[:1024]
    readables = [readable(span, resource) for span in queued]
    wire = WireEncoder(resource.attributes)
    package = best(lambda: encode_spans(readables).SerializePartialToString(), len(queued))
    written = best(lambda: wire.encode(queued), len(queued))
    print(
        f"OTLP protobuf, per span: exporter package {package:.1f} µs, Turnout's writer "
        f"{written:.1f} µs"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sequential", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="a checkout from before tracing")
    parser.add_argument(
        "--baseline-on", type=Path, help="a checkout whose tracing to run beside this one's"
    )
    parser.add_argument("--micro", action="store_true", help="per-span costs in process")
    parser.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink is not None:
        sink(args.sink)
        return
    if args.micro:
        micro()
        return
    names = ["off", "on"] + (["off@base"] if args.baseline else [])
    if args.baseline_on:
        names.append("on@base")
    turnouts = {name: free_port() for name in names}
    mock_port, sink_port = free_port(), free_port()
    ports = {"direct": mock_port, **turnouts}
    rows: list[dict[str, Any]] = []
    bases = {"off@base": args.baseline, "on@base": args.baseline_on}
    bases = {name: root for name, root in bases.items() if root is not None}
    with running(mock_port, sink_port, turnouts, bases):
        for round_ in range(args.rounds):
            for stream in (False, True):
                kind = "stream" if stream else "json"
                seq = sequential(ports, args.sequential, stream)
                key = "first_p50_ms" if stream else "p50_ms"
                added = {n: seq[n][key] - seq["direct"][key] for n in turnouts}
                rows.append({"round": round_, "kind": kind, "direct": seq["direct"][key], **added})
                cells = "  ".join(f"{n} {v:+.3f}" for n, v in added.items())
                extra = f"  on-off {added['on'] - added['off']:+.3f}"
                if "off@base" in added:
                    extra += f"  off-base {added['off'] - added['off@base']:+.3f}"
                if "on@base" in added:
                    extra += f"  on@base-off {added['on@base'] - added['off']:+.3f}"
                print(
                    f"round {round_} {kind:6} {key}: direct {seq['direct'][key]:.3f}  "
                    f"added: {cells}{extra}",
                    flush=True,
                )
        time.sleep(6)  # the SDK exports every 5 s: the last batch arrives
        print(f"spans received by the OTLP receiver: {spans_received(sink_port)}")
    for kind in ("json", "stream"):
        mine = [r for r in rows if r["kind"] == kind]
        on_off = sorted(r["on"] - r["off"] for r in mine)
        print(f"{kind}: on - off per round (ms): {', '.join(f'{d:+.3f}' for d in on_off)}")
        if args.baseline:
            off_base = sorted(r["off"] - r["off@base"] for r in mine)
            print(f"{kind}: off - base per round (ms): {', '.join(f'{d:+.3f}' for d in off_base)}")
        if args.baseline_on:
            base_on = sorted(r["on@base"] - r["off"] for r in mine)
            print(
                f"{kind}: on@base - off per round (ms): {', '.join(f'{d:+.3f}' for d in base_on)}"
            )


if __name__ == "__main__":
    main()
