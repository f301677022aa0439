"""Suspects behind an API (bench.endpoints): a loopback HTTP server and a callable serve smoke-zoo models."""

from __future__ import annotations

import glob
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf

from bench.cli import main
from bench.config import ConfigError, load_recipe, run_config, run_config_sha256, to_dict
from bench.endpoints import CallableEndpoint, EndpointError, EndpointSpec, HttpEndpoint, parse_endpoints
from bench.evaluate import run_benchmark
from bench.oracle import Oracle
from bench.results import ResultError, validate_result
from tests.conftest import REPO, SMOKE, smoke_overrides

SERVED: dict[str, torch.nn.Module] = {}  # the model behind `served_probabilities` (set by the tests)


def served_probabilities(x: torch.Tensor) -> torch.Tensor:
    """The callable-endpoint form: softmax probabilities of the model the test put in SERVED."""
    return SERVED["callable"](x).float().softmax(dim=1)


def served_words(x: torch.Tensor) -> list[str]:
    return ["cat"] * x.shape[0]


class Server:
    """A JSON endpoint on 127.0.0.1 (port 0) answering with `answer(inputs, want)`; counts what it received."""

    def __init__(self, answer: Callable[[torch.Tensor, str], Any]) -> None:
        self.answer, self.requests, self.inputs = answer, 0, 0
        self.headers: dict[str, str] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests += 1
                outer.headers = dict(self.headers)
                x = torch.tensor(body["inputs"], dtype=torch.float32)
                outer.inputs += x.shape[0]
                status, payload = outer.answer(x, body["return"])
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/predict"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[torch.Tensor, str], Any]], Server]]:
    """Start loopback servers for a test; every one is stopped at teardown."""
    servers: list[Server] = []

    def start(answer: Callable[[torch.Tensor, str], Any]) -> Server:
        servers.append(Server(answer))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def model_answer(model: torch.nn.Module) -> Callable[[torch.Tensor, str], Any]:
    """Answer as the Oracle computes from weights: argmax / softmax of the model's logits."""
    def answer(x: torch.Tensor, want: str) -> tuple[int, Any]:
        with torch.no_grad():
            logits = model.eval()(x).float()
        out = logits.argmax(dim=1) if want == "labels" else logits.softmax(dim=1)
        return 200, {want: out.tolist()}
    return answer


def _spec(**kwargs: Any) -> EndpointSpec:
    return EndpointSpec(**{"label": "api", "role": "positive", "retries": 0, "backoff_s": 0.01, **kwargs})


def _model(smoke_zoo, role: str, group: str) -> tuple[str, torch.nn.Module]:
    records = smoke_zoo.store.records()
    job = next(j for j in smoke_zoo.plan.by_role(role) if (j.attack if role == "positive" else j.kind) == group)
    return job.model_id, smoke_zoo.store.load_model(job.model_id, records[job.model_id])


def _recipe(tmp_path: Path, endpoints: list[dict[str, Any]]) -> Path:
    path = tmp_path / "endpoints.yaml"
    OmegaConf.save(OmegaConf.create({"include": [str(SMOKE)], "zoo": {"endpoints": endpoints}}), path)
    return path


@pytest.fixture(scope="module")
def endpoint_run(smoke_cfg, smoke_zoo, tmp_path_factory):
    """akh (labels) and sac (probabilities) with an HTTP positive and a callable negative beside the zoo."""
    tmp_path = tmp_path_factory.mktemp("endpoints")
    positive_id, positive = _model(smoke_zoo, "positive", "ftal")
    negative_id, SERVED["callable"] = _model(smoke_zoo, "negative", "SAST")
    server = Server(model_answer(positive))
    endpoints = [
        {"label": "http-ftal", "role": "positive", "attack": "ftal", "url": server.url, "access": "probabilities",
         "batch_size": 1024},
        {"label": "callable-sast", "role": "negative", "kind": "SAST", "access": "probabilities",
         "callable": "tests.test_endpoints:served_probabilities"},  # default batch_size (64)
    ]
    overrides = [*smoke_overrides(Path(smoke_cfg.paths.zoo_dir).parent), "methods=[akh,sac]",
                 f"paths.results_dir={tmp_path / 'results'}"]
    try:
        outcome = run_benchmark(load_recipe(_recipe(tmp_path, endpoints), overrides), progress=False)
        yield outcome, server, {"http-ftal": positive_id, "callable-sast": negative_id}
    finally:
        server.stop()


