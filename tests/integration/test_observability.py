"""Following a request across the three real processes: request ids, JSON logs, OpenTelemetry traces
(collected by an OTLP/HTTP receiver this module runs), and the Python client (seam.client) against the
live stack for each of its methods and the error classes a live stack can be made to answer."""

from __future__ import annotations

import asyncio
import concurrent.futures
import csv
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from seam import client as sc
from seam.demo import DEMO_PIPELINE, MISMATCH_DEMO, seed_demo
from tests.otlp import Receiver, serve
from tests.processes import ServiceProcess, free_port
from tests.support import SAMPLE

pytestmark = pytest.mark.integration

KEY = "obs-key"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@dataclass
class Stack:
    var: Path
    receiver: Receiver
    encoder: ServiceProcess
    classifier: ServiceProcess
    gateway: ServiceProcess

    def client(self, **options) -> sc.Gateway:
        return sc.Gateway(self.gateway.url, api_key=KEY, **options)

    def log_lines(self, service: str) -> list[dict]:
        """Every line of a service's log, each parsed as JSON (a line that is not fails the test)."""
        lines = (self.var / f"{service}.log").read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_bert) -> Iterator[Stack]:
    var = tmp_path_factory.mktemp("observability")
    receiver = Receiver()
    server = serve(receiver)
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{server.server_port}", "OTEL_BSP_SCHEDULE_DELAY": "100"}
    for name in [n for n in os.environ if n.startswith("OTEL_")]:
        otel.setdefault(name, "")  # the module's receiver, whatever the outer environment says
    classifier = ServiceProcess("classifier_service", {**otel, "CLASSIFIER_STORE": str(var / "models"),
                                "CLASSIFIER_TORCH_THREADS": "1", "CLASSIFIER_LOG_FORMAT": "json"}, log=var / "classifier.log")
    encoder = ServiceProcess("encoder_service", {**otel, "ENCODER_MODEL": str(tiny_bert), "ENCODER_THREADS": "1",
                             "ENCODER_LOG_FORMAT": "json", "ENCODER_MAX_WAIT_MS": "20",
                             "OTEL_SERVICE_NAME": "encoder-under-test"}, log=var / "encoder.log")
    gateway = ServiceProcess("gateway", {**otel, "GATEWAY_ENCODER_URL": encoder.url, "GATEWAY_CLASSIFIER_URL": classifier.url,
                             "GATEWAY_API_KEYS": KEY, "GATEWAY_LOG_FORMAT": "json", "GATEWAY_MAX_TEXTS": "16",
                             "GATEWAY_PIPELINE_TTL_S": "0", "GATEWAY_RECHECK_INTERVAL_S": "0"}, log=var / "gateway.log")
    stack = Stack(var, receiver, encoder, classifier, gateway)
    try:
        for service in (classifier, encoder, gateway):
            service.start(wait_ready=False)
        for service in (classifier, encoder, gateway):
            service.wait_ready()
        seed_demo(gateway.url, classifier.url, api_key=KEY)
        yield stack
    finally:
        for service in (gateway, encoder, classifier, stack.classifier):  # the last test restarts the classifier
            service.stop()
        server.shutdown()
        server.server_close()


# -- tracing ----------------------------------------------------------------------------------------------


