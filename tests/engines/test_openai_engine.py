"""The openai engine against a real OpenAI-compatible server on 127.0.0.1.

The server is `transformers serve` (transformers[serving]) serving the tiny random Llama of the
`tiny_model_dir` fixture on CPU, started once for this module as a subprocess:

    python -m transformers.cli.transformers serve MODEL_DIR --host 127.0.0.1 --port PORT --device cpu

Between the engine and the server, `RecordingProxy` (a small threaded HTTP server written here)
forwards requests unchanged while recording bodies, headers and how many were in flight; it can
also fail the first K requests, hang, or answer `n` itself, to test retries, timeouts and spreading.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from bonito_adapt.engines import load_engine
from bonito_adapt.engines.openai_engine import CHARS_PER_TOKEN, OpenAIEngine, redact_url
from bonito_adapt.engines.spec import EngineSpec, SamplingConfig
from bonito_adapt.errors import UserError

SERVER_START_TIMEOUT_S = 90
PROMPTS = [
    "the contract party shall",
    "question",
    "the receiving party shall not disclose confidential information to",
    "premise hypothesis entailment",
    "written consent",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def served_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A copy of the tiny model whose generation config samples, so seeds and temperature matter."""
    path = tmp_path_factory.mktemp("served") / "tiny-llama"
    shutil.copytree(tiny_model_dir, path)
    config_file = path / "generation_config.json"
    generation_config = json.loads(config_file.read_text())
    generation_config["do_sample"] = True
    config_file.write_text(json.dumps(generation_config))
    return path


@pytest.fixture(scope="module")
def server(served_model_dir, tmp_path_factory):
    """`transformers serve` on a free port; yields its base URL (…/v1)."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("serve-log") / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "", "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, "-m", "transformers.cli.transformers", "serve", str(served_model_dir),
               "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--log-level", "warning"]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"transformers serve exited with {process.returncode}: {log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"transformers serve not ready after {SERVER_START_TIMEOUT_S} s: "
                            f"{log_path.read_text()[-2000:]}")
            time.sleep(0.25)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class RecordingProxy:
    """Forwards to the real server and records what passes; optionally misbehaves.

    fail_first: answer the first K POSTs with `fail_status` (503 unless told) instead of forwarding.
    hang_s: wait this long before answering each POST (to trigger client timeouts).
    delay_s: wait before forwarding each POST (so concurrent requests overlap).
    honor_n: answer `n` itself by forwarding n single requests (seed, seed+1, ...) and returning
        their choices in reversed order with their indices (a server that supports `n`).
    models_payload: answer GET /models with this JSON instead of forwarding.
    """

    def __init__(self, upstream: str, fail_first: int = 0, fail_status: int = 503, hang_s: float = 0.0,
                 delay_s: float = 0.0, honor_n: bool = False, models_payload: dict | None = None):
        self.upstream = upstream.rstrip("/")
        self.fail_first, self.fail_status, self.hang_s, self.delay_s = fail_first, fail_status, hang_s, delay_s
        self.honor_n, self.models_payload = honor_n, models_payload
        self.bodies: list[dict] = []
        self.authorizations: list[str | None] = []
        self.posts = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.http = httpx.Client(timeout=60)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                path = self.path.removeprefix("/v1")
                if proxy.models_payload is not None and path == "/models":
                    return self._send(200, proxy.models_payload)
                response = proxy.http.get(proxy.upstream + path)
                self._send(response.status_code, response.json())

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                with proxy.lock:
                    proxy.posts += 1
                    number = proxy.posts
                    proxy.bodies.append(body)
                    proxy.authorizations.append(self.headers.get("authorization"))
                    proxy.in_flight += 1
                    proxy.max_in_flight = max(proxy.max_in_flight, proxy.in_flight)
                try:
                    status, payload = self._answer(number, body)
                finally:
                    # Out of flight before the client can read the answer and send its next request.
                    with proxy.lock:
                        proxy.in_flight -= 1
                try:
                    self._send(status, payload)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                    pass

            def _answer(self, number, body):
                if number <= proxy.fail_first:
                    return proxy.fail_status, {"error": "temporarily unavailable"}
                if proxy.hang_s:
                    time.sleep(proxy.hang_s)
                if proxy.delay_s:
                    time.sleep(proxy.delay_s)
                path = self.path.removeprefix("/v1")
                if proxy.honor_n and body.get("n", 1) > 1:
                    return 200, proxy._answer_n(path, body)
                response = proxy.http.post(proxy.upstream + path, json=body)
                return response.status_code, response.json()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _answer_n(self, path: str, body: dict) -> dict:
        choices = []
        for i in range(body["n"]):
            single = {k: v for k, v in body.items() if k != "n"} | {"seed": body["seed"] + i}
            choice = self.http.post(self.upstream + path, json=single).json()["choices"][0]
            choices.append({**choice, "index": i})
        return {"object": "text_completion", "model": body["model"], "choices": choices[::-1]}

    def completion_bodies(self) -> list[dict]:
        return [b for b in self.bodies if "prompt" in b]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.http.close()


@pytest.fixture
def make_proxy(server):
    proxies: list[RecordingProxy] = []

    def _make(**kwargs) -> RecordingProxy:
        proxies.append(RecordingProxy(server, **kwargs))
        return proxies[-1]

    yield _make
    for proxy in proxies:
        proxy.close()


def _config(model_dir: Path, base_urls: list[str], **openai) -> EngineSpec:
    openai = {"backoff_s": 0.01, "timeout_s": 30.0, **openai}
    return EngineSpec(model=str(model_dir), openai={"base_urls": base_urls, **openai})


def _local_greedy(model_dir: Path, prompts: list[str], max_new_tokens: int) -> list[str]:
    """What the served model must answer at temperature 0, computed here with transformers."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    texts = []
    for prompt in prompts:
        inputs = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            output = model.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens)
        texts.append(tokenizer.decode(output[0, inputs["input_ids"].shape[-1]:], skip_special_tokens=True))
    return texts