def test_endpoint_scores_equal_the_same_model_from_weights(endpoint_run, smoke_zoo):
    outcome, server, twins = endpoint_run
    results = {r["method"]["name"]: r for r in outcome.results.values()}
    assert set(results) == {"akh", "sac"}
    suspects = len(smoke_zoo.plan.by_role("positive", "negative"))
    for name, result in results.items():
        by_id = {r["model_id"]: r for r in result["per_model"]}
        endpoint_rows = [r for r in result["per_model"] if r.get("endpoint")]
        assert len(result["per_model"]) == suspects + 2 and len(endpoint_rows) == 2
        for row, twin_id in zip(endpoint_rows, twins.values()):
            twin = by_id[twin_id]
            assert row["score"] == twin["score"], name  # identical, not close
            assert row["queries"] == twin["queries"] > 0
            assert row["budget_scores"] == twin["budget_scores"]  # scored at the query budgets as zoo models are
            assert row["role"] == twin["role"] and row["group"] == twin["group"]
            assert row["test_acc"] == pytest.approx(twin["test_acc"])
            assert row["model_id"].startswith("ep-") and "sha256" not in row
        validate_result(result)
    # The server saw: the probe (labels + probabilities, one input each), the test split once, the methods' queries.
    http_queries = sum(r["queries"] for res in results.values() for r in res["per_model"] if r["group"] == "ftal"
                       and r.get("endpoint"))
    # ... and each subsampled budget's subset (a budget the whole fingerprint fits reuses its answers).
    http_queries += sum(queries for res in results.values() for r in res["per_model"] if r["group"] == "ftal"
                        and r.get("endpoint") for budget, queries in r["budget_queries"].items()
                        if next(e for e in res["budgets"] if e["budget"] == int(budget))["subsampled"])
    assert server.inputs == 2 + smoke_zoo.datamodule.split_size("test") + http_queries


def test_retries_with_backoff_then_answer(serve):
    calls: list[float] = []

    def flaky(x: torch.Tensor, want: str) -> tuple[int, Any]:
        calls.append(time.monotonic())
        return (503, {"error": "busy"}) if len(calls) <= 2 else (200, {"labels": [3] * x.shape[0]})

    server = serve(flaky)
    endpoint = HttpEndpoint(_spec(url=server.url, retries=2, backoff_s=0.05), num_classes=10)
    assert endpoint.labels(torch.zeros(4, 1, 8, 8)).tolist() == [3, 3, 3, 3]
    assert len(calls) == 3 and calls[2] - calls[0] >= 0.05 + 0.1 - 0.01  # backoff 0.05 then 0.1
    calls.clear()
    with pytest.raises(EndpointError, match=r"HTTP 503.*after 2 attempt"):
        HttpEndpoint(_spec(url=server.url, retries=1, backoff_s=0.01), num_classes=10).labels(torch.zeros(1, 1, 8, 8))


def test_secret_headers_come_from_the_environment(serve, monkeypatch):
    server = serve(lambda x, want: (200, {"labels": [0] * x.shape[0]}))
    endpoint = HttpEndpoint(_spec(url=server.url, headers_env={"Authorization": "FPBENCH_TEST_TOKEN"}), num_classes=10)
    with pytest.raises(EndpointError, match="FPBENCH_TEST_TOKEN, which is not set"):
        endpoint.labels(torch.zeros(1, 1, 8, 8))
    monkeypatch.setenv("FPBENCH_TEST_TOKEN", "Bearer s3cret")
    endpoint.labels(torch.zeros(1, 1, 8, 8))
    assert server.headers["Authorization"] == "Bearer s3cret"


