"""Serve an app on a loopback port whose URL the app's own settings may name.

    with LiveServer() as server:                       # port chosen first
        app = make_app(settings.with_overrides(public_base_url=server.url))
        server.serve(app)                              # then the app is mounted
"""

from __future__ import annotations

import threading

from werkzeug.serving import make_server


def _not_yet(environ, start_response):  # pragma: no cover - replaced before any request
    start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
    return [b"not ready"]


class LiveServer:
    def __init__(self) -> None:
        self._server = make_server("127.0.0.1", 0, _not_yet, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def serve(self, app) -> None:
        self._server.app = app

    def __enter__(self) -> LiveServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
