"""A bounded HTTP POST: one deadline for the whole request and a cap on the answer's size.

urllib's `timeout` bounds each socket operation, so an answer dripping one byte at a time never times
out, and `read()` takes an answer of any size whole. Here every socket operation (connect, each write,
each read, headers included) gets only the time left until one monotonic deadline, and the body is
read in chunks that stop one byte past the cap. Only the standard library is used.
"""

from __future__ import annotations

import base64
import functools
import http.client
import io
import socket
import time
import urllib.parse
import urllib.request

CHUNK_BYTES = 64 * 1024  # per socket write and per body read: small enough to stop near the cap
ERROR_DETAIL_BYTES = 300  # how much of an HTTP error's body is quoted


class ResponseTooLarge(Exception):
    """The answer is longer than the cap: `size` bytes declared (Content-Length) or already read."""

    def __init__(self, size: int, cap: int, declared: bool) -> None:
        super().__init__(f"{size} bytes over the cap of {cap}")
        self.size, self.cap, self.declared = size, cap, declared


class HttpStatusError(Exception):
    """The server answered with a status other than 2xx."""

    def __init__(self, status: int, detail: str, location: str | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status, self.detail, self.location = status, detail, location


class _Deadline:
    """A monotonic point in time; `left()` is the seconds to it, or TimeoutError once it has passed."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline passed")
        return left


class _DeadlineReader(io.RawIOBase):
    """Raw reads from a socket, each given only the time left until the deadline."""

    def __init__(self, sock: socket.socket, deadline: _Deadline) -> None:
        super().__init__()
        self._sock, self._raw, self._deadline = sock, sock.makefile("rb", buffering=0), deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int | None:  # type: ignore[override]
        self._sock.settimeout(self._deadline.left())
        return self._raw.readinto(buffer)

    def close(self) -> None:
        self._raw.close()  # drops this reader's reference on the socket (closing it if the connection did)
        super().close()


class _DeadlineResponse(http.client.HTTPResponse):
    """An HTTPResponse whose status line, headers and body are all read against the deadline."""

    def __init__(self, sock: socket.socket, *args: object, deadline: _Deadline, **kwargs: object) -> None:
        super().__init__(sock, *args, **kwargs)  # type: ignore[arg-type]
        plain = self.fp
        self.fp = io.BufferedReader(_DeadlineReader(sock, deadline))
        plain.close()  # after the swap: the socket stays referenced throughout


def _connection(url: str) -> tuple[http.client.HTTPConnection, str, dict[str, str]]:
    """A connection (direct, or through the environment's HTTP(S)_PROXY as urllib would), the request target
    and any Proxy-Authorization header."""
    parts = urllib.parse.urlsplit(url)
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
    proxy = urllib.request.getproxies().get(parts.scheme)
    if not proxy or urllib.request.proxy_bypass(f"{parts.hostname}:{port}"):
        kind = http.client.HTTPSConnection if https else http.client.HTTPConnection
        return kind(str(parts.hostname), port), target, {}
    via = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    auth = {}
    if via.username is not None:
        token = base64.b64encode(f"{urllib.parse.unquote(via.username)}:"
                                 f"{urllib.parse.unquote(via.password or '')}".encode()).decode()
        auth = {"Proxy-Authorization": f"Basic {token}"}
    via_port = via.port or (443 if via.scheme == "https" else 80)
    if not https:  # a plain-HTTP proxy takes the absolute URL
        return http.client.HTTPConnection(str(via.hostname), via_port), url, auth
    conn = http.client.HTTPSConnection(str(via.hostname), via_port)
    conn.set_tunnel(str(parts.hostname), port, headers=auth)
    return conn, target, {}


def _read_capped(response: http.client.HTTPResponse, max_bytes: int) -> bytes:
    """The body, read in chunks; ResponseTooLarge as soon as it passes `max_bytes` (the rest is not read)."""
    chunks: list[bytes] = []
    size = 0
    while chunk := response.read(min(CHUNK_BYTES, max_bytes + 1 - size)):
        size += len(chunk)
        if size > max_bytes:
            raise ResponseTooLarge(size, max_bytes, declared=False)
        chunks.append(chunk)
    return b"".join(chunks)


def post(url: str, body: bytes, headers: dict[str, str], timeout_s: float, max_bytes: int) -> bytes:
    """POST `body` to `url` and return the answer's body, all within `timeout_s` seconds.

    Args:
        url: http(s)://host[:port]/path.
        body: the request body.
        headers: request headers (Content-Length is added).
        timeout_s: the deadline for the whole request: connect, send and every read together.
        max_bytes: the longest body accepted.

    Raises:
        TimeoutError: the deadline passed (whatever the phase).
        ResponseTooLarge: Content-Length or the bytes read passed `max_bytes`.
        HttpStatusError: a status other than 2xx (with the first bytes of its body).
        OSError, http.client.HTTPException: the connection failed or the answer is not HTTP.
    """
    deadline = _Deadline(timeout_s)
    conn, target, proxy_headers = _connection(url)
    conn.response_class = functools.partial(_DeadlineResponse, deadline=deadline)  # type: ignore[assignment]
    response = None
    try:
        conn.timeout = deadline.left()  # connect (and the TLS handshake) get the time left
        conn.connect()
        conn.putrequest("POST", target, skip_accept_encoding=True)
        for name, value in {**headers, **proxy_headers, "Content-Length": str(len(body))}.items():
            conn.putheader(name, value)
        conn.sock.settimeout(deadline.left())
        conn.endheaders()
        for start in range(0, len(body), CHUNK_BYTES):
            conn.sock.settimeout(deadline.left())
            conn.sock.sendall(body[start:start + CHUNK_BYTES])
        response = conn.getresponse()
        if not 200 <= response.status < 300:
            try:
                detail = response.read(ERROR_DETAIL_BYTES).decode("utf-8", "replace")
            except (OSError, http.client.HTTPException):
                detail = ""
            raise HttpStatusError(response.status, detail, response.getheader("Location"))
        declared = (response.getheader("Content-Length") or "").strip()
        if declared.isdigit() and int(declared) > max_bytes:
            raise ResponseTooLarge(int(declared), max_bytes, declared=True)
        return _read_capped(response, max_bytes)
    finally:
        if response is not None:
            response.close()
        conn.close()