def test_completions_come_back_in_prompt_order_and_equal_the_model(served_model_dir, server, make_proxy):
    proxy = make_proxy(delay_s=0.02)
    engine = load_engine("openai", _config(served_model_dir, [proxy.url], concurrency=4))
    assert isinstance(engine, OpenAIEngine)
    results = engine.generate(PROMPTS, SamplingConfig(temperature=0.0, max_tokens=6))
    assert results == [[text] for text in _local_greedy(served_model_dir, PROMPTS, 6)]
    body = proxy.completion_bodies()[0]
    assert body["model"] == str(served_model_dir) and body["max_tokens"] == 6 and body["seed"] == 0
    assert body["temperature"] == 0.0 and body["top_p"] == 0.95 and "n" not in body
    engine.close()


def test_n_completions_when_the_server_ignores_n_use_distinct_seeds(served_model_dir, server, make_proxy):
    proxy = make_proxy()
    engine = OpenAIEngine(_config(served_model_dir, [proxy.url], concurrency=1))
    results = engine.generate(PROMPTS[:2], SamplingConfig(n=3, seed=7, max_tokens=5, temperature=1.0))
    assert [len(texts) for texts in results] == [3, 3]
    assert all(isinstance(text, str) for texts in results for text in texts)
    # Each prompt: asked for n=3 with seed 7, got one choice (transformers serve ignores n), then asked
    # for the two others with seeds 8 and 9.
    bodies = proxy.completion_bodies()
    requests = {p: sorted((b["seed"], b.get("n", 1)) for b in bodies if b["prompt"] == p) for p in PROMPTS[:2]}
    assert requests == {p: [(7, 3), (8, 1), (9, 1)] for p in PROMPTS[:2]}
    # Now the engine knows: later prompts go straight to one request per seed.
    proxy.bodies.clear()
    assert len(engine.generate(PROMPTS[2:3], SamplingConfig(n=3, seed=7, max_tokens=5))[0]) == 3
    assert [(b.get("n", 1), b["seed"]) for b in proxy.completion_bodies()] == [(1, 7), (1, 8), (1, 9)]


def test_n_completions_from_a_server_that_supports_n_are_ordered_by_index(served_model_dir, server, make_proxy):
    proxy = make_proxy(honor_n=True)
    # One request at a time: transformers serve seeds the global torch RNG, so overlapping requests
    # would disturb each other's samples.
    engine = OpenAIEngine(_config(served_model_dir, [proxy.url], concurrency=1))
    sampling = SamplingConfig(n=3, seed=11, max_tokens=5, temperature=1.0)
    results = engine.generate(PROMPTS[:3], sampling)
    assert [b["n"] for b in proxy.completion_bodies()] == [3, 3, 3]  # one request per prompt
    # The proxy answers choices in reverse order; index i must be the completion of seed 11 + i.
    single = make_proxy()
    for prompt, texts in zip(PROMPTS[:3], results, strict=True):
        for i, text in enumerate(texts):
            body = {"model": str(served_model_dir), "prompt": prompt, "max_tokens": 5, "temperature": 1.0,
                    "top_p": 0.95, "seed": 11 + i}
            assert text == single.http.post(single.url + "/completions", json=body).json()["choices"][0]["text"]


