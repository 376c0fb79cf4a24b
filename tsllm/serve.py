"""`tsllm serve`: tree-search decoding behind an OpenAI-compatible HTTP API (docs/SERVE.md).

    tsllm serve --run runs/reach-tiny [--round K] [--port 8000]
    tsllm serve --policy DIR --value DIR --task game24 [--method mcts_alpha --set mcts_alpha.width=4]

Endpoints, in OpenAI's request and response shapes (no streaming): `/v1/completions` (each prompt
is one of the task's questions), `/v1/chat/completions` (the last user message is the question)
and `/v1/models` (the served model, then every method name). A request picks its method with
`model` (a method name; the served name means the default) or with the extra fields `method` and
`knobs` (the openai client's `extra_body`); the default is the run's own search with its knobs,
as `tsllm eval --run` runs it, and a request's knobs are laid over the method's defaults. A choice's
text is the steps of a path the search chose; the extra field `tsllm` holds per prompt the answer,
the generated tokens, the compute (generated + prompt tokens not served from a cache), the
critic's value of the chosen path and, with `"tree": true`, the tree as `tsllm eval --trees`
writes it. `n > 1` returns the search's top candidates after its chosen path.

Why a queue and one worker thread: a search takes many roots per call and batches every
expansion across them, so concurrent requests are worth more together than apart. Requests wait in
a bounded queue; the worker drains it, groups what is pending by method + knobs and runs each group
as one search call, as `tsllm eval` runs its questions (evaluate.run_method). A group is searched in
the order of its prompts' text, so its results depend on which requests share the call, not on the
order they arrived in. Only the worker touches the models.

Bad input is answered, never run: 400 for an unknown method or knob (named) or a prompt the task
cannot read, 404 for an unknown model, 413 for a prompt over --max-prompt-tokens, 503 when the
queue is full. Knobs are JSON scalars checked against the algorithm's signature (the checks a
run's config gets); nothing a client sends is evaluated as code. Every request's search budget
(tsllm.types.Budget) is capped by --max-tokens and --max-seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import queue
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tsllm.types import Budget

UNGUIDED = ("greedy", "cot_sc")  # the methods that read no value model


class RequestError(Exception):
    """A request the server answers with `status` and OpenAI's error body, naming `param`."""

    def __init__(self, status: int, message: str, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param = status, message, param

    def body(self) -> dict[str, Any]:
        kind = {404: "not_found_error", 413: "request_too_large", 503: "overloaded_error"}.get(
            self.status, "invalid_request_error" if self.status < 500 else "server_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.status}}


@dataclass
class Limits:
    """What one request may ask of the server (flags of the same names)."""

    queue_size: int = 64  # prompts waiting for the worker; more: 503
    max_batch: int = 32  # prompts the worker takes per round (run_method's chunk)
    batch_wait: float = 0.01  # seconds the worker waits for more prompts once one arrived
    max_prompt_tokens: int = 1024  # longer prompts: 413
    max_tokens: int | None = None  # generated tokens per prompt's search (Budget.max_tokens) at most
    max_seconds: float | None = 120.0  # seconds per prompt's search (Budget.max_seconds) at most
    max_count: int = 1024  # an integer knob (width, num_simulations, ...) at most


# ------------------------------------------------------------------------------- methods and knobs

def method_names() -> list[str]:
    from tsllm.search import ALGORITHMS

    return list(UNGUIDED) + [name for name in ALGORITHMS if name not in UNGUIDED]


def check_knobs(method: str, knobs: Any, limits: Limits) -> dict[str, Any]:
    """`knobs` (a client's JSON) as keyword arguments of `method`, or RequestError(400) naming the
    first bad one: the names a run's config may set (loop_config.algorithm_knobs), values of the
    parameter's type, counts up to `limits.max_count`, and the Budget limits as numbers >= 0."""
    from tsllm.config import ConfigError
    from tsllm.loop_config import algorithm_knobs, check_knob

    if not isinstance(knobs, dict):
        raise RequestError(400, f"knobs must be an object of knob names and values, got {type(knobs).__name__}",
                           "knobs")
    valid = algorithm_knobs("cot_greedy" if method == "greedy" else method)
    for name, value in knobs.items():
        if name in Budget.LIMITS:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0 or (name != "max_seconds" and not isinstance(value, int)):
                raise RequestError(400, f"knob {name!r} of {method}: must be a number >= 0 "
                                        f"({'seconds' if name == 'max_seconds' else 'an integer'}), got {value!r}",
                                   f"knobs.{name}")
            continue
        if name not in valid:
            raise RequestError(400, f"{method} has no knob {name!r}; its knobs: {sorted(valid) + list(Budget.LIMITS)}",
                               f"knobs.{name}")
        try:
            check_knob(name, value, valid[name])
        except ConfigError as error:
            raise RequestError(400, f"knob {name!r} of {method}: {str(error).split(': ', 1)[1]}",
                               f"knobs.{name}") from None
        if isinstance(value, int) and not isinstance(value, bool) and value > limits.max_count:
            raise RequestError(400, f"knob {name!r} of {method}: at most {limits.max_count} here, got {value}",
                               f"knobs.{name}")
    return dict(knobs)


def capped(knobs: dict[str, Any], limits: Limits) -> dict[str, Any]:
    """`knobs` with the server's per-request budget laid over what the client asked."""
    out = dict(knobs)
    for name, cap in (("max_tokens", limits.max_tokens), ("max_seconds", limits.max_seconds)):
        if cap is not None:
            out[name] = min(out.get(name, cap), cap)
    return out


# ------------------------------------------------------------------------------- the queue and its worker

@dataclass
class Pending:
    """One prompt waiting for its search; the worker settles `future` on the request's event loop."""

    method: str
    knobs: dict[str, Any]
    root: Any
    order: str  # its place in a group: the prompt's text
    n: int
    tree: bool
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future = field(repr=False)

    @property
    def group(self) -> tuple[str, str]:
        return self.method, json.dumps(self.knobs, sort_keys=True)

    def settle(self, result: Any) -> None:
        def set_result() -> None:
            if not self.future.done():  # a client that went away leaves a cancelled future
                self.future.set_result(result)

        self.loop.call_soon_threadsafe(set_result)


class Batcher:
    """A bounded queue of Pending prompts and the one worker thread that drains it: it takes what
    is waiting (up to `max_batch`, waiting `batch_wait` s for more once one arrived) and hands it
    to `run_batch`. `hold()` keeps the worker from taking a batch, so tests and benchmarks can
    line requests up first."""

    def __init__(self, run_batch, limits: Limits):
        self.run_batch, self.limits = run_batch, limits
        self.queue: queue.Queue[Pending] = queue.Queue(limits.queue_size)
        self.taken = 0  # prompts the worker holds (collecting or searching)
        self.batches = 0
        self._open, self._stop = threading.Event(), threading.Event()
        self._open.set()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._work, name="tsllm-serve-worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._open.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def submit(self, items: list[Pending]) -> None:
        """Queue all of `items` or none (503). Only the event loop's thread submits, so the room
        checked is still there when they are put."""
        if self.queue.qsize() + len(items) > self.limits.queue_size:
            raise RequestError(503, f"the server's queue is full ({self.limits.queue_size} prompts waiting); "
                                    "retry later")
        for item in items:
            self.queue.put_nowait(item)

    def pending(self) -> int:
        return self.queue.qsize() + self.taken

    @contextmanager
    def hold(self) -> Iterator[None]:
        self._open.clear()
        try:
            yield
        finally:
            self._open.set()

    def _take(self) -> list[Pending]:
        try:
            batch = [self.queue.get(timeout=0.1)]
        except queue.Empty:
            return []
        self.taken = 1
        self._open.wait()  # held: the first prompt waits in hand, the rest in the queue
        deadline = time.monotonic() + self.limits.batch_wait
        while len(batch) < self.limits.max_batch:
            left = deadline - time.monotonic()
            try:
                batch.append(self.queue.get(timeout=left) if left > 0 else self.queue.get_nowait())
            except queue.Empty:
                break
            self.taken = len(batch)
        return batch

    def _work(self) -> None:
        while not self._stop.is_set():
            batch = self._take()
            if batch:
                self.batches += 1
                self.run_batch(batch)
                self.taken = 0


# ------------------------------------------------------------------------------- searching a batch

def jsonable(value: Any) -> Any:
    """An answer (a Fraction, a tuple, ...) as the JSON the response carries."""
    return json.loads(json.dumps(value, default=str))


def path_text(env: Any, root: Any, end: Any) -> str:
    """What the policy and env wrote from `root` to `end`: the end's prompt past the root's
    (steps and their separators, the last separator dropped); a state without text is its name."""
    if not hasattr(env, "prompt"):
        return str(end)
    head, full = env.prompt(root), env.prompt(end)
    text = full[len(head):] if full.startswith(head) else full
    sep = getattr(env, "step_separator", "")
    return text[:-len(sep)] if sep and text.endswith(sep) else text


def top_paths(out: Any, n: int) -> list[tuple[list, Any, float | None]]:
    """(path, answer, score) of the search's chosen path, then of its best-scored other candidates
    (ties: the search's order), `n` at most."""
    ranked = sorted(out.candidates, key=lambda c: -c.score)
    chosen = next((c.score for c in ranked if c.path == out.best_path), None)
    others = [(c.path, c.answer, c.score) for c in ranked if c.path != out.best_path]
    return [(out.best_path, out.answer, chosen)] + others[: n - 1]


class Service:
    """What the endpoints answer with: the task's env, the methods' models (`make_pv`, as
    evaluate.prepare_method takes it), each servable method's default knobs, and the limits."""

    def __init__(self, task: Any, make_pv, defaults: dict[str, dict[str, Any]], default_method: str,
                 name: str = "tsllm", limits: Limits | None = None, count_tokens=len):
        if default_method not in defaults:
            raise ValueError(f"default method {default_method!r} is not among the served {list(defaults)}")
        self.task, self.env, self.make_pv = task, task.env, make_pv
        self.defaults, self.default_method, self.name = defaults, default_method, name
        self.limits = limits or Limits()
        self.count_tokens = count_tokens
        self.batcher = Batcher(self.run_batch, self.limits)
        self.created = int(time.time())

    def run_batch(self, batch: list[Pending]) -> None:
        """Each group of same method + knobs as one search call over its roots, in prompt order."""
        groups: dict[tuple[str, str], list[Pending]] = defaultdict(list)
        for item in batch:
            groups[item.group].append(item)
        for group in groups.values():
            group.sort(key=lambda item: item.order)
            try:
                results: list[Any] = self.search(group)
            except RequestError as error:
                results = [error] * len(group)
            except Exception as error:  # a bug or a model failure: this group's answer, not the server's end
                results = [RequestError(500, f"the search failed: {type(error).__name__}: {error}")] * len(group)
            for item, result in zip(group, results):
                item.settle(result)

    def search(self, group: list[Pending]) -> list[dict[str, Any]]:
        from tsllm.evaluate import prepare_method

        method, knobs = group[0].method, group[0].knobs
        algorithm, pv, budget, search_knobs = prepare_method(self.make_pv, method, knobs)
        try:
            outs = algorithm(self.env, pv, [item.root for item in group], budget=budget, **search_knobs)
        except (ValueError, TypeError) as error:  # a knob value the algorithm refuses (an unknown rule, ...)
            raise RequestError(400, f"{method} refused its knobs {knobs}: {error}", "knobs") from None
        ends = [out.best_path[-1] for out in outs]
        values = [None] * len(outs) if method in UNGUIDED else pv.evaluate(ends)  # cached: searches value their nodes
        return [self.found(item, out, value, len(group)) for item, out, value in zip(group, outs, values)]

    def found(self, item: Pending, out: Any, value: float | None, batch: int) -> dict[str, Any]:
        """One prompt's result: its choices (text, finish reason) and what the search spent."""
        spent = out.budget
        choices = [{"text": path_text(self.env, out.root, path[-1]), "answer": jsonable(answer), "score": score,
                    "finish_reason": "stop" if self.env.is_terminal(path[-1]) else "length"}
                   for path, answer, score in top_paths(out, item.n)]
        result = {"answer": jsonable(out.answer), "tokens": spent.tokens,
                  "compute": spent.tokens + spent.prompt_tokens - spent.cached_tokens,
                  "value": None if value is None else float(value), "nodes": out.stats.get("nodes", 0),
                  "seconds": spent.seconds, "batch": batch, "choices": choices}
        if item.tree and out.tree is not None:  # as `tsllm eval --trees` writes a question's file
            from tsllm.evaluate import is_correct
            from tsllm.trees import question_tree

            try:
                correct = is_correct(self.env, out)
            except ValueError:  # a question without a gold answer: nothing to check against
                correct = None
            result["tree"] = jsonable({"method": item.method, "question": item.order, "answer": out.answer,
                                       "correct": correct, "tokens": spent.tokens, **question_tree(self.env, out)})
        return result

    # --------------------------------------------------------------------------- requests

    def choose(self, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """(method, knobs) of a request: `method` (else `model` when it names one; the served name
        or none: the default) and its defaults under the request's `knobs`; OpenAI's `max_tokens`
        is the search's generated-token budget per prompt unless `knobs` sets one; the server's
        caps over all."""
        model, method = body.get("model"), body.get("method")
        for name, value in (("model", model), ("method", method)):
            if value is not None and not isinstance(value, str):
                raise RequestError(400, f"{name} must be a string, got {type(value).__name__}", name)
        if method is None:
            if model in (None, self.name):
                method = self.default_method
            elif model in self.defaults:
                method = model
            else:
                raise RequestError(404, f"model {model!r} is not served here; choose one of "
                                        f"{[self.name, *self.defaults]}", "model")
        elif method not in self.defaults:
            why = ("it needs a value model and this server has none (start it with --value or --run)"
                   if method in method_names() else f"choose one of {list(self.defaults)}")
            raise RequestError(400, f"unknown method {method!r}: {why}", "method")
        knobs = check_knobs(method, body.get("knobs") or {}, self.limits)
        tokens = body.get("max_tokens", body.get("max_completion_tokens"))
        if tokens is not None and "max_tokens" not in knobs:
            if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
                raise RequestError(400, f"max_tokens must be an integer >= 1, got {tokens!r}", "max_tokens")
            knobs["max_tokens"] = tokens
        return method, capped({**self.defaults[method], **knobs}, self.limits)

    def questions(self, kind: str, body: dict[str, Any]) -> list[str]:
        """The questions of a request: its prompts (completions), or its last user message (chat)."""
        if kind == "completion":
            prompt = body.get("prompt")
            prompts = [prompt] if isinstance(prompt, str) else prompt
            if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
                raise RequestError(400, "prompt must be a question's text or a non-empty list of them "
                                        "(token ids are not taken)", "prompt")
            if len(prompts) > self.limits.queue_size:  # would never fit the queue: not a retry later
                raise RequestError(400, f"at most {self.limits.queue_size} prompts per request (--queue-size), "
                                        f"got {len(prompts)}", "prompt")
            return prompts
        messages = body.get("messages")
        users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"] \
            if isinstance(messages, list) else []
        if not users:
            raise RequestError(400, "messages must be a list holding a user message (its content is the question)",
                               "messages")
        content = users[-1].get("content")
        if isinstance(content, list):  # content parts: the text ones, joined
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
        if not isinstance(content, str):
            raise RequestError(400, "the last user message's content must be text", "messages")
        return [content]

    def root(self, question: str) -> tuple[Any, str, int]:
        """(root state, its order in a group, prompt tokens) of one question: 413 when it is longer
        than the server takes, 400 when the task cannot read it."""
        tokens = self.count_tokens(question)
        if tokens > self.limits.max_prompt_tokens:
            raise RequestError(413, f"the prompt has {tokens} tokens; this server takes at most "
                                    f"{self.limits.max_prompt_tokens} (--max-prompt-tokens)", "prompt")
        try:
            root = self.env.initial_state(question)
        except (ValueError, KeyError, TypeError) as error:
            raise RequestError(400, f"task {self.task.name} cannot read the prompt as a question: {error}",
                               "prompt") from None
        return root, question, tokens

    def int_field(self, body: dict[str, Any], name: str, default: int, most: int) -> int:
        value = body.get(name, default)
        value = default if value is None else value
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
            raise RequestError(400, f"{name} must be an integer in 1..{most}, got {value!r}", name)
        return value

    async def respond(self, kind: str, body: Any) -> dict[str, Any]:
        """The response to one completion or chat request (RequestError for a bad one)."""
        if not isinstance(body, dict):
            raise RequestError(400, "the body must be a JSON object")
        if body.get("stream"):
            raise RequestError(400, "streaming is not supported; send stream: false", "stream")
        method, knobs = self.choose(body)
        n = self.int_field(body, "n", 1, 64)
        tree = body.get("tree", False)
        if not isinstance(tree, bool):
            raise RequestError(400, f"tree must be true or false, got {tree!r}", "tree")
        roots = [self.root(q) for q in self.questions(kind, body)]
        loop = asyncio.get_running_loop()
        items = [Pending(method, knobs, root, order, n, tree, loop, loop.create_future()) for root, order, _ in roots]
        self.batcher.submit(items)
        results = await asyncio.gather(*(item.future for item in items))
        for result in results:
            if isinstance(result, RequestError):
                raise result
        return self.shape(kind, body, method, knobs, results, sum(tokens for _, _, tokens in roots))

    def shape(self, kind: str, body: dict[str, Any], method: str, knobs: dict[str, Any],
              results: list[dict[str, Any]], prompt_tokens: int) -> dict[str, Any]:
        """OpenAI's response object; `usage.completion_tokens` is what the searches generated."""
        choices = []
        for result in results:
            for choice in result["choices"]:
                index = len(choices)
                if kind == "completion":
                    choices.append({"index": index, "text": choice["text"], "logprobs": None,
                                    "finish_reason": choice["finish_reason"]})
                else:
                    choices.append({"index": index, "message": {"role": "assistant", "content": choice["text"]},
                                    "logprobs": None, "finish_reason": choice["finish_reason"]})
        generated = sum(r["tokens"] for r in results)
        searches = [{**{k: v for k, v in r.items() if k != "choices"},
                     "candidates": [{"answer": c["answer"], "score": c["score"]} for c in r["choices"]]}
                    for r in results]
        return {"id": f"{'cmpl' if kind == 'completion' else 'chatcmpl'}-{uuid.uuid4().hex}",
                "object": "text_completion" if kind == "completion" else "chat.completion",
                "created": int(time.time()), "model": body.get("model") or self.name, "choices": choices,
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": generated,
                          "total_tokens": prompt_tokens + generated},
                "tsllm": {"method": method, "knobs": knobs, "tokens": generated,
                          "compute": sum(r["compute"] for r in results), "searches": searches}}

    def models(self) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": name, "object": "model", "created": self.created,
                                            "owned_by": "tsllm"} for name in [self.name, *self.defaults]]}


