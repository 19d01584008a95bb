"""Where the CLI finds Ray's auth token: the same order Ray's own clients use."""

from __future__ import annotations

from pathlib import Path

import pytest

from dspex.cli.cluster_access import find_token, normalize_http_address, resolve_address
from dspex.cli.common import CliError, ExitCode
from dspex.cli.local_cluster import choose_auth_mode


def test_env_token_wins_over_files(cli_env: Path) -> None:
    token_file = cli_env / "t"
    token_file.write_text("from-file")
    token = find_token({"RAY_AUTH_TOKEN": " from-env ", "RAY_AUTH_TOKEN_PATH": str(token_file)})
    assert token is not None and token.value == "from-env" and token.origin == "$RAY_AUTH_TOKEN"


def test_token_path_wins_over_default_file(cli_env: Path) -> None:
    (cli_env / "home" / ".ray").mkdir()
    (cli_env / "home" / ".ray" / "auth_token").write_text("default")
    token_file = cli_env / "t"
    token_file.write_text("explicit\n")
    token = find_token({"RAY_AUTH_TOKEN_PATH": str(token_file)})
    assert token is not None and token.value == "explicit" and str(token_file) in token.origin


def test_default_file_and_none(cli_env: Path) -> None:
    assert find_token({}) is None
    (cli_env / "home" / ".ray").mkdir()
    (cli_env / "home" / ".ray" / "auth_token").write_text("default")
    token = find_token({})
    assert token is not None and token.value == "default"


@pytest.mark.parametrize("content", [None, ""])
def test_bad_token_path_is_an_error_not_a_fallback(cli_env: Path, content: str | None) -> None:
    (cli_env / "home" / ".ray").mkdir()
    (cli_env / "home" / ".ray" / "auth_token").write_text("default")
    token_file = cli_env / "t"
    if content is not None:
        token_file.write_text(content)
    with pytest.raises(CliError) as caught:
        find_token({"RAY_AUTH_TOKEN_PATH": str(token_file)})
    assert caught.value.code is ExitCode.AUTH
    assert "ray get-auth-token" in str(caught.value)


def test_addresses() -> None:
    assert normalize_http_address("127.0.0.1:8265/") == "http://127.0.0.1:8265"
    assert normalize_http_address("https://head:443") == "https://head:443"
    with pytest.raises(CliError):
        normalize_http_address("ray://head:10001")


def test_resolve_address_order(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_address("http://a:1", "http://local:3") == "http://a:1"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")  # a GCS address is not the Jobs API
    assert resolve_address(None, "http://local:3") == "http://local:3"
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "http://b:2")
    assert resolve_address(None, "http://local:3") == "http://b:2"


def test_cluster_start_generates_a_token_with_rays_cli_when_none_exists(cli_env: Path) -> None:
    messages: list[str] = []
    mode, origin = choose_auth_mode(messages.append)
    token_file = cli_env / "home" / ".ray" / "auth_token"
    assert (mode, origin) == ("token", str(token_file))
    assert token_file.read_text().strip()
    assert any("ray get-auth-token --generate" in message for message in messages)
    # A second start reuses the token instead of replacing it.
    assert choose_auth_mode(messages.append) == ("token", str(token_file))


def test_explicitly_disabled_auth_is_respected_loudly(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    messages: list[str] = []
    assert choose_auth_mode(messages.append) == ("disabled", None)
    assert any("WITHOUT" in message for message in messages)
    assert not (cli_env / "home" / ".ray").exists()
