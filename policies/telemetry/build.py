"""A gateway's `Tracing`, from its config and the environment: none while tracing is off
(the SDK is not even imported then), the previous gateway's when a reload left the export
as it was (its queue and exporter thread go on), else a new one."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from policies.telemetry.settings import TelemetrySettings, trace_export

if TYPE_CHECKING:
    from policies.telemetry.tracing import Tracing

Dropped = Callable[[int], None]  # told how many spans were lost (e.g. a Prometheus counter)


def build_tracing(
    settings: TelemetrySettings,
    environ: Mapping[str, str],
    previous: Tracing | None,
    dropped: Dropped | None,
) -> Tracing | None:
    export = trace_export(settings, environ)
    if export is None:
        return None
    if previous is not None and previous.export == export:
        return previous
    from policies.telemetry.tracing import Tracing  # the SDK, only once tracing is on

    return Tracing(export, dropped)