def test_one_trace_spans_the_three_services(stack):
    traceparent = f"00-{TRACE_ID}-{PARENT_ID}-01"
    with stack.client(headers={"traceparent": traceparent}) as seam:
        assert seam.predict(DEMO_PIPELINE, ["my parcel never arrived"]).version == 1

    def complete(spans) -> bool:
        """Every span read below has arrived: a server span ends last and may be exported after its children."""
        mine = [s for s in spans if s.trace_id == TRACE_ID]
        names = {(s.service, s.name) for s in mine}
        servers = {s.service for s in mine if s.kind == 2}  # SPAN_KIND_SERVER
        return {("seam-classifier", "classifier predict"), ("encoder-under-test", "queue wait"),
                ("seam-gateway", "compatibility check"), ("seam-gateway", "POST /v1/pipelines/{name}/predict"),
                ("seam-gateway", "encoder encode embedding"), ("seam-gateway", "classifier predict")} <= names \
            and {"encoder-under-test", "seam-classifier"} <= servers

    stack.receiver.wait_for(complete)
    spans = stack.receiver.trace(TRACE_ID)
    by_id = {s.span_id: s for s in spans}
    server = next(s for s in spans if s.service == "seam-gateway" and s.name == "POST /v1/pipelines/{name}/predict")
    assert server.parent_id == PARENT_ID  # the caller's traceparent continued
    check = next(s for s in spans if s.name == "compatibility check")
    assert check.attributes["seam.check.compatible"] is True and isinstance(check.attributes["seam.check.cached"], bool)
    upstream = {s.name: s for s in spans if s.service == "seam-gateway" and s.kind == 3}  # SPAN_KIND_CLIENT
    assert {"encoder encode embedding", "classifier predict"} <= set(upstream), sorted(upstream)
    # Each upstream's server span is the child of the gateway's client span for it.
    # (every client span: one stage may be called more than once, e.g. two record reads)
    clients = {s.span_id for s in spans if s.service == "seam-gateway" and s.kind == 3}
    for service in ("encoder-under-test", "seam-classifier"):
        servers = [s for s in spans if s.service == service and s.kind == 2]  # SPAN_KIND_SERVER
        assert servers and all(s.parent_id in clients for s in servers), service
    predict = next(s for s in spans if s.service == "seam-classifier" and s.name == "classifier predict")
    assert by_id[by_id[predict.parent_id].parent_id] == upstream["classifier predict"]
    wait = next(s for s in spans if s.name == "queue wait")
    assert by_id[wait.parent_id].service == "encoder-under-test"
    assert wait.attributes["seam.batch.size"] >= 1 and wait.attributes["seam.batch.tokens"] > 0
    assert wait.attributes["seam.queue.wait_ms"] >= 0
    # The forward pass is a trace of its own, linked to the request it served.
    passes = stack.receiver.wait_for(lambda all_: any((TRACE_ID, wait.parent_id) in s.links for s in all_
                                                       if s.name == "forward pass"))
    forward = next(s for s in passes if s.name == "forward pass" and (TRACE_ID, wait.parent_id) in s.links)
    assert forward.trace_id != TRACE_ID and forward.parent_id == ""
    assert forward.attributes["seam.batch.size"] == wait.attributes["seam.batch.size"]


def test_a_forward_pass_links_every_request_it_served(stack):
    """Concurrent callers share passes: each shared pass links each request's span, parented to none."""

    def encode(i: int) -> str:
        trace_id = f"{i + 1:032x}"  # i counts across rounds: each round's traces are its own
        response = httpx.post(stack.encoder.url + "/v1/encode", json={"texts": [f"text number {i}"]},
                              headers={"traceparent": f"00-{trace_id}-{PARENT_ID}-01"}, timeout=60)
        assert response.status_code == 200, response.text
        return trace_id

    for round_ in range(10):
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            trace_ids = set(pool.map(encode, range(8 * round_, 8 * round_ + 8)))
        # Every request's queue wait and the passes that served them: they may arrive in different exports.
        spans = stack.receiver.wait_for(lambda all_: sum(s.name == "queue wait" and s.trace_id in trace_ids
                                                        for s in all_) == 8
                                        and {t for s in all_ if s.name == "forward pass" for t, _ in s.links} >= trace_ids)
        waits = {s.trace_id: s for s in spans if s.name == "queue wait" and s.trace_id in trace_ids}
        passes = [s for s in spans if s.name == "forward pass" and {t for t, _ in s.links} & trace_ids]
        if any(len(p.links) > 1 for p in passes):
            break
    else:
        pytest.fail("eight concurrent requests never shared a forward pass")
    assert sum(len(p.links) for p in passes) == 8
    for forward in passes:
        assert forward.parent_id == "" and forward.attributes["seam.batch.requests"] == len(forward.links)
        for trace_id, span_id in forward.links:
            assert waits[trace_id].parent_id == span_id  # linked to the request's server span
            assert waits[trace_id].attributes["seam.batch.size"] == forward.attributes["seam.batch.size"]