def test_concurrency_is_bounded_and_requests_spread_over_replicas(served_model_dir, server, make_proxy):
    replicas = [make_proxy(delay_s=0.2), make_proxy(delay_s=0.2)]
    engine = OpenAIEngine(_config(served_model_dir, [r.url for r in replicas], concurrency=2))
    prompts = PROMPTS * 2
    results = engine.generate(prompts, SamplingConfig(temperature=0.0, max_tokens=3))
    assert len(results) == len(prompts) and results[:5] == results[5:]  # same prompts, greedy: same answers
    counts = [len(r.completion_bodies()) for r in replicas]
    assert sum(counts) == len(prompts) and min(counts) > 0
    # Two slots over two replicas, least-loaded first: each replica has exactly one request at a time.
    assert [r.max_in_flight for r in replicas] == [1, 1]


def test_5xx_and_429_are_retried_then_succeed(served_model_dir, server, make_proxy):
    for status in (503, 429):
        proxy = make_proxy(fail_first=3, fail_status=status)
        engine = OpenAIEngine(_config(served_model_dir, [proxy.url], max_retries=3, concurrency=1))
        results = engine.generate(PROMPTS[:2], SamplingConfig(temperature=0.0, max_tokens=3))
        assert results == [[t] for t in _local_greedy(served_model_dir, PROMPTS[:2], 3)]
        assert proxy.posts == 3 + 2


def test_retries_exhausted_give_one_line_user_error(served_model_dir, server, make_proxy):
    proxy = make_proxy(fail_first=100)
    engine = OpenAIEngine(_config(served_model_dir, [proxy.url], max_retries=2))
    with pytest.raises(UserError) as caught:
        engine.generate(PROMPTS[:1], SamplingConfig(max_tokens=3))
    message = str(caught.value)
    assert "\n" not in message and "failed 3 times" in message and "HTTP 503" in message and proxy.url in message
    assert proxy.posts == 3


def test_a_failing_replica_is_avoided(served_model_dir, server, make_proxy):
    broken, healthy = make_proxy(fail_first=100), make_proxy()
    engine = OpenAIEngine(_config(served_model_dir, [broken.url, healthy.url], max_retries=3, concurrency=1))
    results = engine.generate(PROMPTS, SamplingConfig(temperature=0.0, max_tokens=3))
    assert results == [[t] for t in _local_greedy(served_model_dir, PROMPTS, 3)]
    assert len(healthy.completion_bodies()) == len(PROMPTS)
    assert broken.posts == 1  # tried once in its turn, then chosen last because it failed


def test_timeout_is_retried_then_reported(served_model_dir, server, make_proxy):
    proxy = make_proxy(hang_s=3.0)
    engine = OpenAIEngine(_config(served_model_dir, [proxy.url], timeout_s=0.3, max_retries=1))
    with pytest.raises(UserError, match=r"no answer within 0\.3 s.*raise generate\.openai\.timeout_s"):
        engine.generate(PROMPTS[:1], SamplingConfig(max_tokens=3))
    assert proxy.posts == 2


def test_unreachable_server_is_one_line_error_naming_the_url(tiny_model_dir, caplog):
    port = _free_port()
    dead = f"http://user:hunter2@127.0.0.1:{port}/v1"
    with pytest.raises(UserError) as caught:
        OpenAIEngine(_config(tiny_model_dir, [dead], max_retries=0))
    message = str(caught.value)
    assert "\n" not in message and "no OpenAI-compatible server answers" in message and "vllm serve" in message
    assert f"http://127.0.0.1:{port}/v1" in message and "hunter2" not in message and "hunter2" not in caplog.text


def test_dead_replica_is_dropped_when_another_answers(served_model_dir, server, make_proxy, caplog):
    proxy = make_proxy()
    dead = f"http://127.0.0.1:{_free_port()}/v1"
    with caplog.at_level(logging.WARNING):
        engine = OpenAIEngine(_config(served_model_dir, [dead, proxy.url]))
    assert f"{dead} does not answer" in caplog.text
    assert engine.generate(PROMPTS[:2], SamplingConfig(max_tokens=2)) and len(proxy.completion_bodies()) == 2