# ------------------------------------------------------------------------------- HTTP

MAX_BODY = 8 << 20  # bytes; a bigger body is refused before it is read


def build_app(service: Service) -> Any:
    """The FastAPI app over `service`; its lifespan starts and stops the worker."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service.batcher.start()
        yield
        service.batcher.stop()

    app = FastAPI(title="tsllm", lifespan=lifespan)

    async def answer(request: Any, kind: str) -> JSONResponse:
        try:
            if int(request.headers.get("content-length") or 0) > MAX_BODY:
                raise RequestError(413, f"the body is over {MAX_BODY} bytes")
            try:
                body = await request.json()
            except ValueError:
                raise RequestError(400, "the body is not JSON") from None
            return JSONResponse(await service.respond(kind, body))
        except RequestError as error:
            headers = {"Retry-After": "1"} if error.status == 503 else None
            return JSONResponse(error.body(), status_code=error.status, headers=headers)

    # plain Starlette routes: the handlers read the raw JSON themselves (extra fields such as
    # `knobs` pass through; the checks above give OpenAI's error bodies, not FastAPI's 422)
    async def completions(request: Any) -> JSONResponse:
        return await answer(request, "completion")

    async def chat_completions(request: Any) -> JSONResponse:
        return await answer(request, "chat")

    async def models(request: Any) -> JSONResponse:
        return JSONResponse(service.models())

    app.add_route("/v1/completions", completions, methods=["POST"])
    app.add_route("/v1/chat/completions", chat_completions, methods=["POST"])
    app.add_route("/v1/models", models, methods=["GET"])
    return app


def _server(service: Service, host: str, port: int) -> tuple[Any, Any]:
    import socket

    import uvicorn

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))  # port 0: a free one, known before the server starts
    return uvicorn.Server(uvicorn.Config(build_app(service), log_level="warning")), sock


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@contextmanager
def running(service: Service, host: str = "127.0.0.1", port: int = 0, start_seconds: float = 30.0) -> Iterator[str]:
    """Serve `service` from a background thread (tests, `tsllm bench serve`); yields the base URL
    (`http://HOST:PORT/v1`, what the openai client takes), stops the server on exit."""
    server, sock = _server(service, host, port)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="tsllm-serve-http", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_seconds
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    if not server.started:
        raise RuntimeError(f"the server did not start within {start_seconds} s")
    try:
        yield f"http://{url_host(host)}:{sock.getsockname()[1]}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


# ------------------------------------------------------------------------------- the command

def add_arguments(sub: Any) -> argparse.ArgumentParser:
    """The `serve` subcommand: the model flags of `tsllm eval` (a run fills those not given, as
    `eval --run` does), then the server's own."""
    from tsllm.eval_run import add_model_arguments

    p = sub.add_parser("serve", help="tree-search decoding behind an OpenAI-compatible HTTP API (docs/SERVE.md)")
    add_model_arguments(p, "serve")
    p.add_argument("--method", help="the default method: greedy, cot_sc or a search algorithm (default: the run's "
                                    "search, else mcts_alpha)")
    p.add_argument("--set", action="append", default=[], metavar="METHOD.KNOB=VALUE",
                   help="a method's default knob, e.g. mcts_alpha.num_simulations=8 (repeatable; over the run's)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--served-model-name", default="tsllm", help="the model name meaning the default method")
    limits = Limits()
    p.add_argument("--queue-size", type=int, default=limits.queue_size, help="prompts waiting at most; more: 503")
    p.add_argument("--max-batch", type=int, default=limits.max_batch, help="prompts searched per call at most")
    p.add_argument("--batch-wait", type=float, default=limits.batch_wait,
                   help="seconds the worker waits for more prompts once one arrived")
    p.add_argument("--max-prompt-tokens", type=int, help="longer prompts get 413 (default: half the policy's "
                                                         "context, else 1024)")
    p.add_argument("--max-tokens", type=int, help="generated tokens per prompt's search at most (default: unlimited)")
    p.add_argument("--max-seconds", type=float, default=limits.max_seconds, help="seconds per prompt's search at most")
    # the eval flags a server has no use for, so the eval helpers find them
    p.set_defaults(data=None, split=None, ranks=None, prompt_field=None, test_questions=None, lenient=False,
                   methods=None, out=None, trees=None)
    return p