# -- request ids and logs ---------------------------------------------------------------------------------


def test_request_ids_are_returned_sent_upstream_and_logged(stack):
    with httpx.Client(base_url=stack.gateway.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as http:
        given = http.post(f"/v1/pipelines/{DEMO_PIPELINE}/predict", json={"texts": ["hello"]},
                          headers={"X-Request-ID": "bug-report-42"})
        assert given.status_code == 200 and given.headers["X-Request-ID"] == "bug-report-42"
        made = http.get("/v1/pipelines")
        assert len(made.headers["X-Request-ID"]) == 32
        for bad in ("x" * 129, "has space", "ünï"):
            answer = http.get("/healthz", headers={"X-Request-ID": bad.encode()})
            assert answer.headers["X-Request-ID"] != bad and len(answer.headers["X-Request-ID"]) == 32
        refused = http.post(f"/v1/pipelines/{MISMATCH_DEMO}/predict", json={"texts": ["hello"]},
                            headers={"X-Request-ID": "refused-1"})
        assert refused.status_code == 409 and refused.json()["request_id"] == "refused-1"
        assert refused.headers["X-Request-ID"] == "refused-1"
        unauthorized = httpx.get(stack.gateway.url + "/v1/pipelines", headers={"X-Request-ID": "no-key"})
        assert unauthorized.status_code == 401 and unauthorized.json()["request_id"] == "no-key"
    deadline = time.monotonic() + 10  # access lines are written once the answer has gone: wait for the last
    while not any(line["request_id"] == "no-key" for line in stack.log_lines("gateway")):
        assert time.monotonic() < deadline, "no access log line for the last request"
        time.sleep(0.1)
    # The id went upstream: the encoder and the classifier logged their part under it.
    for service in ("encoder", "classifier", "gateway"):
        access = [line for line in stack.log_lines(service) if line["logger"] == "seam.requests"]
        mine = [line for line in access if line["request_id"] == "bug-report-42"]
        assert mine and all(line["status"] == 200 for line in mine), service
        assert {"time", "level", "service", "trace_id", "route", "status", "duration_ms", "method"} <= set(mine[0])
        assert mine[0]["service"] == service and len(mine[0]["trace_id"]) == 32
    gateway_access = {line["request_id"]: line for line in stack.log_lines("gateway") if line["logger"] == "seam.requests"}
    assert gateway_access["refused-1"]["status"] == 409
    assert gateway_access["refused-1"]["route"] == "/v1/pipelines/{name}/predict"


def test_every_log_line_is_json_with_the_common_fields(stack):
    for service in ("encoder", "classifier", "gateway"):
        lines = stack.log_lines(service)
        assert len(lines) > 3
        for line in lines:
            assert {"time", "level", "service", "logger", "message", "request_id"} <= set(line), line
            assert line["service"] == service


# -- the Python client ------------------------------------------------------------------------------------


def test_the_client_calls_every_method(stack, tmp_path):
    with stack.client() as seam:
        assert seam.ready()
        result = seam.predict(DEMO_PIPELINE, ["I was charged twice this month", "my parcel never arrived"])
        assert result.name == DEMO_PIPELINE and len(result.predictions) == 2
        assert all(abs(sum(p.probabilities.values()) - 1) < 1e-4 for p in result.predictions)
        assert seam.predict(DEMO_PIPELINE, ["hello"], version=1).version == 1
        texts = ["where is my order", "refund me", "my order is late", "I want my money back"]
        trained = seam.train("client-small", texts, ["shipping", "refund"] * 2, estimator="logistic_regression")
        assert trained.version == 1 and trained.classes == ["refund", "shipping"]
        with SAMPLE.open(newline="") as f:
            rows = list(csv.DictReader(f))
        path = tmp_path / "tickets.csv"
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["body", "intent"])
            writer.writerows([r["text"], r["label"]] for r in rows)
        streamed = seam.train_file("client-file", path, text_column="body", label_column="intent", chunk_rows=16)
        assert streamed.version == 1 and set(streamed.classes) == {r["label"] for r in rows}
        report = seam.pipeline(MISMATCH_DEMO)
        assert not report.compatible and "dim" in {m.field for m in report.mismatches}
        assert report.chain[-1].consumer["model"] == MISMATCH_DEMO
        names = {p.name for p in seam.pipelines()}
        assert {DEMO_PIPELINE, MISMATCH_DEMO, "client-small", "client-file"} <= names

    async def asynchronously() -> None:
        async with sc.AsyncGateway(stack.gateway.url, api_key=KEY) as seam:
            assert await seam.ready()
            assert (await seam.predict("client-file", ["refund please"])).name == "client-file"
            assert (await seam.pipeline(DEMO_PIPELINE)).compatible
            assert len(await seam.pipelines()) >= 4
            again = await seam.train_file("client-file", path, text_column="body", label_column="intent")
            assert again.version == 2
            assert (await seam.train("client-small", texts, ["shipping", "refund"] * 2)).version == 2

    asyncio.run(asynchronously())


