"""Hostile input against a real broker process: a DNS-rebinding page, a cross-site form, oversized
and ambiguous requests, a request target that does not parse, and the server's start-up checks.
Each test sends raw bytes where a client library would tidy them up."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests

from tests.integration.processes import REPO, Broker, clean_env, event, free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def broker(module_processes):
    return Broker.of(module_processes.broker(time_scale=0.01))


def raw(broker: Broker, data: bytes, timeout: float = 5.0) -> bytes:
    """Send bytes on a fresh connection; everything the broker answers until it closes (or goes quiet)."""
    host, port = broker.url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(data)
        got = b""
        try:
            while chunk := s.recv(65536):
                got += chunk
                if b"\r\n\r\n" in got and b"Content-Length: " in got:
                    head, _, body = got.partition(b"\r\n\r\n")
                    length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                    if len(body) >= length and b"Connection: close" not in head:
                        break
        except TimeoutError:
            pass
        return got


def status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status_file:
        for line in status_file:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


PUBLISH = json.dumps([event()]).encode()


@pytest.mark.parametrize("path, body", [("/api/events", PUBLISH), ("/topics", b"")])
def test_a_host_name_the_broker_is_not_known_by_is_refused_on_every_path(broker, path, body):
    method = b"POST" if body else b"GET"
    answer = raw(broker, b"%s %s HTTP/1.1\r\nHost: evil.example:5000\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                 % (method, path.encode(), len(body), body))
    assert status(answer) == 403 and b"HostNotAllowed" in answer
    ok = raw(broker, b"%s %s HTTP/1.1\r\nHost: localhost:5000\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
             % (method, path.encode(), len(body), body))
    assert status(ok) == 200


def test_a_cross_site_form_cannot_subscribe_regenerate_keys_or_redeliver(broker):
    before = broker.request("GET", "/topics/default/eventSubscriptions").json()["value"]
    form = broker.request("POST", "/subscribe", data='{"eventType": "A", "endpoint": "http://evil.example/x"}',
                          headers={"Content-Type": "text/plain"})
    assert form.status_code == 415
    cross = broker.request("POST", "/topics/default/regenerateKey", json={"keyName": "key1"},
                           headers={"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403 and cross.json()["error"]["code"] == "CrossSiteRequestRefused"
    bodiless = broker.request("POST", "/topics/default/eventSubscriptions/x/deadLetters/redeliver", headers={"Origin": "null"})
    assert bodiless.status_code == 403
    assert broker.request("GET", "/topics/default/eventSubscriptions").json()["value"] == before


def test_a_50_mb_publish_is_refused_from_its_headers_before_its_body_is_read(broker, module_processes):
    pid = next(s.proc.pid for s in module_processes.started if s.name == "broker")
    before = rss_kib(pid)
    host, port = broker.url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"POST /api/events HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 52428800\r\n\r\n")
        s.sendall(b"[" + b" " * 65536)  # the start of the body: the answer must not wait for the rest
        answer = s.recv(65536)
        assert status(answer) == 413 and b"RequestEntityTooLarge" in answer and b"Connection: close" in answer
        s.settimeout(5)
        try:
            rest = s.recv(65536)
            while rest:  # the broker closes the connection after its answer
                rest = s.recv(65536)
        except ConnectionResetError:
            pass
    assert rss_kib(pid) - before < 10_000, "the broker read the body anyway"


def test_a_request_with_both_content_length_and_transfer_encoding_is_refused_and_closed(broker):
    body = b"5\r\n[1,2]\r\n0\r\n\r\n"
    answer = raw(broker, b"POST /api/events HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n"
                 b"Content-Type: application/json\r\n\r\n" + body + b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert status(answer) == 400
    assert answer.count(b"HTTP/1.1 ") == 1, "a second request was served on the same connection"


def test_the_same_ambiguous_request_arriving_in_pieces_is_refused_and_closed_too(broker):
    # A head split over reads is parsed by waitress, which would let Transfer-Encoding win.
    request = (b"POST /api/events HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n"
               b"Content-Type: application/json\r\n\r\n5\r\n[1,2]\r\n0\r\n\r\nGET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
    host, port = broker.url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=3.0) as s:
        s.sendall(request[:30])
        time.sleep(0.05)  # read apart: the fast path sees half a head
        s.sendall(request[30:])
        answer = b""
        while chunk := s.recv(65536):  # until the broker closes (a timeout fails the test)
            answer += chunk
    assert status(answer) == 400
    assert answer.count(b"HTTP/1.1 ") == 1, answer


def test_an_absolute_request_target_that_does_not_parse_is_answered(broker):
    answer = raw(broker, b"POST http://x:99999/api/events HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(PUBLISH), PUBLISH))
    assert status(answer) in (200, 400)  # answered (waitress reads the path out of it), not dropped


def test_metrics_stay_small_however_many_made_up_topics_and_api_versions_are_sent(broker):
    def size() -> int:
        return len(broker.request("GET", "/metrics").content)

    first = size()
    for n in range(200):
        broker.request("POST", f"/topics/nope-{n}/api/events?api-version=2099-{n:04d}", data=b"not json",
                       headers={"Content-Type": "application/json"})
    assert size() - first < 2_000


def test_a_host_name_with_several_addresses_is_refused_at_start_up_with_the_reason(tmp_path):
    addresses = {info[4][0] for info in socket.getaddrinfo("localhost", None, type=socket.SOCK_STREAM)}
    if len(addresses) < 2:
        pytest.skip(f"localhost resolves to {addresses} here: nothing to refuse")
    run = subprocess.run([sys.executable, "-m", "broker"], cwd=REPO, capture_output=True, text=True, timeout=60,
                         env=clean_env(BROKER_HOST="localhost", BROKER_PORT=free_port(), BROKER_DATA_DIR=tmp_path))
    assert run.returncode == 2 and "resolves to several addresses" in run.stderr


def test_another_waitress_version_serves_without_the_fast_path_pull_long_polls_included(processes):
    proc = processes.broker(name="plain", BROKER_FAKE_WAITRESS_VERSION="9.9.9")
    broker = Broker.of(proc)
    assert broker.publish([event()]).status_code == 200
    for path, body in (("/namespaces/plain", {}), ("/namespaces/plain/topics/orders", {}),
                       ("/namespaces/plain/topics/orders/eventSubscriptions/worker",
                        {"properties": {"deliveryConfiguration": {"deliveryMode": "Queue", "queue": {}}}})):
        assert broker.request("PUT", path, json=body).status_code == 201
    key = broker.request("POST", "/namespaces/plain/listKeys").json()["key1"]
    auth = {"Authorization": f"SharedAccessKey {key}"}
    got: dict = {}

    def receive() -> None:
        started = time.monotonic()
        got["answer"] = requests.post(f"{broker.url}/namespaces/plain/topics/orders/eventsubscriptions/worker:receive?maxWaitTime=10",
                                      headers=auth, timeout=20).json()
        got["took"] = time.monotonic() - started

    waiter = threading.Thread(target=receive)
    waiter.start()
    time.sleep(0.3)  # the receive is waiting by now (a bounded pause: the test is about what comes next)
    published = requests.post(f"{broker.url}/namespaces/plain/topics/orders:publish", timeout=10,
                              json=[{"specversion": "1.0", "id": "plain-1", "source": "/p", "type": "T"}],
                              headers={**auth, "Content-Type": "application/cloudevents-batch+json"})
    assert published.status_code == 200
    waiter.join(20)
    assert [v["event"]["id"] for v in got["answer"]["value"]] == ["plain-1"] and got["took"] < 8
    assert any("without the fast path" in line for line in proc.log_path.read_text().splitlines())


def test_make_server_refuses_a_host_that_resolves_to_several_addresses(monkeypatch):
    """What BROKER_HOST=localhost meets on a dual-stack machine, made to happen here."""
    from waitress import adjustments

    from broker.ingress import is_publish
    from broker.serving import make_server

    port = free_port()
    real = socket.getaddrinfo

    def two(host, *args, **kwargs):
        if host == "dual.test":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
                    (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.2", port))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(adjustments.socket, "getaddrinfo", two)
    with pytest.raises(ValueError, match="resolves to several addresses"):
        make_server(lambda environ, start: [], is_publish, threads=1, host="dual.test", port=port)
    with socket.socket() as probe:  # and nothing is left listening
        probe.bind(("127.0.0.1", port))
