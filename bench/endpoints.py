"""Suspects behind an API: a Python callable or an HTTP endpoint answers queries instead of weights.

A recipe lists them under `zoo.endpoints` (docs/byo.md, "Endpoints"). Each is checked when the
recipe loads (keys, values, the callable imports) and probed before any compute (one zero input of
the test shape must get a valid answer), then scored after the zoo's suspects through an `Oracle`,
which counts and restricts its queries as it does for a model.
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import os
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from bench.callables import load_callable
from bench.entry_config import check_keys
from bench.http_post import HttpStatusError, ResponseTooLarge, post
from bench.io import sha256_json

log = logging.getLogger(__name__)

ENDPOINT_ACCESS = ("labels", "probabilities")
ENDPOINT_ROLES = ("positive", "negative")
# Recipe keys that say how to reach an endpoint, not which model it is: left out of its model id.
TRANSPORT_KEYS = ("timeout_s", "retries", "backoff_s", "max_queries_per_s", "batch_size", "headers_env",
                  "test_acc_samples", "max_response_bytes")
# Default answer-size cap per request: a fixed allowance plus a per-row one (docs/byo.md, Endpoints).
RESPONSE_OVERHEAD_BYTES = 1 << 20  # an error page, extra keys, pretty-printing: far more than any envelope needs
BYTES_PER_VALUE = 64  # one JSON number is at most ~24 characters; the rest covers separators and indentation
BYTES_PER_ROW = 256  # a row's brackets, newline and indentation


class EndpointError(RuntimeError):
    """An endpoint could not be reached or gave an answer that breaks the protocol."""


@dataclass
class EndpointSpec:
    """One `zoo.endpoints` entry: a suspect answered by a callable or an HTTP endpoint."""

    label: str = ""  # required: the suspect's name in logs and results
    role: str = ""  # required: positive (derived from the source) | negative (independent)
    attack: str | None = None  # a positive's group (free text, e.g. "ftal" or "vendor-api"); None: the label
    kind: str | None = None  # a negative's group (free text, e.g. "SAST"); None: the label
    callable: str | None = None  # "package.module:function"; exactly one of callable / url
    url: str | None = None  # http(s)://host:port/path answering the JSON protocol of docs/byo.md
    access: str = "labels"  # what the endpoint grants: labels | probabilities (which also answers labels)
    timeout_s: float = 30.0  # deadline of one HTTP request (connect, send and every read together)
    retries: int = 2  # extra attempts after a connection error, a timeout or an HTTP 5xx
    backoff_s: float = 0.5  # wait before retry k is backoff_s * 2**k
    max_queries_per_s: float | None = None  # client-side rate limit (inputs per second); None: unlimited
    batch_size: int = 64  # inputs per request (per call of a callable)
    headers_env: dict[str, str] = field(default_factory=dict)  # HTTP header -> environment variable holding it
    test_acc_samples: int = 1000  # first test-split inputs used to measure test_acc; 0: not measured
    max_response_bytes: int | None = None  # longest HTTP answer read; None: scaled to the batch (response_cap)

    @property
    def group(self) -> str:
        return (self.attack if self.role == "positive" else self.kind) or self.label

    @property
    def target(self) -> str:
        return self.url or str(self.callable)

    @property
    def model_id(self) -> str:
        """Stable id: a hash of what the suspect is (no transport settings, no secrets)."""
        what = {k: v for k, v in asdict(self).items() if k not in TRANSPORT_KEYS}
        return "ep-" + sha256_json(what)[:12]


def parse_endpoints(entries: list[Any], method_access: dict[str, str]) -> list[EndpointSpec]:
    """Validate `zoo.endpoints` (cheap: no query is sent; a callable is imported).

    Args:
        entries: the recipe's `zoo.endpoints` as plain containers.
        method_access: method name -> its declared access ("label" | "probs" | "manifest").

    Raises:
        ValueError: naming the entry, the bad value, the allowed values and the fix.
    """
    specs: list[EndpointSpec] = []
    for i, raw in enumerate(entries):
        where = f"zoo.endpoints[{i}]"
        if not isinstance(raw, dict):
            raise ValueError(f"{where} must be a mapping such as {{label: api, role: positive, url: http://...}}; "
                             f"got {raw!r}.")
        check_keys(EndpointSpec, raw, where, "")  # the entry configs' message (bench.entry_config)
        spec = EndpointSpec(**raw)
        _check_spec(spec, f"{where} ({spec.label or 'no label'})")
        specs.append(spec)
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"zoo.endpoints: labels must differ; got {labels}. Give each endpoint its own label.")
    needs_probs = sorted(n for n, a in method_access.items() if a == "probs")
    for spec in specs:
        if spec.access == "labels" and needs_probs:
            raise ValueError(
                f"zoo.endpoints: '{spec.label}' grants labels only, but {', '.join(needs_probs)} need probabilities. "
                f"Fix: run label-only methods (methods=[{','.join(n for n in method_access if n not in needs_probs)}]), "
                f"or set access: probabilities if the endpoint returns them.")
    return specs


def _check_spec(spec: EndpointSpec, where: str) -> None:
    if not isinstance(spec.label, str) or not spec.label.strip():
        raise ValueError(f"{where}: 'label' is required (a name for the suspect, e.g. label: vendor-api).")
    for name in ("attack", "kind", "callable", "url"):
        if getattr(spec, name) is not None and not isinstance(getattr(spec, name), str):
            raise ValueError(f"{where}: {name}={getattr(spec, name)!r} must be a string.")
    headers = spec.headers_env
    if not isinstance(headers, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise ValueError(f"{where}: headers_env={headers!r} must map header names to environment variable names, "
                         "e.g. {Authorization: VENDOR_TOKEN}.")
    if spec.role not in ENDPOINT_ROLES:
        raise ValueError(f"{where}: role={spec.role!r}; allowed: {', '.join(ENDPOINT_ROLES)}.")
    if spec.access not in ENDPOINT_ACCESS:
        raise ValueError(f"{where}: access={spec.access!r}; allowed: {', '.join(ENDPOINT_ACCESS)}.")
    if (spec.callable is None) == (spec.url is None):
        raise ValueError(f"{where}: give exactly one of callable: 'package.module:function' or url: 'http://host:port/path'.")
    _check_numbers(spec, where)
    if spec.url is not None:
        parsed = urllib.parse.urlparse(str(spec.url))
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"{where}: url={spec.url!r} is not an http(s) URL with a host; write e.g. "
                             "url: http://127.0.0.1:8000/predict.")
    else:
        load_callable(str(spec.callable), where)


def _check_numbers(spec: EndpointSpec, where: str) -> None:
    whole = ("batch_size", "retries", "test_acc_samples", "max_response_bytes")
    for name in ("timeout_s", "backoff_s", "max_queries_per_s", *whole):
        value = getattr(spec, name)
        if value is None and name in ("max_queries_per_s", "max_response_bytes"):
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{where}: {name}={value!r} must be a number.")
        if name in whole and not isinstance(value, int):
            raise ValueError(f"{where}: {name}={value!r} must be a whole number.")
        least = 0 if name in ("retries", "backoff_s", "test_acc_samples") else 1 if name in whole else None
        if (least is None and value <= 0) or (least is not None and value < least):
            bound = "> 0" if least is None else f">= {least}"
            raise ValueError(f"{where}: {name}={value!r} must be {bound}.")


class Endpoint:
    """The call surface an `Oracle` uses for a suspect behind an API: batches in, labels/probabilities out.

    Subclasses implement `_ask(x, want)` for one batch; this class batches, rate-limits and validates.
    """

    def __init__(self, spec: EndpointSpec, num_classes: int) -> None:
        self.spec = spec
        self.num_classes = int(num_classes)
        self.requests = 0  # batches sent (retries not included)
        self._free_at = 0.0  # monotonic time from which the next batch may be sent (rate limit)

    @property
    def grants_probabilities(self) -> bool:
        return self.spec.access == "probabilities"

    def labels(self, x: torch.Tensor) -> torch.Tensor:
        """Top-1 labels (int64 [B]) for `x` ([B, C, H, W] in [0,1])."""
        return self._query(x, "labels")

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities (float32 [B, K]); only for endpoints that grant them."""
        if not self.grants_probabilities:
            raise EndpointError(f"Endpoint '{self.spec.label}' grants labels only (access: labels).")
        return self._query(x, "probabilities")

    def _query(self, x: torch.Tensor, want: str) -> torch.Tensor:
        outputs = [self._checked(self._paced(chunk, want), chunk.shape[0], want)
                   for chunk in x.detach().cpu().float().split(self.spec.batch_size)]
        return torch.cat(outputs) if outputs else torch.zeros(0, dtype=torch.long)

    def _paced(self, chunk: torch.Tensor, want: str) -> Any:
        rate = self.spec.max_queries_per_s
        if rate:
            wait = self._free_at - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self._free_at = max(self._free_at, time.monotonic()) + chunk.shape[0] / rate
        self.requests += 1
        return self._ask(chunk, want)

    def _ask(self, x: torch.Tensor, want: str) -> Any:
        raise NotImplementedError

    def _checked(self, answer: Any, batch: int, want: str) -> torch.Tensor:
        """The answer as a tensor, or an EndpointError naming the endpoint and what is wrong."""
        def bad(what: str) -> EndpointError:
            return EndpointError(f"Endpoint '{self.spec.label}' ({self.spec.target}) broke the protocol: {what} "
                                 f"(asked for {want} of {batch} input(s); docs/byo.md, Endpoints).")

        if isinstance(answer, torch.Tensor):
            if want == "labels" and (answer.is_floating_point() or answer.is_complex() or answer.dtype == torch.bool):
                raise bad(f"labels must be integers, got a {answer.dtype} tensor")
            values = answer.detach().cpu()
        else:
            values = _nested_numbers(answer, want, bad)
        expected = (batch,) if want == "labels" else (batch, self.num_classes)
        if tuple(values.shape) != expected:
            raise bad(f"expected shape {list(expected)}, got {list(values.shape)}")
        if want == "labels":
            values = values.long()
            if values.numel() and (values.min() < 0 or values.max() >= self.num_classes):
                raise bad(f"labels must lie in [0, {self.num_classes}); got {values.min().item()}..{values.max().item()}")
            return values
        values = values.float()
        for problem, wrong in (("non-finite", ~torch.isfinite(values)), ("negative", values < -1e-6)):
            if wrong.any():
                row, column = (int(i) for i in wrong.nonzero()[0])
                raise bad(f"probabilities must be finite and non-negative; {int(wrong.sum())} {problem} value(s), "
                          f"first in row {row}, class {column}: {values[row, column].item():.6g}")
        sums = values.sum(dim=1)
        if ((sums - 1).abs() > 1e-3).any():
            raise bad(f"each row must be probabilities summing to 1; row sums range {sums.min():.4f}..{sums.max():.4f}")
        return values


