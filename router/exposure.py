"""Who can reach the listener: the address Turnout binds, and the rule that keeps a keyless
config off the network. `turnout serve` checks it before binding, and every config the app
builds a gateway from (at start-up and at each reload) is checked again, against the same
listener, so no path leaves a non-loopback address open. The listener also says how many
worker processes serve behind it, and the same two checks hold the rule for several
(router/workers.py)."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from policies.config import TurnoutConfig
from router.workers import per_worker_refusal, unhosted_refusal


@dataclass(frozen=True, slots=True)
class Listener:
    """Where the server listens, whether the operator allowed it to be open
    (`--allow-open`), how many worker processes serve there, and the socket of the sampler
    host serving them their local models (router/sampler_process.py; None: none runs)."""

    host: str
    allow_open: bool = False
    workers: int = 1
    sampler_host: str | None = None

    def refusal(self, config: TurnoutConfig) -> str | None:
        """Why `config` must not be served here, or None when it may."""
        return open_access_refusal(
            config, self.host, allow_open=self.allow_open
        ) or per_worker_refusal(config, self.workers)

    def reload_refusal(self, config: TurnoutConfig) -> str | None:
        """`refusal`, and what only a reload (or a worker started on a file edited since
        `turnout serve` read it) can bring: the first local providers of a server whose
        workers have no sampler host."""
        return self.refusal(config) or unhosted_refusal(config, self.workers, self.sampler_host)


class OpenAccessRefused(Exception):
    """A config without keys was about to be served on a non-loopback address."""


def open_access_refusal(config: TurnoutConfig, host: str, *, allow_open: bool) -> str | None:
    """Why Turnout will not serve `config` open to the network on `host`, or None when it
    may: it has keys, the address is loopback, or the operator passed --allow-open."""
    if config.keys or any(t.keys for t in config.teams.values()) or allow_open:
        return None
    if is_loopback(host):
        return None
    return (
        f"refusing to serve {host}: no keys are configured, so anyone who can reach this "
        "address could use every backend. Add `keys:` to the config, bind a loopback "
        "address (127.0.0.1), or pass --allow-open if that is really intended."
    )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind_address(host: str, port: int) -> str:
    """The IP address to bind for `host`: a literal as it is (without IPv6 brackets), a
    name resolved (granian binds only literals: `localhost` would fail with "invalid IP
    address syntax"). Raises OSError when the name does not resolve."""
    bare = host.strip("[]")
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        pass
    found = socket.getaddrinfo(bare, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    if not found:
        raise OSError(f"{host} resolves to no address")
    # IPv4 first where the name has both: `localhost` is expected to answer on 127.0.0.1.
    found.sort(key=lambda entry: entry[0] != socket.AF_INET)
    return str(found[0][4][0])


def check_port_free(address: str, port: int) -> None:
    """Raise OSError when `address:port` is taken, so that `turnout serve` says so in one
    line instead of the server's traceback (granian's is Rust's). A probe: the port may
    still be taken between this and the server's bind, which then fails as before."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((address, port))
