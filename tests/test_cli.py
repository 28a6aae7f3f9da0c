"""`turnout check-config` and `turnout serve`, run as real subprocesses (the console script
and `python -m router`), plus `${ENV}` interpolation through `load_config`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import pytest

from policies.config import TurnoutConfig
from policies.loading import ConfigError, load_config
from router.cli import main as cli_main
from router.cli import open_access_refusal

REPO = Path(__file__).resolve().parent.parent
TURNOUT = Path(sys.executable).parent / "turnout"
COMMANDS = {"script": [str(TURNOUT)], "module": [sys.executable, "-m", "router"]}
OUR_VARS = ("TURNOUT_TEST_URL", "TURNOUT_TEST_KEY", "TURNOUT_TEST_PORT", "TURNOUT_TEST_TEAM")

GOOD = """\
server:
  host: 127.0.0.1
  port: 8000
providers:
  up:
    kind: openai
    base_url: http://127.0.0.1:9/v1
    api_key: sk-upstream
models:
  chat-small:
    deployments:
      - {provider: up, model: small-1}
      - {provider: up, model: small-2}
    fallbacks: [chat-large]
    context_window_fallbacks: [chat-large]
  chat-large:
    deployments:
      - {provider: up, model: large}
keys:
  - key: sk-team
"""


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in OUR_VARS}
    env.update(extra)
    return env


def run(
    args: list[str], *, how: str = "script", env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMANDS[how], *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(env) if env is not None else clean_env(),
        cwd=REPO,
        check=False,
    )


def write(tmp_path: Path, text: str, name: str = "turnout.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def assert_clean_failure(result: subprocess.CompletedProcess[str], path: Path) -> str:
    assert result.returncode == 1, result
    assert str(path) in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    return result.stderr


# ---------------------------------------------------------------------------------------------
# check-config
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["script", "module"])
def test_check_config_accepts_a_good_file(tmp_path: Path, how: str) -> None:
    path = write(tmp_path, GOOD)
    result = run(["check-config", str(path)], how=how)
    assert result.returncode == 0, result.stderr
    assert str(path) in result.stdout
    assert "ok (1 providers, 2 models, 1 keys)" in result.stdout


def test_check_config_accepts_the_shipped_example() -> None:
    example = REPO / "config" / "example.yaml"
    env = clean_env(OPENAI_API_KEY="sk-x", TEAM_KEY="sk-team")
    result = run(["check-config", str(example)], env=env)
    assert result.returncode == 0, result.stderr


BAD_CONFIGS = {
    "deployment-without-provider": (
        """
        providers:
          up: {kind: openai, base_url: http://127.0.0.1:9/v1}
        models:
          chat-small:
            deployments:
              - {model: x}
        """,
        ["models.chat-small.deployments[0].provider", "Field required"],
    ),
    "unknown-provider": (
        """
        providers:
          up: {kind: openai, base_url: http://127.0.0.1:9/v1}
        models:
          chat-small:
            deployments:
              - {provider: up, model: x}
              - {provider: nope, model: y}
        """,
        ["models.chat-small.deployments[1].provider", "unknown provider 'nope'", "up"],
    ),
    "unknown-fallback": (
        """
        providers:
          up: {kind: openai, base_url: http://127.0.0.1:9/v1}
        models:
          chat-small:
            deployments: [{provider: up, model: x}]
            fallbacks: [ghost]
        """,
        ["models.chat-small.fallbacks[0]", "unknown model 'ghost'", "chat-small"],
    ),
    "unknown-context-window-fallback": (
        """
        providers:
          up: {kind: openai, base_url: http://127.0.0.1:9/v1}
        models:
          chat-small:
            deployments: [{provider: up, model: x}]
            context_window_fallbacks: [long-ghost]
        """,
        ["models.chat-small.context_window_fallbacks[0]", "long-ghost"],
    ),
    "no-deployments": (
        """
        providers:
          up: {kind: openai, base_url: http://127.0.0.1:9/v1}
        models:
          chat-small: {deployments: []}
        """,
        ["models.chat-small.deployments", "at least 1"],
    ),
    "wrong-kind": (
        """
        providers:
          up: {kind: openia, base_url: http://127.0.0.1:9/v1}
        """,
        ["providers.up.kind", "'openai'", "openia"],
    ),
    "base-url-scheme": (
        """
        providers:
          up: {kind: openai, base_url: 127.0.0.1:9/v1}
        """,
        ["providers.up.base_url", "http://", "127.0.0.1:9/v1"],
    ),
    "missing-base-url": (
        """
        providers:
          up: {kind: openai}
        """,
        ["providers.up.base_url", "Field required"],
    ),
    "port-out-of-range": (
        """
        server: {port: 70000}
        """,
        ["server.port", "65535", "70000"],
    ),
    "misspelt-key": (
        """
        server: {hots: 0.0.0.0}
        """,
        ["server.hots", "Extra inputs are not permitted"],
    ),
    "body-limit-too-small": (
        """
        server: {max_body_bytes: 10}
        """,
        ["server.max_body_bytes", "1024"],
    ),
    "keys-as-strings": (
        """
        keys: [sk-team]
        """,
        ["keys[0]"],
    ),
    "empty-key": (
        """
        keys: [{key: ""}]
        """,
        ["keys[0].key", "at least 1"],
    ),
    "retry-attempts": (
        """
        retry: {attempts: 0}
        """,
        ["retry.attempts", "greater than or equal to 1"],
    ),
    "not-yaml": ("providers: [\n", ["not valid YAML"]),
    "top-level-list": ("- providers\n", ["top level must be a mapping", "list"]),
}


def check_in_process(path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """`turnout check-config PATH` through `router.cli.main` in this process (the same code
    the console script runs; the subprocess tests cover the wiring). Returns stderr."""
    assert cli_main(["check-config", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert str(path) in captured.err
    assert "Traceback" not in captured.err
    return captured.err


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_check_config_names_file_key_path_and_expectation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    text, fragments = BAD_CONFIGS[case]
    stderr = check_in_process(write(tmp_path, text), capsys)
    for fragment in fragments:
        assert fragment in stderr, f"{fragment!r} not in {stderr!r}"


def test_check_config_reports_every_problem_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        """
        server: {port: -1}
        providers:
          up: {kind: other, base_url: http://127.0.0.1:9/v1}
        """,
    )
    stderr = check_in_process(path, capsys)
    assert "server.port" in stderr
    assert "providers.up.kind" in stderr
    assert "2 problem(s)" in stderr


def test_check_config_never_echoes_a_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        """
        providers:
          up: {kind: openai, base_url: http://127.0.0.1:9/v1, api_key: [sk-api-secret]}
        models: {m: {deployments: [{provider: up, model: x}]}}
        keys: [{key: "sha256:sk-top-secret"}]
        teams: {t: {keys: ["sha256:sk-team-secret"]}}
        """,
    )
    stderr = check_in_process(path, capsys)
    assert "providers.up.api_key" in stderr
    assert "keys[0].key" in stderr
    assert "teams.t.keys" in stderr
    assert "secret" not in stderr


def test_check_config_on_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "cannot read" in check_in_process(tmp_path / "nowhere.yaml", capsys)


def test_check_config_needs_a_path(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli_main(["check-config"])
    assert exc.value.code == 2  # argparse's usage error
    assert "path" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["unknown-provider"])
def test_module_and_script_say_the_same(tmp_path: Path, case: str) -> None:
    path = write(tmp_path, BAD_CONFIGS[case][0])
    script = run(["check-config", str(path)], how="script")
    module = run(["check-config", str(path)], how="module")
    assert (script.returncode, script.stdout, script.stderr) == (
        module.returncode,
        module.stdout,
        module.stderr,
    )
    assert module.returncode == 1
    assert str(path) in module.stderr
    assert BAD_CONFIGS[case][1][0] in module.stderr
    assert "Traceback" not in module.stderr


# ---------------------------------------------------------------------------------------------
# ${ENV} interpolation
# ---------------------------------------------------------------------------------------------

INTERPOLATED = """\
server:
  port: ${TURNOUT_TEST_PORT:-8123}
providers:
  up:
    kind: openai
    base_url: ${TURNOUT_TEST_URL}
    api_key: "${TURNOUT_TEST_KEY:-}"
models:
  m:
    deployments: [{provider: up, model: "prefix-${TURNOUT_TEST_TEAM:-default-team}-suffix"}]
"""


def test_env_vars_are_interpolated_through_the_cli(tmp_path: Path) -> None:
    path = write(tmp_path, INTERPOLATED)
    ok = run(["check-config", str(path)], env=clean_env(TURNOUT_TEST_URL="http://10.0.0.5/v1"))
    assert ok.returncode == 0, ok.stderr
    # A set variable's value is what gets validated: a bad one shows up in the error.
    bad = run(["check-config", str(path)], env=clean_env(TURNOUT_TEST_URL="ftp://from-env"))
    stderr = assert_clean_failure(bad, path)
    assert "providers.up.base_url" in stderr
    assert "ftp://from-env" in stderr


def test_default_applies_only_when_the_var_is_unset(tmp_path: Path) -> None:
    path = write(
        tmp_path, INTERPOLATED.replace("${TURNOUT_TEST_PORT:-8123}", "${TURNOUT_TEST_PORT:-99999}")
    )
    env = clean_env(TURNOUT_TEST_URL="http://h/v1")
    stderr = assert_clean_failure(run(["check-config", str(path)], env=env), path)
    assert "server.port" in stderr
    assert "99999" in stderr  # the default was used ...
    env["TURNOUT_TEST_PORT"] = "8080"
    assert run(["check-config", str(path)], env=env).returncode == 0  # ... and the var wins


def test_interpolated_values_land_where_written(tmp_path: Path) -> None:
    path = write(tmp_path, INTERPOLATED)
    config = load_config(path, env={"TURNOUT_TEST_URL": "http://10.0.0.5:8001/v1/"})
    assert config.server.port == 8123
    provider = config.providers["up"]
    assert provider.base_url == "http://10.0.0.5:8001/v1"
    assert provider.api_key == ""
    assert config.models["m"].deployments[0].model == "prefix-default-team-suffix"
    config = load_config(
        path,
        env={
            "TURNOUT_TEST_URL": "https://api.example.com/v1",
            "TURNOUT_TEST_PORT": "9001",
            "TURNOUT_TEST_KEY": "sk-from-env",
            "TURNOUT_TEST_TEAM": "red",
        },
    )
    assert config.server.port == 9001
    assert config.providers["up"].api_key == "sk-from-env"
    assert config.models["m"].deployments[0].model == "prefix-red-suffix"


def test_interpolation_does_not_recurse(tmp_path: Path) -> None:
    path = write(tmp_path, INTERPOLATED)
    config = load_config(
        path, env={"TURNOUT_TEST_URL": "http://h/v1", "TURNOUT_TEST_KEY": "${TURNOUT_TEST_URL}"}
    )
    assert config.providers["up"].api_key == "${TURNOUT_TEST_URL}"


def test_missing_env_var_names_key_path_and_variable(tmp_path: Path) -> None:
    path = write(tmp_path, INTERPOLATED)
    stderr = assert_clean_failure(run(["check-config", str(path)]), path)
    assert "providers.up.base_url" in stderr
    assert "TURNOUT_TEST_URL" in stderr
    assert "not set" in stderr


def test_missing_env_var_inside_a_list_names_the_index(tmp_path: Path) -> None:
    path = write(tmp_path, "keys:\n  - key: sk-a\n  - key: ${TURNOUT_TEST_KEY}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path, env={})
    message = str(exc.value)
    assert str(path) in message
    assert "keys[1].key" in message
    assert "TURNOUT_TEST_KEY" in message


# ---------------------------------------------------------------------------------------------
# serve: refusing to be open to the network
# ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        return int(sock.getsockname()[1])


def nothing_listens(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) != 0


OPEN_CONFIG = "providers: {}\nmodels: {}\n"


@pytest.mark.parametrize(("how", "host"), [("script", "0.0.0.0"), ("module", "0.0.0.0")])
def test_serve_without_keys_refuses_a_public_address(tmp_path: Path, how: str, host: str) -> None:
    path = write(tmp_path, OPEN_CONFIG)
    port = free_port()
    result = run(["serve", "--config", str(path), "--host", host, "--port", str(port)], how=how)
    assert result.returncode == 2, result
    assert f"refusing to serve {host}" in result.stderr
    assert "no keys" in result.stderr
    assert "--allow-open" in result.stderr
    assert "Traceback" not in result.stderr
    assert nothing_listens(port)


def test_serve_refuses_a_public_host_from_the_config_too(tmp_path: Path) -> None:
    port = free_port()
    path = write(tmp_path, f"server: {{host: 0.0.0.0, port: {port}}}\n{OPEN_CONFIG}")
    result = run(["serve", "--config", str(path)])
    assert result.returncode == 2
    assert "refusing to serve 0.0.0.0" in result.stderr
    assert nothing_listens(port)


def test_serve_with_a_bad_config_fails_before_binding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "server: {port: 70000}\n")
    assert cli_main(["serve", "--config", str(path), "--port", str(free_port())]) == 1
    assert "server.port" in capsys.readouterr().err


def test_serve_refusal_in_process_does_not_start_a_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, OPEN_CONFIG)
    port = free_port()
    args = ["serve", "--config", str(path), "--host", "192.0.2.10", "--port", str(port)]
    assert cli_main(args) == 2
    assert "refusing to serve 192.0.2.10" in capsys.readouterr().err
    assert nothing_listens(port)


def test_loopback_addresses_need_no_keys() -> None:
    config = TurnoutConfig()
    for host in ("127.0.0.1", "127.0.0.53", "localhost", "::1", "[::1]"):
        assert open_access_refusal(config, host, allow_open=False) is None, host
    for host in ("0.0.0.0", "::", "10.1.2.3", "example.com", "[::]"):
        assert open_access_refusal(config, host, allow_open=False), host
        assert open_access_refusal(config, host, allow_open=True) is None
    keyed = TurnoutConfig.model_validate({"keys": [{"key": "sk-team"}]})
    assert open_access_refusal(keyed, "0.0.0.0", allow_open=False) is None


@pytest.fixture
def served() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Servers started by a test; each is terminated (and reaped) at teardown."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def serve_until_live(
    served: list[subprocess.Popen[bytes]], args: list[str], port: int, how: str = "script"
) -> httpx.Client:
    proc = subprocess.Popen(
        [*COMMANDS[how], "serve", *args, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=clean_env(),
        cwd=REPO,
    )
    served.append(proc)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            stderr = proc.stderr.read().decode() if proc.stderr else ""
            pytest.fail(f"serve exited with {proc.returncode}: {stderr}")
        try:
            if httpx.get(f"{url}/health/live", timeout=2).status_code == 200:
                return httpx.Client(base_url=url, timeout=5)
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail("serve never became live")


def test_serve_with_allow_open_starts_on_a_public_address(
    tmp_path: Path, served: list[subprocess.Popen[bytes]]
) -> None:
    path = write(tmp_path, OPEN_CONFIG)
    port = free_port()
    with serve_until_live(
        served, ["--config", str(path), "--host", "0.0.0.0", "--allow-open"], port
    ) as client:
        assert client.get("/health/ready").json()["status"] == "ready"
        assert client.get("/v1/models").json() == {"object": "list", "data": []}
    proc = served[0]
    proc.terminate()
    assert proc.wait(timeout=15) is not None
    assert nothing_listens(port)


def test_serve_with_keys_starts_on_a_public_address(
    tmp_path: Path, served: list[subprocess.Popen[bytes]]
) -> None:
    path = write(tmp_path, GOOD)
    port = free_port()
    with serve_until_live(
        served, ["--config", str(path), "--host", "0.0.0.0"], port, how="module"
    ) as client:
        assert client.get("/v1/models").status_code == 401
        listed = client.get("/v1/models", headers={"authorization": "Bearer sk-team"})
        assert [m["id"] for m in listed.json()["data"]] == ["chat-small", "chat-large"]


def test_serve_on_a_port_in_use_says_so_in_one_line(tmp_path: Path) -> None:
    """Before, granian printed a Rust traceback and exited 1."""
    path = write(tmp_path, OPEN_CONFIG)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(["serve", "--config", str(path), "--port", str(port)])
    assert result.returncode == 2, result
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "in use" in result.stderr
    assert "Traceback" not in result.stderr