def _nested_numbers(answer: Any, want: str, bad: Callable[[str], EndpointError]) -> torch.Tensor:
    """A JSON-decoded list answer as a tensor (ints for labels, floats for probabilities)."""
    if not isinstance(answer, list):
        raise bad(f"expected a list of {want}, got {type(answer).__name__}")
    if want == "labels":
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in answer):
            kinds = sorted({type(v).__name__ for v in answer})
            raise bad(f"labels must be integers, got {', '.join(kinds)}")
        return torch.tensor(answer, dtype=torch.long)
    if not all(isinstance(row, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in row)
               for row in answer):
        raise bad("probabilities must be a list of rows of numbers")
    if len({len(row) for row in answer}) > 1:
        raise bad(f"probability rows differ in length: {sorted({len(row) for row in answer})}")
    return torch.tensor(answer, dtype=torch.float32) if answer else torch.zeros(0, 0)


class CallableEndpoint(Endpoint):
    """A Python function `fn(x [B,C,H,W] float in [0,1]) -> labels [B] int | probabilities [B,K]`."""

    def __init__(self, spec: EndpointSpec, num_classes: int) -> None:
        super().__init__(spec, num_classes)
        self._fn = load_callable(str(spec.callable), f"endpoint '{spec.label}'")

    def _ask(self, x: torch.Tensor, want: str) -> Any:
        with torch.no_grad():
            out = self._fn(x.clone())
        if not isinstance(out, torch.Tensor):  # numpy arrays and lists are accepted too
            try:
                out = torch.as_tensor(out)
            except Exception:
                return out  # the check names what came back
        if self.grants_probabilities and want == "labels":  # a probabilities callable: labels are the top-1
            return out.argmax(dim=1) if out.is_floating_point() and out.dim() == 2 else out
        return out