def build_service(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Service:
    """Resolve the flags as `tsllm eval` does (its run resolution, task checks and knob parsing),
    load the models and return the Service; a bad flag stops in one line before any model loads."""
    from tsllm.cli import check_eval_inputs, eval_methods, eval_task, stop
    from tsllm.config import ConfigError
    from tsllm.distributed import device
    from tsllm.eval_run import knob_flags, read_run_config, resolve_eval_args
    from tsllm.evaluate import MethodModels

    for flag in ("queue_size", "max_batch", "max_prompt_tokens", "max_tokens"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1")
    args.methods = args.method  # resolved as `eval --run --methods METHOD`: a run's search brings its knobs
    try:
        run_search = read_run_config(args.run)["search"] if args.run else {}
        resolve_eval_args(args)
    except ConfigError as error:
        stop(str(error).replace("--methods greedy,cot_sc", "--method greedy"))
    from tsllm.tasks import get_task

    default = args.method or run_search.get("algorithm") or "mcts_alpha"
    guided_too = bool(args.value) or not get_task(args.task).needs_model
    served = [m for m in method_names() if guided_too or m in UNGUIDED]
    if default not in served:
        parser.error(f"--method: {default} is value-guided and needs --value (or choose greedy or cot_sc)"
                     if default in method_names() else f"--method: unknown method {default!r}; choose one of "
                     f"{method_names()}")
    algorithm = run_search.get("algorithm")
    if algorithm in served and algorithm not in (args.methods or "").split(","):  # its knobs were not laid yet
        args.set = knob_flags(algorithm, run_search) + list(args.set)
    args.methods = ",".join(served)
    task_cls, settings = eval_task(args, parser)
    defaults = eval_methods(args, parser, task_cls)
    check_eval_inputs(args, task_cls)
    task = task_cls(settings, device())
    models = MethodModels(task, args.policy, args.value, args.backend, args.temperature, args.allow_illegal_steps,
                          device())
    count, context = prompt_measure(task_cls, args.policy)
    limits = Limits(queue_size=args.queue_size, max_batch=args.max_batch, batch_wait=args.batch_wait,
                    max_prompt_tokens=args.max_prompt_tokens or (context // 2 if context else 1024),
                    max_tokens=args.max_tokens, max_seconds=args.max_seconds)
    return Service(task, models.make_pv, defaults, default, args.served_model_name, limits, count)


def prompt_measure(task_cls: Any, policy: str | None) -> tuple[Any, int | None]:
    """(prompt -> its tokens under the policy's tokenizer, the policy's context length or None);
    characters for a task that reads no model."""
    if not task_cls.needs_model or not policy:
        return len, None
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(policy)
    context = getattr(AutoConfig.from_pretrained(policy), "max_position_embeddings", None)
    return (lambda text: len(tokenizer(text)["input_ids"])), context


def run_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    service = build_service(args, parser)
    service.make_pv(0.0, False, False)  # load the policy now, not on the first request
    server, sock = _server(service, args.host, args.port)
    print(f"tsllm serve: task {service.task.name}, default {service.default_method} "
          f"{service.defaults[service.default_method]}, on http://{url_host(args.host)}:{sock.getsockname()[1]}/v1",
          flush=True)
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        print(f"tsllm serve: warning: listening on {args.host} with no authentication; anyone who can reach it "
              "can spend its compute", file=sys.stderr, flush=True)
    server.run(sockets=[sock])
    return 0