def test_timeout_is_a_clear_error(serve):
    server = serve(lambda x, want: (time.sleep(1.0), (200, {"labels": [0] * x.shape[0]}))[1])
    endpoint = HttpEndpoint(_spec(url=server.url, timeout_s=0.2), num_classes=10)
    with pytest.raises(EndpointError, match=r"'api'.*no answer within timeout_s=0.2"):
        endpoint.labels(torch.zeros(2, 1, 8, 8))


@pytest.mark.parametrize(("want", "payload", "message"), [
    ("labels", {"labels": [1, 2, 3]}, r"expected shape \[2\], got \[3\]"),
    ("labels", {"labels": [1.0, 2.0]}, "labels must be integers, got float"),
    ("labels", {"labels": [1, 10]}, r"labels must lie in \[0, 10\)"),
    ("labels", {"predictions": [1, 2]}, "expected a JSON object with key 'labels'"),
    ("labels", b"<html>oops</html>", "something other than JSON"),
    ("probabilities", {"probabilities": [[0.5] * 10, [0.1] * 10]}, "summing to 1"),
    ("probabilities", {"probabilities": [[0.1] * 9, [0.1] * 9]}, r"expected shape \[2, 10\], got \[2, 9\]"),
    ("probabilities", {"probabilities": "many"}, "expected a list of probabilities, got str"),
])
def test_misbehaving_answers_name_the_problem(serve, want, payload, message):
    server = serve(lambda x, asked: (200, payload))
    endpoint = HttpEndpoint(_spec(url=server.url, access="probabilities"), num_classes=10)
    with pytest.raises(EndpointError, match=message):
        (endpoint.labels if want == "labels" else endpoint.probabilities)(torch.zeros(2, 1, 8, 8))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_endpoint_exits_2_and_writes_nothing(tmp_path, capsys):
    url = f"http://127.0.0.1:{_free_port()}/predict"
    recipe = _recipe(tmp_path, [{"label": "gone", "role": "positive", "url": url, "retries": 1, "backoff_s": 0.01}])
    code = main(["run", str(recipe), *smoke_overrides(tmp_path / "run"), "methods=[akh]"])
    assert code == 2
    err = capsys.readouterr().err
    assert "gone" in err and url in err and "unreachable" in err and "zoo.endpoints" in err
    assert not (tmp_path / "run").exists()  # no zoo, no results, no cache


def test_probabilities_method_against_a_labels_endpoint_is_refused_at_load(tmp_path):
    recipe = _recipe(tmp_path, [{"label": "lab", "role": "negative", "url": "http://127.0.0.1:9/p", "access": "labels"}])
    with pytest.raises(ConfigError, match=r"'lab' grants labels only, but sac need probabilities.*methods=\[akh\]"):
        load_recipe(recipe, [*smoke_overrides(tmp_path), "methods=[akh,sac]"])
    load_recipe(recipe, [*smoke_overrides(tmp_path), "methods=[akh]"])  # label-only methods: fine
    # an entry's config may raise its access above the class's (CoRt's jsd reads probabilities)
    load_recipe(recipe, [*smoke_overrides(tmp_path), "methods=[cort]"])
    with pytest.raises(ConfigError, match=r"'lab' grants labels only, but cort need probabilities"):
        load_recipe(recipe, [*smoke_overrides(tmp_path), "methods=[cort]", "methods.cort.metrics=[robd,jsd]"])


