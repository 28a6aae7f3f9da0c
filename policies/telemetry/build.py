"""A gateway's `Tracing`, from its config and the environment: none while tracing is off
(the SDK is not even imported then), the previous gateway's when a reload left the export
as it was (its queue and exporter thread go on), else a new one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from policies.telemetry.settings import TelemetrySettings, trace_export

if TYPE_CHECKING:  # the SDK is imported only once tracing is on
    from policies.telemetry.batch import Dropped
    from policies.telemetry.tracing import Tracing


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
