"""HTTP for `camelid serve`: the standard library's threading server, JSON bodies, and server-sent events over
chunked transfer encoding."""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from camelid.errors import CamelidError
from camelid.generate.engine import GenerationCancelledError
from camelid.generate.scheduler import QueueFullError
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
from camelid.serve.limits import Limits

log = logging.getLogger(__name__)
READ_TIMEOUT = 30.0  # seconds a connection may leave the server waiting for bytes it announced (or a next request)
OPEN_PATHS = ("/health", "/metrics")  # answered without the API key: probes and scrapers


def _refuse_constant(name: str):
    raise APIError(400, f"the request body is not valid JSON: {name} is not a JSON number")


def _check_strings(value) -> None:
    """Every string in the body must be encodable (JSON allows lone surrogates such as \\ud800; UTF-8 does not)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise APIError(400, "the request body holds a lone surrogate (\\ud800-\\udfff), not a character") from None
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_strings(k)
            _check_strings(v)
    elif isinstance(value, list):
        for v in value:
            _check_strings(v)


class ClientGoneError(Exception):
    """The client closed the connection while a response was streaming."""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "camelid"
    timeout = READ_TIMEOUT  # on the connection's socket (socketserver sets it): a stalled client is let go
    engine: Engine  # set on the subclass made by `make_server`
    api_key: bytes | None = None  # when set, every path but OPEN_PATHS needs "Authorization: Bearer <key>"

    def log_message(self, fmt: str, *args) -> None:
        log.info("%s %s", self.address_string(), fmt % args)

    def _json(self, status: int, obj: dict) -> None:
        self._text(status, json.dumps(obj, ensure_ascii=False), "application/json")

    def _text(self, status: int, text: str, content_type: str) -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if status == 401:
            self.send_header("WWW-Authenticate", "Bearer")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:  # said, so the client does not send its next request here
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def finish(self) -> None:
        """A connection closed with bytes of its request unread would be reset (RST), and the client would lose
        the error response already sent: shut the sending side, then read what is left, briefly, first."""
        super().finish()
        if getattr(self, "_unread", False):
            try:
                self.connection.shutdown(socket.SHUT_WR)
                self.connection.settimeout(1.0)
                for _ in range(256):  # at most 16 MiB drained
                    if not self.connection.recv(65536):
                        break
            except OSError:
                pass

    def _refuse_framing(self, error: APIError) -> APIError:
        self.close_connection = self._unread = True
        return error

    def _read_body(self) -> bytes:
        """The request's bytes, all of them read (so the connection's next request starts where it should); a
        length that cannot be trusted closes the connection after the error."""
        if self.headers.get("Transfer-Encoding"):
            raise self._refuse_framing(
                APIError(411, "send the request body with a Content-Length (chunked bodies are not supported)")
            )
        header = self.headers.get("Content-Length")
        try:
            length = int(header) if header is not None else 0
        except ValueError:
            length = -1
        if length < 0:
            raise self._refuse_framing(APIError(400, f"Content-Length must be a non-negative integer, got {header!r}"))
        limit = (self.engine.limits if self.engine is not None else Limits()).max_body_bytes
        if length > limit:
            raise self._refuse_framing(
                APIError(413, f"the request body is {length:,} bytes; this server takes at most {limit:,}")
            )
        try:
            raw = self.rfile.read(length) if length else b""
        except TimeoutError:
            raise self._refuse_framing(
                APIError(408, f"the request body did not arrive within {self.timeout:g} s")
            ) from None
        if len(raw) < length:
            raise self._refuse_framing(
                APIError(400, f"the request body ended after {len(raw):,} of its {length:,} bytes")
            )
        return raw

    @staticmethod
    def _parse(raw: bytes) -> dict:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise APIError(400, f"the request body is not valid UTF-8 (byte {e.start})") from None
        try:
            body = json.loads(text or "{}", parse_constant=_refuse_constant)
        except json.JSONDecodeError as e:
            raise APIError(400, f"the request body is not valid JSON: {e}") from None
        except RecursionError:
            raise APIError(400, "the request body is nested too deeply") from None
        if not isinstance(body, dict):
            raise APIError(400, "the request body must be a JSON object")
        try:
            _check_strings(body)
        except RecursionError:
            raise APIError(400, "the request body is nested too deeply") from None
        return body

    def _check_key(self, path: str) -> None:
        """401 unless the request carries the server's API key (compared in constant time), or needs none."""
        if self.api_key is None or path in OPEN_PATHS:
            return
        scheme, _, given = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.api_key):
            raise APIError(
                401,
                "missing or wrong API key: send the header 'Authorization: Bearer KEY' with the key the server "
                "was started with (camelid serve --api-key, or CAMELID_API_KEY)",
                kind="authentication_error",
            )

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path.split("?")[0].rstrip("/")
        try:
            self._read_body()  # a GET with a body: read past it
            self._check_key(path)
        except APIError as e:
            self._json(e.status, e.body())
            return
        if path == "/health":
            self._json(200, {"status": "ok"})
        elif path == "/metrics":
            self._text(200, self.engine.metrics(), "text/plain; version=0.0.4; charset=utf-8")
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
            raw = self._read_body()  # first, even for a request refused: the connection stays in step
            self._check_key(path)
            if path not in routes and path not in simple:
                raise APIError(404, f"no such endpoint: POST {path}", kind="not_found_error")
            body = self._parse(raw)
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
        except (QueueFullError, GenerationCancelledError) as e:
            if isinstance(e, QueueFullError):
                error = APIError(429, str(e), kind="rate_limit_error")
            else:
                error = APIError(503, e.reason, kind="timeout_error")
            if streaming and getattr(self, "_stream_started", False):
                self._send_event(error.body())
                self._end_stream()
            else:
                self._json(error.status, error.body())
        except ClientGoneError:
            self.close_connection = True
        except Exception as e:  # a bug, not the client's fault: say so, keep serving
            log.exception("error serving %s", path)
            if getattr(self, "_stream_started", False):
                self.close_connection = True
            else:
                self._json(500, APIError(500, f"internal server error: {e!r}", kind="server_error").body())

    def _not_allowed(self) -> None:
        with contextlib.suppress(APIError):  # a broken body: the connection closes after this answer
            self._read_body()
        error = APIError(405, f"method {self.command} is not allowed; use GET or POST", kind="invalid_request_error")
        self._json(405, error.body())

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed  # noqa: N815 (http.server's naming)

    def _stream(self, route, body: dict) -> None:
        """Server-sent events over chunked transfer encoding; headers go out only with the first event, so a
        request refused before any output still gets a plain JSON error and its status.

        The connection's send buffer is bounded and each write may wait only `stream_write_timeout`: a client
        that stops reading is cancelled (its request ends, the model is free for the others) instead of holding
        the model while its socket is full."""
        self._stream_started = False
        limits = self.engine.limits
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, limits.stream_buffer_bytes)
        self.connection.settimeout(limits.stream_write_timeout)

        def emit(obj: dict) -> None:
            if not self._stream_started:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self._stream_started = True
            self._send_event(obj)

        try:
            route(self.engine, body, emit)
            if not self._stream_started:
                emit({})
            self._write_chunk(b"data: [DONE]\n\n")
            self._end_stream()
        finally:
            self.connection.settimeout(self.timeout)

    def _send_event(self, obj: dict) -> None:
        self._write_chunk(b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n")

    def _write_chunk(self, data: bytes) -> None:
        try:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):  # gone, or not reading
            raise ClientGoneError() from None

    def _end_stream(self) -> None:
        try:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True


def make_server(
    engine: Engine | None, host: str, port: int, backlog: int = Limits.backlog, api_key: str | None = None
) -> ThreadingHTTPServer:
    """The HTTP server (listening, not yet serving); its handler's `engine` may be set later. `backlog`: the
    connections the socket queues (the standard library's default of 5 reset clients under a 16-client load).
    `api_key`: the bearer token every request but /health and /metrics must carry (401 otherwise)."""
    key = api_key.encode() if api_key else None
    handler = type("CamelidHandler", (Handler,), {"engine": engine, "api_key": key})
    server_class = type("CamelidHTTPServer", (ThreadingHTTPServer,), {"request_queue_size": backlog})
    server = server_class((host, port), handler)
    server.daemon_threads = True
    return server
