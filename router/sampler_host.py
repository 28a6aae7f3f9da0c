"""`python -m router.sampler_host --config PATH --socket PATH`: the process that loads the
config's local providers (kind torch, jax) once and serves them to `turnout serve`'s
workers (providers/local/host.py). router/sampler_process.py starts it, restarts it if it
dies, and stops it after the workers have stopped.

It stops on SIGTERM (closing its providers), or on its own when `turnout serve` is gone
(router/orphan_guard.py). SIGINT and SIGHUP are ignored: a Ctrl-C reaches the whole
process group, and the host must outlive the workers' graceful stop, which still sends
it calls; a config reload is the workers' (a changed local provider needs a restart).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Sequence

import structlog

from policies.config import TurnoutConfig
from policies.loading import load_config
from policies.redaction import Redactor
from providers.local.host import SamplerHost
from providers.registry import build_provider, fingerprint
from router.logging import configure_logging
from router.orphan_guard import watch_parent
from router.workers import in_process_providers

log = structlog.get_logger("turnout.samplers")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m router.sampler_host")
    parser.add_argument("--config", required=True)
    parser.add_argument("--socket", required=True)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    scrubber = configure_logging(args.log_level, with_pid=True)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    watch_parent()
    config = load_config(args.config)
    scrubber.use(Redactor.from_config(config))
    asyncio.run(_serve(config, args.socket))
    return 0


async def _serve(config: TurnoutConfig, socket_path: str) -> None:
    local = {name: config.providers[name] for name in in_process_providers(config)}
    host = SamplerHost(
        {name: build_provider(name, s, config.timeouts) for name, s in local.items()},
        {name: fingerprint(s) for name, s in local.items()},
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await host.listen(socket_path)
    log.info("sampler_host_listening", providers=sorted(local))
    starting = asyncio.create_task(host.start_providers())
    try:
        await stop.wait()
    finally:
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        await host.aclose()
        log.info("sampler_host_stopped")


if __name__ == "__main__":
    raise SystemExit(main())
