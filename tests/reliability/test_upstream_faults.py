"""Upstream faults through real processes: a real gateway between misbehaving upstream processes
(tests/reliability/fake_upstream.py) that are switched to bad answers, slowed, killed mid-traffic
and started again. The gateway is never restarted: it recovers by itself."""

from __future__ import annotations

import concurrent.futures
import signal
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.processes import ServiceProcess
from tests.reliability.fake_upstream import PIPELINE
from tests.support import assert_problem

pytestmark = pytest.mark.integration

FAKE = "tests.reliability.fake_upstream"
TIMEOUT_S = 1


@dataclass
class Upstreams:
    encoder: ServiceProcess
    classifier: ServiceProcess
    gateway: ServiceProcess
    http: httpx.Client

    def predict(self, texts=("where is my parcel", "charged twice")) -> httpx.Response:
        return self.http.post(f"{self.gateway.url}/v1/pipelines/{PIPELINE}/predict", json={"texts": list(texts)})

    def fault(self, service: ServiceProcess, **command) -> None:
        assert self.http.post(f"{service.url}/_fault", json=command).status_code == 200

    def calls(self, service: ServiceProcess, route: str) -> int:
        return self.http.get(f"{service.url}/_calls").json().get(route, 0)

    def restart(self, name: str) -> None:
        old: ServiceProcess = getattr(self, name)
        setattr(self, name, ServiceProcess(FAKE, old.env, port=old.port, log=old.log).start())


@pytest.fixture(scope="module")
def upstreams(tmp_path_factory) -> Iterator[Upstreams]:
    var = tmp_path_factory.mktemp("upstream-faults")
    encoder = ServiceProcess(FAKE, {"FAKE_ROLE": "encoder"}, log=var / "encoder.log")
    classifier = ServiceProcess(FAKE, {"FAKE_ROLE": "classifier"}, log=var / "classifier.log")
    gateway = ServiceProcess("gateway", {
        "GATEWAY_ENCODER_URL": encoder.url, "GATEWAY_CLASSIFIER_URL": classifier.url, "GATEWAY_TIMEOUT_S": str(TIMEOUT_S),
        "GATEWAY_PIPELINE_TTL_S": "0", "GATEWAY_RECHECK_INTERVAL_S": "0", "GATEWAY_CONNECT_TIMEOUT_S": "0.5",
    }, log=var / "gateway.log")
    u = Upstreams(encoder, classifier, gateway, httpx.Client(timeout=30))
    try:
        for service in (encoder, classifier, gateway):
            service.start(wait_ready=False)
        for service in (encoder, classifier, gateway):
            service.wait_ready(60)
        assert u.predict().status_code == 200
        yield u
    finally:
        u.http.close()
        for service in (u.gateway, u.encoder, u.classifier, encoder, classifier):
            service.stop(kill=True)


@pytest.mark.parametrize(("mode", "why"), [("nan", "NaN or infinity"), ("wide", "11-wide vectors where its contract says 8"),
                                           ("rows", "3 rows for 2 texts")])
def test_a_wrong_encoder_tensor_is_502_naming_the_stage_and_goes_no_further(upstreams, mode, why):
    before = upstreams.calls(upstreams.classifier, f"POST /v1/models/{PIPELINE}/predict")
    upstreams.fault(upstreams.encoder, mode=mode)
    try:
        body = assert_problem(upstreams.predict(), 502, f"encoder {upstreams.encoder.url}", "encode embedding", why)
        assert body["stage"] == "encode embedding" and body["type"].endswith("/bad-upstream-response")
        # nothing wrong was passed on: the classifier never saw those vectors
        assert upstreams.calls(upstreams.classifier, f"POST /v1/models/{PIPELINE}/predict") == before
    finally:
        upstreams.fault(upstreams.encoder, mode="none")
    assert upstreams.predict().status_code == 200


