"""HTTP for `camelid serve`: the standard library's threading server, JSON bodies, and server-sent events over
chunked transfer encoding."""

from __future__ import annotations

import json
import logging
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from camelid.errors import CamelidError
from camelid.serve.api import (
    APIError,
    chat_completions,
    completions,
    detokenize,
    get_field,
    models,
    tokenize,
    tokenizer_info,
)
from camelid.serve.engine import Engine

log = logging.getLogger(__name__)


class ClientGoneError(Exception):
    """The client closed the connection while a response was streaming."""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "camelid"
    engine: Engine  # set on the subclass made by `make_server`

    def log_message(self, fmt: str, *args) -> None:
        log.info("%s %s", self.address_string(), fmt % args)

    def _json(self, status: int, obj: dict) -> None:
        data = json.dumps(obj, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError as e:
            raise APIError(400, f"the request body is not valid JSON: {e}") from None
        if not isinstance(body, dict):
            raise APIError(400, "the request body must be a JSON object")
        return body

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path.split("?")[0].rstrip("/")
        if path == "/health":
            self._json(200, {"status": "ok"})
        elif path == "/v1/models":
            self._json(200, models(self.engine))
        elif path == f"/v1/models/{self.engine.name}":
            self._json(200, models(self.engine)["data"][0])
        elif path == "/tokenizer_info":
            self._json(200, tokenizer_info(self.engine))
        else:
            self._json(404, APIError(404, f"no such endpoint: GET {path}", kind="not_found_error").body())

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?")[0].rstrip("/")
        routes = {"/v1/completions": completions, "/v1/chat/completions": chat_completions}
        simple = {"/tokenize": tokenize, "/detokenize": detokenize}
        streaming = False
        try:
            if path not in routes and path not in simple:
                raise APIError(404, f"no such endpoint: POST {path}", kind="not_found_error")
            body = self._body()
            if path in simple:
                self._json(200, simple[path](self.engine, body))
                return
            streaming = bool(get_field(body, "stream", (bool,), False))
            if not streaming:
                self._json(200, routes[path](self.engine, body, None))
                return
            self._stream(routes[path], body)
        except APIError as e:
            if streaming and getattr(self, "_stream_started", False):
                self._send_event(e.body())
                self._end_stream()
            else:
                self._json(e.status, e.body())
        except CamelidError as e:
            self._json(400, APIError(400, str(e)).body())
        except ClientGoneError:
            self.close_connection = True
        except Exception as e:  # a bug, not the client's fault: say so, keep serving
            log.exception("error serving %s", path)
            if getattr(self, "_stream_started", False):
                self.close_connection = True
            else:
                self._json(500, APIError(500, f"internal server error: {e!r}", kind="server_error").body())

    def _stream(self, route, body: dict) -> None:
        """Server-sent events over chunked transfer encoding; headers go out only with the first event, so a
        request refused before any output still gets a plain JSON error and its status."""
        self._stream_started = False

        def emit(obj: dict) -> None:
            if not self._stream_started:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self._stream_started = True
            self._send_event(obj)

        route(self.engine, body, emit)
        if not self._stream_started:
            emit({})
        self._write_chunk(b"data: [DONE]\n\n")
        self._end_stream()

    def _send_event(self, obj: dict) -> None:
        self._write_chunk(b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n")

    def _write_chunk(self, data: bytes) -> None:
        try:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            raise ClientGoneError() from None

    def _end_stream(self) -> None:
        try:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass


def make_server(engine: Engine | None, host: str, port: int) -> ThreadingHTTPServer:
    """The HTTP server (listening, not yet serving); its handler's `engine` may be set later."""
    handler = type("CamelidHandler", (Handler,), {"engine": engine})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server