def test_api_key_is_sent_as_bearer_and_never_logged(served_model_dir, server, make_proxy, monkeypatch, caplog):
    secret = "sk-test-0123456789abcdef"
    monkeypatch.setenv("BONITO_TEST_KEY", secret)
    proxy = make_proxy(fail_first=1)  # a retry, so the debug log has something to say
    with caplog.at_level(logging.DEBUG):
        engine = OpenAIEngine(_config(served_model_dir, [proxy.url], api_key_env="BONITO_TEST_KEY"))
        engine.generate(PROMPTS[:2], SamplingConfig(max_tokens=2))
    assert proxy.authorizations and set(proxy.authorizations) == {f"Bearer {secret}"}
    assert "HTTP 503" in caplog.text  # the failed attempt was logged
    assert secret not in caplog.text
    assert secret not in json.dumps(engine.spec.model_dump())


def test_url_credentials_go_as_basic_auth_and_stay_out_of_logs(served_model_dir, server, make_proxy, caplog):
    proxy = make_proxy()
    with_credentials = proxy.url.replace("http://", "http://alice:s3cr%40t@")
    with caplog.at_level(logging.DEBUG):
        engine = OpenAIEngine(_config(served_model_dir, [with_credentials]))
        engine.generate(PROMPTS[:1], SamplingConfig(max_tokens=2))
    expected = "Basic " + base64.b64encode(b"alice:s3cr@t").decode()
    assert proxy.authorizations == [expected]
    assert "HTTP Request: POST" in caplog.text  # httpx logged the request URL ...
    assert "s3cr" not in caplog.text and "alice" not in caplog.text  # ... without the credentials


def test_rejected_model_name_says_how_to_fix(served_model_dir, server):
    engine = OpenAIEngine(_config(served_model_dir, [server], model_name="some/other-model"))
    with pytest.raises(UserError, match=r"rejected the request \(HTTP 400.*set generate\.openai\.model_name"):
        engine.generate(PROMPTS[:1], SamplingConfig(max_tokens=2))


def test_token_counting_and_context_window(served_model_dir, tiny_tokenizer, server, make_proxy):
    proxy = make_proxy(models_payload={"object": "list", "data": [
        {"id": str(served_model_dir), "object": "model", "max_model_len": 2048}]})
    engine = OpenAIEngine(_config(served_model_dir, [proxy.url]))
    text = "the contract party shall not disclose confidential information"
    assert engine.count_tokens(text) == len(tiny_tokenizer(text, add_special_tokens=False)["input_ids"])
    assert engine.max_context == 2048  # as vLLM reports it
    assert OpenAIEngine(_config(served_model_dir, [server])).max_context is None  # transformers serve does not


def test_chars_per_token_estimate_without_a_local_tokenizer(served_model_dir, server, tmp_path, caplog):
    config = _config(served_model_dir, [server], model_name=str(served_model_dir))
    config.model = str(tmp_path / "not-here")  # the server has the model; this machine does not
    with caplog.at_level(logging.WARNING):
        engine = OpenAIEngine(config)
    assert "characters/4" in caplog.text
    assert engine.count_tokens("x" * 10) == -(-10 // CHARS_PER_TOKEN)
    assert engine.generate(PROMPTS[:1], SamplingConfig(max_tokens=2))[0][0] is not None


def test_generate_works_inside_a_running_event_loop(served_model_dir, server):
    engine = OpenAIEngine(_config(served_model_dir, [server]))

    async def notebook_cell():
        return engine.generate(PROMPTS[:2], SamplingConfig(temperature=0.0, max_tokens=3))

    assert asyncio.run(notebook_cell()) == [[t] for t in _local_greedy(served_model_dir, PROMPTS[:2], 3)]


def test_progress_callback_counts_completed_prompts(served_model_dir, server):
    engine = OpenAIEngine(_config(served_model_dir, [server]))
    seen: list[tuple[int, int]] = []
    engine.on_progress = lambda done, total: seen.append((done, total))
    engine.generate(PROMPTS, SamplingConfig(max_tokens=2))
    assert seen == [(i, len(PROMPTS)) for i in range(1, len(PROMPTS) + 1)]


def test_redact_url_hides_credentials_and_query():
    assert redact_url("https://bob:pw@example.org:8443/v1?key=abc") == "https://***@example.org:8443/v1?***"
    assert redact_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"


def test_bad_base_url_is_a_user_error(tiny_model_dir):
    with pytest.raises(UserError, match="base_urls.*not an http"):
        OpenAIEngine(_config(tiny_model_dir, ["127.0.0.1:8000"]))