class HttpEndpoint(Endpoint):
    """An HTTP endpoint: POST `{"inputs": [[...]], "return": want}` -> `{want: [...]}` (docs/byo.md).

    Each request has one deadline, `timeout_s`, for connect, send and all reads together, and its
    answer is read only up to `response_cap` bytes (`bench.http_post`).
    """

    def response_cap(self, rows: int, want: str) -> int:
        """`max_response_bytes`, or by default a fixed allowance plus a generous bound per answer row."""
        if self.spec.max_response_bytes is not None:
            return int(self.spec.max_response_bytes)
        values = self.num_classes if want == "probabilities" else 1
        return RESPONSE_OVERHEAD_BYTES + rows * (values * BYTES_PER_VALUE + BYTES_PER_ROW)

    def _ask(self, x: torch.Tensor, want: str) -> Any:
        body = json.dumps({"inputs": x.tolist(), "return": want}).encode("utf-8")
        raw = self._post(body, x.shape[0], self.response_cap(x.shape[0], want))
        try:
            answer = json.loads(raw)
        except ValueError:
            raise EndpointError(f"Endpoint '{self.spec.label}' ({self.spec.url}) answered with something other than "
                                f"JSON: {raw[:80]!r}.") from None
        if not isinstance(answer, dict) or want not in answer:
            keys = sorted(answer) if isinstance(answer, dict) else type(answer).__name__
            raise EndpointError(f"Endpoint '{self.spec.label}' ({self.spec.url}) broke the protocol: expected a JSON "
                                f"object with key '{want}', got {keys} (docs/byo.md, Endpoints).")
        return answer[want]

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        for header, variable in self.spec.headers_env.items():
            if variable not in os.environ:
                raise EndpointError(f"Endpoint '{self.spec.label}': header {header} reads the environment variable "
                                    f"{variable}, which is not set. Export it before the run.")
            headers[header] = os.environ[variable]
        return headers

    def _post(self, body: bytes, rows: int, cap: int) -> bytes:
        """The answer's bytes; retried after a connection error, a timeout or HTTP 5xx, with backoff."""
        headers, attempts, name = self._headers(), int(self.spec.retries) + 1, f"Endpoint '{self.spec.label}'"
        for attempt in range(attempts):
            try:
                return post(str(self.spec.url), body, headers, float(self.spec.timeout_s), cap)
            except ResponseTooLarge as err:  # the same request would get the same answer: no retry
                what = f"Content-Length says {err.size} bytes" if err.declared else f"more than {err.cap} bytes arrived"
                source = ("max_response_bytes" if self.spec.max_response_bytes is not None
                          else f"the default for {rows} input(s)")
                raise EndpointError(f"{name} ({self.spec.url}) answered too much: {what}, over the cap of {err.cap} "
                                    f"bytes ({source}); the rest was not read. If such answers are legitimate, raise "
                                    "max_response_bytes in its zoo.endpoints entry.") from None
            except HttpStatusError as err:
                if err.status < 500:  # the request itself is wrong: retrying cannot help
                    moved = f" (redirects are not followed: set url to {err.location})" if err.location else ""
                    raise EndpointError(f"{name} ({self.spec.url}) answered HTTP {err.status}: {err.detail!r}"
                                        f"{moved}.") from None
                problem = f"HTTP {err.status} ({err.detail!r})"
            except TimeoutError:
                problem = (f"no answer within timeout_s={self.spec.timeout_s} (the deadline for the whole request: "
                           "connect, send and every read)")
            except (OSError, http.client.HTTPException) as err:
                problem = f"unreachable ({type(err).__name__}: {err})"
            if attempt + 1 < attempts:
                delay = self.spec.backoff_s * 2 ** attempt
                log.warning("%s: %s; retry %d of %d in %.2f s", name, problem, attempt + 1, attempts - 1, delay)
                time.sleep(delay)
        raise EndpointError(f"{name} ({self.spec.url}): {problem} after {attempts} attempt(s).")


def open_endpoint(spec: EndpointSpec, num_classes: int) -> Endpoint:
    return HttpEndpoint(spec, num_classes) if spec.url is not None else CallableEndpoint(spec, num_classes)


def probe(endpoint: Endpoint, input_shape: tuple[int, ...]) -> None:
    """One zero input of `input_shape` ([C, H, W]) asked for every answer the endpoint grants.

    Raises:
        EndpointError: unreachable, too slow or a malformed answer, with the fix.
    """
    x = torch.zeros(1, *input_shape)
    try:
        endpoint.labels(x)
        if endpoint.grants_probabilities:
            endpoint.probabilities(x)
    except EndpointError as err:
        raise EndpointError(f"{err} Probe before any compute failed: start or fix the endpoint, or remove "
                            f"'{endpoint.spec.label}' from zoo.endpoints.") from None
    except Exception as err:  # a callable that raises
        raise EndpointError(f"Endpoint '{endpoint.spec.label}' ({endpoint.spec.target}) failed on a probe input of "
                            f"shape {list(x.shape)}: {type(err).__name__}: {err}.") from None
