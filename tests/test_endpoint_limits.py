"""HTTP endpoints get one deadline per request and a cap on the answer's size (bench.endpoints, bench.http_post).

Raw loopback servers (127.0.0.1, port 0, a thread per connection) misbehave on purpose: they drip an
answer a byte at a time, or stream far more than a one-input probe can need, counting what they sent.
"""

from __future__ import annotations

import json
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf

from bench.cli import main
from bench.endpoints import EndpointError, EndpointSpec, HttpEndpoint, parse_endpoints
from tests.conftest import SMOKE, smoke_overrides

DEADLINE_S = 1.5  # small, so a drip is cut quickly; the bound asserted is 3x this
HUGE_BYTES = 256 << 20  # what the oversized servers try to send
JSON_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"


class RawServer:
    """Reads one HTTP request per connection, then `respond(send, request_line)` writes raw bytes.

    `sent` counts the bytes `send` delivered to the socket; `finished` is set once `respond` returns or the
    client hangs up (a write fails).
    """

    def __init__(self, respond: Callable[[Callable[[bytes], None], str], None]) -> None:
        self.sent, self.request_lines = 0, []
        self.finished = threading.Event()
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                line = self.rfile.readline().decode().strip()
                outer.request_lines.append(line)
                length = 0
                while (header := self.rfile.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = header.decode().partition(":")
                    length = int(value) if name.strip().lower() == "content-length" else length
                self.rfile.read(length)

                def send(data: bytes) -> None:
                    self.wfile.write(data)
                    outer.sent += len(data)

                try:
                    respond(send, line)
                except OSError:  # the client hung up: what these tests wait for
                    pass
                outer.finished.set()

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/predict"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[Callable[[bytes], None], str], None]], RawServer]]:
    servers: list[RawServer] = []

    def start(respond: Callable[[Callable[[bytes], None], str], None]) -> RawServer:
        servers.append(RawServer(respond))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def drip(head: bytes, byte: bytes, limit_s: float = 20.0) -> Callable[[Callable[[bytes], None], str], None]:
    """Send `head`, then `byte` every 0.5 s until the client hangs up (or `limit_s`, so a regression fails, not hangs)."""
    def respond(send: Callable[[bytes], None], _: str) -> None:
        send(head)
        stop = time.monotonic() + limit_s
        while time.monotonic() < stop:
            send(byte)
            time.sleep(0.5)
    return respond


def huge(framing: str) -> Callable[[Callable[[bytes], None], str], None]:
    """Stream HUGE_BYTES of a JSON-looking answer: honest Content-Length, chunked, or ended by closing."""
    block = b" " * (64 << 10)

    def respond(send: Callable[[bytes], None], _: str) -> None:
        header = {"length": f"Content-Length: {HUGE_BYTES}\r\n", "chunked": "Transfer-Encoding: chunked\r\n",
                  "close": "Connection: close\r\n"}[framing]
        send(JSON_HEAD + header.encode() + b"\r\n")
        for _ in range(HUGE_BYTES // len(block)):
            send(b"%x\r\n%s\r\n" % (len(block), block) if framing == "chunked" else block)
    return respond


def answer(payload: bytes) -> Callable[[Callable[[bytes], None], str], None]:
    def respond(send: Callable[[bytes], None], _: str) -> None:
        send(JSON_HEAD + b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload))
    return respond


def _endpoint(url: str, **kwargs: Any) -> HttpEndpoint:
    spec = EndpointSpec(**{"label": "api", "role": "positive", "url": url, "retries": 0, **kwargs})
    return HttpEndpoint(spec, num_classes=10)


@pytest.mark.parametrize("head", [JSON_HEAD + b"Content-Length: 100000\r\n\r\n", b"HTTP/1.1 200 OK\r\nX-Drip: "],
                         ids=["body", "headers"])
def test_a_dripping_answer_is_cut_at_the_deadline(serve, head):
    server = serve(drip(head, b" " if head.endswith(b"\r\n\r\n") else b"a"))
    start = time.monotonic()
    with pytest.raises(EndpointError, match=rf"'api'.*no answer within timeout_s={DEADLINE_S} \(the deadline for "
                                            r"the whole request.*after 1 attempt"):
        _endpoint(server.url, timeout_s=DEADLINE_S).labels(torch.zeros(1, 1, 8, 8))
    assert time.monotonic() - start < 3 * DEADLINE_S
    assert server.finished.wait(10)  # the client hung up: the server's next write failed
    assert server.sent > len(head)  # it did drip (per-read timeouts of 1.5 s would never have fired)


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
def test_an_oversized_answer_is_refused_without_reading_it(serve, framing):
    server = serve(huge(framing))
    endpoint = _endpoint(server.url)
    cap = endpoint.response_cap(1, "labels")  # the default for a one-input probe: about 1 MiB
    said = f"Content-Length says {HUGE_BYTES} bytes" if framing == "length" else f"more than {cap} bytes arrived"
    with pytest.raises(EndpointError, match=rf"'api' \({server.url}\) answered too much: {said}, over the cap of "
                                            rf"{cap} bytes \(the default for 1 input\(s\)\).*raise max_response_bytes"):
        endpoint.labels(torch.zeros(1, 1, 8, 8))
    assert server.finished.wait(30)
    assert server.sent < HUGE_BYTES // 8  # what the kernel buffers took, not the whole answer


def test_max_response_bytes_sets_the_cap_exactly(serve):
    payload = json.dumps({"labels": [4, 2]}).encode()
    server = serve(answer(payload))
    assert _endpoint(server.url, max_response_bytes=len(payload)).labels(torch.zeros(2, 1, 8, 8)).tolist() == [4, 2]
    with pytest.raises(EndpointError, match=rf"over the cap of {len(payload) - 1} bytes \(max_response_bytes\)"):
        _endpoint(server.url, max_response_bytes=len(payload) - 1).labels(torch.zeros(2, 1, 8, 8))


def test_default_cap_scales_with_rows_and_classes():
    endpoint = _endpoint("http://127.0.0.1:9/p")
    one, many = endpoint.response_cap(1, "probabilities"), endpoint.response_cap(1024, "probabilities")
    assert many - one == 1023 * (10 * 64 + 256)  # per row: 64 bytes a value, 256 for the row
    assert endpoint.response_cap(1024, "labels") < many
    # a real answer, pretty-printed, fits the default with room to spare
    rows = json.dumps({"probabilities": torch.rand(1024, 10).double().tolist()}, indent=4).encode()
    assert len(rows) < many


@pytest.mark.parametrize(("value", "message"), [
    (0, "max_response_bytes=0 must be >= 1"), (1.5e6, "max_response_bytes=1500000.0 must be a whole number"),
    ("1MB", "max_response_bytes='1MB' must be a number"),
])
def test_bad_max_response_bytes_is_refused_at_load(value, message):
    with pytest.raises(ValueError, match=rf"zoo.endpoints\[0\] \(x\): {message}"):
        parse_endpoints([{"label": "x", "role": "positive", "url": "http://h/p", "max_response_bytes": value}], {})


@pytest.mark.parametrize(("rows", "message"), [
    ([[-0.2, 1.2] + [0.0] * 8], r"1 negative value\(s\), first in row 0, class 0: -0.2"),
    ([[0.1] * 10, [0.5, 0.5, -0.1, 0.1] + [0.0] * 6], r"1 negative value\(s\), first in row 1, class 2: -0.1"),
    ([[float("nan")] + [0.1] * 9], r"1 non-finite value\(s\), first in row 0, class 0: nan"),
    ([[float("inf")] + [0.0] * 9], r"1 non-finite value\(s\), first in row 0, class 0: inf"),
])
def test_negative_or_non_finite_probabilities_are_named(serve, rows, message):
    server = serve(answer(json.dumps({"probabilities": rows}).encode()))  # NaN/Infinity as Python's json writes them
    endpoint = _endpoint(server.url, access="probabilities")
    with pytest.raises(EndpointError, match=rf"probabilities must be finite and non-negative; {message} \(asked"):
        endpoint.probabilities(torch.zeros(len(rows), 1, 8, 8))


def test_environment_proxy_is_used(serve, monkeypatch):
    proxy = serve(answer(b'{"labels": [7]}'))
    for name in ("no_proxy", "NO_PROXY", "HTTP_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", proxy.url.removesuffix("/predict"))
    assert _endpoint("http://fpbench-endpoint.invalid/predict").labels(torch.zeros(1, 1, 8, 8)).tolist() == [7]
    assert proxy.request_lines == ["POST http://fpbench-endpoint.invalid/predict HTTP/1.1"]


def test_run_with_a_dripping_endpoint_exits_2_at_the_deadline(serve, tmp_path, capsys):
    server = serve(drip(JSON_HEAD + b"\r\n", b" "))
    recipe = tmp_path / "drip.yaml"
    entry = {"label": "drip", "role": "positive", "url": server.url, "timeout_s": 2.0, "retries": 0}
    OmegaConf.save(OmegaConf.create({"include": [str(SMOKE)], "zoo": {"endpoints": [entry]}}), recipe)
    start = time.monotonic()
    code = main(["run", str(recipe), *smoke_overrides(tmp_path / "run"), "methods=[akh]"])
    assert code == 2 and time.monotonic() - start < 3 * 2.0  # recipe load and the probe included
    err = capsys.readouterr().err
    assert "'drip'" in err and "no answer within timeout_s=2.0" in err and "zoo.endpoints" in err
    assert not (tmp_path / "run").exists()
    assert server.finished.wait(10)


def test_verify_takes_the_endpoint_deadline_and_cap(serve, tmp_path, capsys):
    """`fpbench verify --endpoint-timeout/--endpoint-max-bytes`: the probe of a dripping or oversized endpoint
    stops at the deadline or the cap (exit 2), before any fingerprint query."""
    from bench.methods.base import Fingerprint

    folder = Fingerprint(method="random", tensors={"seed": torch.tensor([0])}, meta={}).save(tmp_path / "fp")
    argv = ["verify", "--fingerprint", str(folder), "--data", "digits"]
    dripping = serve(drip(JSON_HEAD + b"Content-Length: 100000\r\n\r\n", b" "))
    start = time.monotonic()
    assert main([*argv, "--suspect", dripping.url, "--endpoint-timeout", str(DEADLINE_S)]) == 2
    assert time.monotonic() - start < 3 * DEADLINE_S + 5  # the deadline, plus start-up of the command
    assert f"timeout_s={DEADLINE_S}" in capsys.readouterr().err
    oversized = serve(huge("length"))
    assert main([*argv, "--suspect", oversized.url, "--endpoint-max-bytes", "1000"]) == 2
    assert "over the cap of 1000 bytes" in capsys.readouterr().err
    assert main([*argv, "--suspect", oversized.url, "--endpoint-max-bytes", "0"]) == 2  # validated like a recipe's
    assert "max_response_bytes" in capsys.readouterr().err
