"""A fake Ray dashboard for CLI tests: token auth and an empty Jobs API, on 127.0.0.1."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler


@dataclass
class FakeDashboard:
    """Just enough of Ray's dashboard HTTP API to exercise token auth and the Jobs client."""

    token: str | None
    seen_auth: list[str] = field(default_factory=list)
    url: str = ""


def dashboard_handler(fake: FakeDashboard) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # keep test output clean
            pass

        def _reply(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/api/authentication_mode":
                self._reply(200, {"authentication_mode": "token" if fake.token else "disabled"})
                return
            auth = self.headers.get("Authorization", "")
            fake.seen_auth.append(auth)
            if fake.token and not auth:
                self._reply(401, "Unauthorized: Missing authentication token")
            elif fake.token and auth != f"Bearer {fake.token}":
                self._reply(403, "Forbidden: Invalid authentication token")
            elif self.path == "/api/version":
                self._reply(200, {"version": "4", "ray_version": "2.60.0", "ray_commit": "x"})
            elif self.path == "/api/jobs/":
                self._reply(200, [])
            else:
                self._reply(404, "not found")

    return Handler