@pytest.mark.parametrize(("entry", "message"), [
    ({"label": "x", "role": "positive"}, "exactly one of callable"),
    ({"label": "x", "role": "suspect", "url": "http://h/p"}, "role='suspect'; allowed: positive, negative"),
    ({"label": "x", "role": "positive", "url": "ftp//nowhere"}, "is not an http"),
    ({"label": "x", "role": "positive", "callable": "tests.no_such_module:f"}, "cannot import module"),
    ({"label": "x", "role": "positive", "callable": "tests.test_endpoints:missing"}, "has no attribute 'missing'"),
    ({"label": "x", "role": "positive", "url": "http://h/p", "batch_size": 0}, "batch_size=0 must be >= 1"),
    ({"label": "x", "role": "positive", "url": "http://h/p", "batch_size": 2.5}, "batch_size=2.5 must be a whole number"),
    ({"label": "x", "role": "positive", "url": "http://h/p", "retries": 0.5}, "retries=0.5 must be a whole number"),
    ({"label": "x", "role": "positive", "url": "http://h/p", "tmeout_s": 1},
     r"Unknown key 'tmeout_s' in zoo.endpoints\[0\]. Did you mean 'timeout_s'.*Valid keys"),
    ({"label": "x", "role": "positive", "url": "http://h/p", "headers_env": {"Authorization": 3}}, "headers_env="),
    ({"label": "x", "role": "positive", "url": "http://h/p", "access": "logits"}, "access='logits'; allowed: labels"),
])
def test_bad_entries_are_refused(entry, message):
    with pytest.raises(ValueError, match=message):
        parse_endpoints([entry], {"akh": "label"})


def test_callable_with_wrong_type_is_a_clear_error():
    endpoint = CallableEndpoint(_spec(callable="tests.test_endpoints:served_words"), num_classes=10)
    with pytest.raises(EndpointError, match="labels must be integers, got str"):
        Oracle(endpoint).labels(torch.zeros(2, 1, 8, 8))


def test_rate_limit_is_honoured_and_queries_counted():
    SERVED["callable"] = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    spec = _spec(callable="tests.test_endpoints:served_probabilities", access="probabilities",
                 max_queries_per_s=200, batch_size=10)
    oracle = Oracle(CallableEndpoint(spec, num_classes=10), access="probs")
    start = time.monotonic()
    oracle.probs(torch.rand(50, 1, 8, 8))
    assert time.monotonic() - start >= (50 - 10) / 200 * 0.9  # 5 batches of 10 at 200 inputs/s
    assert oracle.queries == 50 and oracle._model.requests == 5


def test_model_id_is_stable_and_leaves_out_transport_and_secrets():
    base = _spec(url="http://h:1/p")
    assert base.model_id == _spec(url="http://h:1/p", timeout_s=3, headers_env={"Authorization": "TOKEN"}).model_id
    assert base.model_id != _spec(url="http://h:2/p").model_id
    assert base.model_id == "ep-" + __import__("bench.io", fromlist=["x"]).sha256_json(
        {"label": "api", "role": "positive", "attack": None, "kind": None, "callable": None, "url": "http://h:1/p",
         "access": "labels"})[:12]


def test_empty_endpoints_keep_published_config_hashes(tmp_path):
    cfg = load_recipe(REPO / "recipes" / "quickstart.yaml", [])
    published = {json.loads(Path(p).read_text())["config_sha256"]
                 for p in glob.glob(str(REPO / "results" / "runs" / "quickstart" / "*" / "*.json"))}
    assert published
    for entry in to_dict(cfg)["methods"]:
        assert "endpoints" not in run_config(cfg, entry)["zoo"]
        if entry["name"] in ("akh", "sac", "ipguard"):
            assert run_config_sha256(cfg, entry) in published, entry["name"]
    recipe = _recipe(tmp_path, [{"label": "a", "role": "positive", "url": "http://h/p"}])
    with_endpoint = load_recipe(recipe, ["methods=[akh]"])
    assert run_config(with_endpoint, to_dict(with_endpoint)["methods"][0])["zoo"]["endpoints"][0]["label"] == "a"


def test_result_schema_checks_the_endpoint_flag(endpoint_run):
    result = json.loads(json.dumps(next(iter(endpoint_run[0].results.values()))))
    result["per_model"][-1]["endpoint"] = "yes"
    with pytest.raises(ResultError, match=r"per_model\[\d+\].endpoint' must be true or false"):
        validate_result(result)