@pytest.mark.parametrize(("mode", "why"), [("inf", "NaN or infinity"), ("rows", "1 rows for 2 texts")])
def test_a_wrong_classifier_tensor_is_502_naming_the_stage(upstreams, mode, why):
    upstreams.fault(upstreams.classifier, mode=mode)
    try:
        body = assert_problem(upstreams.predict(), 502, f"classifier {upstreams.classifier.url}",
                              f"predict {PIPELINE} v1", why)
        assert "inf" not in str(body.get("predictions", ""))
    finally:
        upstreams.fault(upstreams.classifier, mode="none")
    assert upstreams.predict().status_code == 200


def test_a_slow_upstream_is_504_and_does_not_block_other_requests(upstreams):
    upstreams.fault(upstreams.encoder, slow_text="slowly", delay_s=TIMEOUT_S + 2)
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            slow = pool.submit(upstreams.predict, ["answer me slowly"])
            time.sleep(0.2)  # the slow one is in flight
            for _ in range(5):
                started = time.monotonic()
                assert upstreams.predict().status_code == 200
                assert time.monotonic() - started < TIMEOUT_S
            response = slow.result()
        assert_problem(response, 504, f"encoder {upstreams.encoder.url} did not answer within {TIMEOUT_S}s")
    finally:
        upstreams.fault(upstreams.encoder, mode="none")


@pytest.mark.parametrize("name", ["encoder", "classifier"])
def test_an_upstream_killed_mid_traffic_is_503_naming_it_and_the_gateway_recovers(upstreams, name):
    gateway_pid = upstreams.gateway.proc.pid
    statuses: Counter[int] = Counter()
    details: list[str] = []

    def traffic(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            response = upstreams.predict()
            statuses[response.status_code] += 1
            if response.status_code != 200:
                details.append(response.json()["detail"])

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        running = [pool.submit(traffic, 1.5) for _ in range(2)]
        time.sleep(0.5)
        service: ServiceProcess = getattr(upstreams, name)
        service.proc.send_signal(signal.SIGKILL)  # mid-traffic, no goodbye
        service.proc.wait()
        for future in running:
            future.result()
    assert statuses[503] > 0 and set(statuses) <= {200, 503}, statuses
    assert all(f"{name} {service.url}" in d for d in details), details[:3]

    upstreams.restart(name)  # same port; the gateway is left alone
    deadline = time.monotonic() + 10
    while upstreams.predict().status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [upstreams.predict().status_code for _ in range(5)] == [200] * 5
    assert upstreams.gateway.proc.pid == gateway_pid


@pytest.mark.parametrize(("name", "stage"), [("encoder", "encode embedding"), ("classifier", f"read model {PIPELINE}")])
def test_with_an_upstream_paused_every_caller_is_answered_within_the_timeout_of_its_own_arrival(upstreams, name, stage):
    # Callers of one pipeline arriving one after another while the upstream is stopped (SIGSTOP: its
    # socket still accepts, nothing answers). They used to queue behind each other's timeouts and be
    # answered after 1, 2, 3 ... timeouts; each now has its own deadline.
    service: ServiceProcess = getattr(upstreams, name)

    def timed(delay: float) -> tuple[float, httpx.Response]:
        time.sleep(delay)
        started = time.monotonic()
        response = upstreams.predict()
        return time.monotonic() - started, response

    service.proc.send_signal(signal.SIGSTOP)
    try:
        with concurrent.futures.ThreadPoolExecutor(5) as pool:
            answers = list(pool.map(timed, [0.0, 0.2, 0.4, 0.6, 0.8]))
    finally:
        service.proc.send_signal(signal.SIGCONT)
    for took, response in answers:
        body = assert_problem(response, 504, f"{name} {service.url} did not answer within {TIMEOUT_S}s", stage,
                              "GATEWAY_TIMEOUT_S")
        assert body["upstream"] == f"{name} {service.url}" and body["stage"] == stage
        assert took < TIMEOUT_S + 0.5, [round(t, 2) for t, _ in answers]
    deadline = time.monotonic() + 10
    while upstreams.predict().status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert upstreams.predict().status_code == 200
