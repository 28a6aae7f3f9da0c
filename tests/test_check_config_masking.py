"""`turnout check-config` names what is wrong and where, and never prints a credential:
not a header value, not the user and password or the query of a URL, not a provider's
whole entry, not the YAML line a key is written on."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_cli import check_in_process, run, write

CASES = {
    "header-value": (
        "providers:\n  up: {kind: openai, base_url: http://h/v1,"
        " headers: {X-Api-Key: [hunter2]}}\n",
        "providers.up.headers.X-Api-Key",
    ),
    "url-credentials": (
        "providers:\n  up: {kind: openai, base_url: 'ftp://user:hunter2@10.0.0.5:9/v1'}\n",
        "providers.up.base_url",
    ),
    "url-query": (
        "providers:\n  up: {kind: openai, base_url: 'ftp://h/v1?api_key=hunter2'}\n",
        "providers.up.base_url",
    ),
    "whole-provider": (
        "providers:\n  up: {kind: opnai, base_url: 'http://h/v1', api_key: hunter2,"
        " headers: {X: hunter2}}\n",
        "providers.up.kind",
    ),
    "no-kind": (
        "providers:\n  up: {base_url: 'http://u:hunter2@h/v1', headers: {X: hunter2}}\n",
        "providers.up.kind",
    ),
    "yaml-line": (
        'providers:\n  up: {kind: openai, base_url: http://h/v1, api_key: "hunter2\n',
        "line 2",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_check_config_never_prints_a_credential(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    text, where = CASES[case]
    stderr = check_in_process(write(tmp_path, text), capsys)
    assert where in stderr
    assert "hunter2" not in stderr


def test_a_header_value_of_the_wrong_type_is_not_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = "providers:\n  up: {kind: openai, base_url: http://h/v1, headers: {X-Key: 7294}}\n"
    stderr = check_in_process(write(tmp_path, text), capsys)
    assert "providers.up.headers.X-Key" in stderr
    assert "7294" not in stderr


def test_a_url_is_shown_without_its_credentials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = "providers:\n  up: {kind: openai, base_url: 'ftp://user:hunter2@h:9/v1?k=hunter2'}\n"
    stderr = check_in_process(write(tmp_path, text), capsys)
    assert "'ftp://***@h:9/v1?k=***'" in stderr


def test_the_console_script_masks_too(tmp_path: Path) -> None:
    result = run(["check-config", str(write(tmp_path, CASES["url-credentials"][0]))])
    assert result.returncode == 1
    assert "providers.up.base_url" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (
            "providers:\n  up: {kind: openai, base_url: http://h/v1,"
            " apikey: sk-proj-hunter2RealSecretKey}\n",
            "providers.up.apikey",
        ),
        ("keys: [{key: k-1234567890, extra: tk-admin-hunter2}]\n", "keys[0].extra"),
        ("server: {hots: hunter2-host}\n", "server.hots"),
        ("models: {m: {deployments: [], translation: hunter2}}\n", "models.m.translation"),
    ],
    ids=["misspelt-api-key", "extra-under-keys", "extra-anywhere", "choice-with-a-secret-shape"],
)
def test_a_misspelt_key_or_a_secret_looking_value_is_never_echoed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, where: str
) -> None:
    stderr = check_in_process(write(tmp_path, text), capsys)
    assert where in stderr
    assert "hunter2" not in stderr


def test_a_misspelt_choice_is_still_echoed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = "models: {m: {deployments: [], translation: drpo}}\n"
    assert "(got 'drpo')" in check_in_process(write(tmp_path, text), capsys)
