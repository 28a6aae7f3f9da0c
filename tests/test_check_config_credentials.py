"""A provider whose `base_url` carries credentials and that has an `api_key` too can never
make a call (the HTTP client refuses to send both): `turnout check-config` refuses it,
naming the key path, without echoing either credential."""

from __future__ import annotations

from pathlib import Path

import pytest

from policies.loading import load_config
from tests.test_cli import check_in_process, write

URL_SECRET, KEY_SECRET = "hunter2-url-secret", "sk-upstream-key-secret-123456"


def test_base_url_credentials_with_an_api_key_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        f"""
        providers:
          up:
            kind: openai
            base_url: http://alice:{URL_SECRET}@127.0.0.1:9/v1
            api_key: {KEY_SECRET}
        models:
          m: {{deployments: [{{provider: up, model: x}}]}}
        """,
    )

    stderr = check_in_process(path, capsys)

    assert "providers.up" in stderr
    assert "`base_url` holds credentials" in stderr
    assert "`api_key`" in stderr
    assert URL_SECRET not in stderr
    assert KEY_SECRET not in stderr


def test_base_url_credentials_alone_are_accepted(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        providers:
          up: {kind: openai, base_url: "http://alice:secret@127.0.0.1:9/v1"}
        models:
          m: {deployments: [{provider: up, model: x}]}
        """,
    )

    assert load_config(path).providers["up"].model_dump()["base_url"].startswith("http://alice:")