def test_the_client_raises_each_error_class(stack):
    with stack.client() as seam:
        with pytest.raises(sc.PipelineNotFound) as missing:
            seam.predict("nope", ["hello"])
        assert missing.value.status == 404 and len(missing.value.request_id) == 32
        with pytest.raises(sc.IncompatiblePipeline) as refused:
            seam.predict(MISMATCH_DEMO, ["hello"])
        dim = next(m for m in refused.value.mismatches if m.field == "dim")
        assert (dim.expected, dim.actual) == (768, 32) and dim.consumer.endswith(f"model {MISMATCH_DEMO} v1")
        with pytest.raises(sc.InvalidInput):
            seam.predict(DEMO_PIPELINE, ["  "])
        with pytest.raises(sc.PayloadTooLarge):
            seam.predict(DEMO_PIPELINE, ["hello"] * 17)
        with pytest.raises(sc.BadRequest):
            seam.request("POST", f"/v1/pipelines/{DEMO_PIPELINE}/predict", content=b'{"texts": [',
                         headers={"Content-Type": "application/json"})
        with pytest.raises(sc.UnsupportedMediaType):
            seam.request("POST", f"/v1/pipelines/{DEMO_PIPELINE}/predict", content=b"hello",
                         headers={"Content-Type": "text/plain"})
    with sc.Gateway(stack.gateway.url) as anonymous, pytest.raises(sc.Unauthorized):
        anonymous.pipelines()
    with sc.Gateway(stack.gateway.url, api_key="wrong") as wrong, pytest.raises(sc.Forbidden):
        wrong.pipelines()
    with sc.Gateway(f"http://127.0.0.1:{free_port()}", timeout=5) as nowhere, pytest.raises(sc.Unreachable):
        nowhere.pipelines()


