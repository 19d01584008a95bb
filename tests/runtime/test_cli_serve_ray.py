"""`dspex serve file.py:Program` as a user runs it: a second driver attached to the
session's tree serves the program over HTTP, answers a POST, and removes its service
on SIGINT (leaving the tree to its owner)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
import ray

from dspex.runtime.names import NAMESPACE
from dspex.runtime.supervision.application import SERVICES

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SCRIPT = Path(__file__).parent / "scripts" / "served_program.py"


@pytest.fixture(scope="module")
def sim_url() -> str:
    return "http://127.0.0.1:9/v1"  # script_env wants one; this program calls no LM


def read_url(process: subprocess.Popen[str], deadline: float) -> str:
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        if line.startswith("serving "):
            return line.rsplit(" at ", 1)[1].strip()
    process.kill()
    raise AssertionError(f"no URL from dspex serve; stderr: {process.stderr.read() if process.stderr else ''}")


def test_dspex_serve_answers_over_http_until_interrupted(script_env: dict[str, str]) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "dspex.cli", "serve", f"{SCRIPT}:Greeter", "--replicas", "2", "--port", "0",
         "--name", "greeter"],
        env=script_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = read_url(process, time.monotonic() + 120)
        assert url.startswith("http://127.0.0.1:") and url.endswith("/greeter")

        async def ask() -> tuple[int, dict[str, object]]:
            async with aiohttp.ClientSession() as session, session.post(url, json={"name": "ray"}) as response:
                return response.status, await response.json()

        status, body = asyncio.run(ask())
        assert status == 200 and body["outputs"] == {"greeting": "hello ray"}
        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
    services = ray.get_actor(SERVICES, namespace=NAMESPACE)
    names = [child.name for child in ray.get(services.which_children.remote())]
    assert not [n for n in names if n.startswith("dspex.serve.greeter.")], names