def test_an_upstream_down_is_503_with_the_request_id(stack):
    """Last: takes the classifier away (and brings it back)."""
    stack.classifier.stop()
    try:
        with stack.client(retries=0) as seam, pytest.raises(sc.Unavailable) as down:
            seam.predict(DEMO_PIPELINE, ["hello"])
        assert down.value.status == 503 and down.value.problem["request_id"] == down.value.request_id
        rid = down.value.request_id
        deadline = time.monotonic() + 10  # the access line is written once the answer has gone
        while not any(line["request_id"] == rid and line["logger"] == "seam.requests" and line["status"] == 503
                      for line in stack.log_lines("gateway")):
            assert time.monotonic() < deadline, "no access log line for the 503"
            time.sleep(0.1)
        warning = [line for line in stack.log_lines("gateway") if line["request_id"] == rid and line["level"] == "warning"]
        assert warning and "unreachable" in warning[0]["message"]
    finally:
        stack.classifier = ServiceProcess("classifier_service", stack.classifier.env, port=stack.classifier.port,
                                          log=stack.var / "classifier.log").start()
    with stack.client() as seam:
        assert seam.predict(DEMO_PIPELINE, ["hello"]).name == DEMO_PIPELINE


# -- the dashboard ----------------------------------------------------------------------------------------


def test_every_metric_the_dashboard_queries_exists(stack):
    from prometheus_client.parser import text_string_to_metric_families

    from tests.support import dashboard_metrics

    exposed = set()
    for service in (stack.encoder, stack.classifier, stack.gateway):
        text = httpx.get(service.url + "/metrics", timeout=30).text
        exposed |= {family.name for family in text_string_to_metric_families(text)}
    assert dashboard_metrics() <= exposed, sorted(dashboard_metrics() - exposed)


# -- the API docs, in a real browser ----------------------------------------------------------------------


@pytest.fixture
def browser():
    from tests.browser import Browser, chromium

    executable = chromium()
    if executable is None:
        pytest.skip("chromium is not installed (CI installs it in .ci/run: apt-get install chromium)")
    browser = Browser(executable)
    yield browser
    browser.close()


OPERATIONS_RENDERED = "document.querySelectorAll('.opblock').length"


@pytest.mark.parametrize("service", ["encoder", "classifier"])
def test_the_docs_render_offline(stack, browser, service):
    url = getattr(stack, service).url
    browser.open(url + "/docs")
    operations = sum(len(item) for item in httpx.get(url + "/openapi.json").json()["paths"].values())
    assert browser.wait_for(f"{OPERATIONS_RENDERED} >= {operations} && {OPERATIONS_RENDERED}") == operations
    leaving = [u for u in browser.requested_urls() if not u.startswith((url + "/", "data:"))]
    assert not leaving, leaving


def test_try_it_out_predicts_from_the_gateway_docs(stack, browser):
    url = stack.gateway.url
    # The docs are public; the API is not: the key goes on every request the page makes.
    browser.open(url + "/docs", headers={"Authorization": f"Bearer {KEY}"})
    browser.wait_for(OPERATIONS_RENDERED)
    block = ("document.querySelector('.opblock-post .opblock-summary-path[data-path=\"/v1/pipelines/{name}/predict\"]')"
             ".closest('.opblock')")
    browser.evaluate(f"{block}.querySelector('.opblock-summary-control').click()")
    browser.wait_for(f"!!{block}.querySelector('.try-out__btn')")
    browser.evaluate(f"{block}.querySelector('.try-out__btn').click()")
    browser.wait_for(f"!!{block}.querySelector('button.execute')")
    # The path parameter starts from its example (the demo pipeline); the body from the request example.
    assert browser.evaluate(f"{block}.querySelector('.parameters input').value") == DEMO_PIPELINE
    browser.evaluate(f"{block}.querySelector('button.execute').click()")
    status = browser.wait_for(f"{block}.querySelector('.live-responses-table tbody .response-col_status')?.innerText.trim()")
    body = browser.evaluate(f"{block}.querySelector('.live-responses-table tbody .microlight')?.innerText")
    assert status == "200", body
    assert json.loads(body)["name"] == DEMO_PIPELINE and len(json.loads(body)["predictions"]) == 1
    requested = browser.requested_urls()
    assert f"{url}/v1/pipelines/{DEMO_PIPELINE}/predict" in requested
    leaving = [u for u in requested if not u.startswith((url + "/", "data:"))]
    assert not leaving, leaving  # every request the page made went to the gateway on 127.0.0.1
