"""`tsllm serve` on a real (tiny, random) policy and value model: the real server on a loopback
port called with the real `openai` client. Completions and chat, every method, the errors a bad
request gets (400 naming the knob, 404, 413, 503 from a full queue), and 32 concurrent requests
searched in one batched call with the results `tsllm eval`'s run_method gives on the same questions."""

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest

from tests.test_evaluate import models  # noqa: F401  (the tiny policy and value checkpoints)
from tsllm import serve
from tsllm.config import to_dict
from tsllm.evaluate import run_method
from tsllm.loop import LoopConfig
from tsllm.search import ALGORITHMS

RUN_KNOBS = {"num_simulations": 2, "width": 2}
# small knobs per method: every search finishes in well under a second on the tiny model
SMALL = {"cot_sc": {"k": 2}, "best_of_n": {"n": 2}, "bfs": {"beam_width": 2, "width": 2, "max_depth": 2},
         "dfs": {"width": 2, "max_depth": 2}, "best_first": {"width": 2, "max_expansions": 2},
         "mcts": {"num_simulations": 2, "width": 2}, "mcts_alpha": RUN_KNOBS,
         "mcts_rollout": {"num_paths": 2, "width": 2, "max_simulations": 4},
         "gumbel_mcts": {"num_simulations": 2, "width": 2}, "cot_greedy": {"max_depth": 2},
         **{name: {"num_rollouts": 2, "max_depth": 2} for name in ALGORITHMS if name.startswith("parallel_")}}


@pytest.fixture(scope="module")
def run_dir(models, tmp_path_factory) -> Path:  # noqa: F811
    """A loop run's folder as `tsllm run` leaves it after round 0's value stage (config.json and the
    stages' done.json), pointing at the tiny checkpoints: what `--run` reads."""
    policy, value = models
    run = tmp_path_factory.mktemp("serve") / "run"
    config = to_dict(LoopConfig(output_dir=str(run), rounds=1, test_questions=40, max_step_tokens=8))
    config["search"]["knobs"] = RUN_KNOBS
    for stage, done in (("", None), ("warmstart", {"policy": str(policy)}), ("round_0/value", {"value": str(value)})):
        (run / stage).mkdir(parents=True, exist_ok=True)
        if done:
            (run / stage / "done.json").write_text(json.dumps(done))
    (run / "config.json").write_text(json.dumps(config))
    return run


def build(*flags: str) -> serve.Service:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    serve_parser = serve.add_arguments(sub)
    return serve.build_service(parser.parse_args(["serve", *flags]), serve_parser)


@pytest.fixture(scope="module")
def server(run_dir):
    # the random policy's steps are never legal Game24 moves: keep them, so the trees grow
    service = build("--run", str(run_dir), "--max-prompt-tokens", "64", "--allow-illegal-steps")
    with serve.running(service) as url:
        yield service, openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=60)


def questions(service, count: int) -> list[str]:
    return [p["question"] for p in service.task.test_problems()[:count]]


def test_completion_and_chat_answer_with_the_runs_search(server):
    service, client = server
    assert service.default_method == "mcts_alpha" and service.defaults["mcts_alpha"] == RUN_KNOBS
    assert [m.id for m in client.models.list()] == ["tsllm", *serve.method_names()]
    question = questions(service, 1)[0]
    done = client.completions.create(model="tsllm", prompt=question, extra_body={"tree": True})
    found = done.model_extra["tsllm"]
    assert found["method"] == "mcts_alpha" and found["knobs"] == {**RUN_KNOBS, "max_seconds": 120.0}
    search = found["searches"][0]
    assert search["tokens"] > 0 and search["compute"] >= search["tokens"] and isinstance(search["value"], float)
    tree = search["tree"]  # what `tsllm eval --trees` writes for a question
    assert {"method", "question", "answer", "correct", "tokens", "nodes", "chosen_path"} <= set(tree)
    assert tree["question"] == question and tree["correct"] in (True, False) and tree["tokens"] == search["tokens"]
    assert tree["nodes"][0]["parent"] is None and tree["chosen_path"][0] == 0
    assert done.choices[0].finish_reason in ("stop", "length") and done.usage.completion_tokens == search["tokens"]
    chat = client.chat.completions.create(model="tsllm", messages=[{"role": "user", "content": question}], n=3)
    assert chat.object == "chat.completion" and 1 <= len(chat.choices) <= 3
    assert chat.choices[0].message.role == "assistant" and isinstance(chat.choices[0].message.content, str)
    assert len(chat.model_extra["tsllm"]["searches"][0]["candidates"]) == len(chat.choices)


def test_every_method_is_served_by_model_name_or_extra_body(server):
    service, client = server
    question = questions(service, 1)[0]
    for method in serve.method_names():
        knobs = SMALL.get(method, {})
        if method in ("greedy", "cot_sc"):  # by model name
            done = client.completions.create(model=method, prompt=question, extra_body={"knobs": knobs})
        else:  # by extra_body
            done = client.completions.create(model="tsllm", prompt=question,
                                             extra_body={"method": method, "knobs": knobs})
        assert done.model_extra["tsllm"]["method"] == method, method
        assert done.model_extra["tsllm"]["knobs"] == {**service.defaults[method], **knobs, "max_seconds": 120.0}
        assert isinstance(done.choices[0].text, str)


@pytest.mark.parametrize("extra, status, names", [
    ({"knobs": {"num_simulationz": 3}}, 400, "num_simulationz"),
    ({"knobs": {"width": "wide"}}, 400, "width"),
    ({"knobs": {"width": 10**6}}, 400, "width"),
    ({"method": "mcts_gamma"}, 400, "mcts_gamma"),
    ({"knobs": {"aggregation": "loudest"}}, 400, "loudest"),
    ({"n": 0}, 400, "n must be"),
    ({"method": ["mcts_alpha"]}, 400, "method must be a string"),
])
def test_a_bad_request_gets_400_naming_what_is_wrong(server, extra, status, names):
    service, client = server
    with pytest.raises(openai.APIStatusError) as error:
        client.completions.create(model="tsllm", prompt=questions(service, 1)[0], extra_body=extra)
    assert error.value.status_code == status and names in error.value.body["message"]


def test_unknown_model_unreadable_and_over_long_prompts(server):
    service, client = server
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client.completions.create(model="gpt-4", prompt=questions(service, 1)[0])
    with pytest.raises(openai.BadRequestError, match="cannot read the prompt"):
        client.completions.create(model="tsllm", prompt="what is the capital of France?")
    with pytest.raises(openai.APIStatusError, match="at most 64") as error:
        client.completions.create(model="tsllm", prompt="1 2 3 4 " * 20)
    assert error.value.status_code == 413


def test_a_full_queue_answers_503_and_the_waiting_requests_still_finish(run_dir):
    service = build("--run", str(run_dir), "--queue-size", "2")
    question = "1 2 3 4"
    with serve.running(service) as url:
        client = openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=60)
        with ThreadPoolExecutor(3) as pool:
            with service.batcher.hold():
                def send():
                    return pool.submit(client.completions.create, model="greedy", prompt=question)

                waiting = [send()]  # the first goes to the worker's hand (held there), two more to the queue
                wait_for(lambda: service.batcher.taken == 1 and service.batcher.queue.empty())
                waiting += [send(), send()]
                wait_for(lambda: service.batcher.queue.full())
                with pytest.raises(openai.InternalServerError, match="queue is full") as error:
                    client.completions.create(model="greedy", prompt=question)
                assert error.value.status_code == 503 and error.value.response.headers["retry-after"] == "1"
            assert all(f.result(timeout=60).choices for f in waiting)


def wait_for(condition, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the requests to arrive"
        time.sleep(0.01)


def test_32_concurrent_requests_are_one_batched_search_with_evals_results(server):
    service, client = server
    asked = questions(service, 32)
    loaded = service.make_pv.__self__  # the server's MethodModels
    loaded.make_pv(0.0, False, False)
    generator = loaded.generator
    calls, real = [], generator.generate
    generator.generate = lambda *args, **kwargs: calls.append(1) or real(*args, **kwargs)
    try:
        with ThreadPoolExecutor(32) as pool:
            with service.batcher.hold():  # line all 32 up, so one batch holds them whatever the timing
                sent = [pool.submit(client.completions.create, model="tsllm", prompt=q) for q in asked]
                wait_for(lambda: service.batcher.pending() == 32)
            answers = [f.result(timeout=120) for f in sent]
        served_calls = len(calls)
        calls.clear()
        knobs = answers[0].model_extra["tsllm"]["knobs"]
        order = sorted(asked)  # a batch is searched in prompt order
        expected = run_method(service.env, service.make_pv, order, "mcts_alpha", knobs, progress=False)
    finally:
        del generator.generate
    assert served_calls == len(calls) < 32  # one batched search call, as eval's, not 32 searches
    by_question = {q: out for q, out in zip(order, expected["outputs"])}
    for question, done in zip(asked, answers):
        search, out = done.model_extra["tsllm"]["searches"][0], by_question[question]
        assert search["batch"] == 32 and search["nodes"] > 1 and search["tokens"] > 0  # real trees were grown
        assert (done.choices[0].text, search["answer"], search["tokens"]) == (
            serve.path_text(service.env, out.root, out.best_path[-1]), out.answer, out.budget.tokens)


def test_bad_flags_stop_in_one_line_before_any_model_loads(tmp_path, capsys):
    from tsllm.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["serve", "--run", str(tmp_path)])
    assert stop.value.code == 2 and "has no config.json" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["serve", "--task", "game24", "--policy", str(tmp_path)])  # mcts_alpha by default: needs --value
    assert "needs --value" in capsys.readouterr().err


def test_requests_are_never_run_as_code(server):
    """Knob values are data: a string where a number goes is refused, a string knob is only
    compared with the algorithm's own names."""
    service, client = server
    sneaky = "__import__('os').system('touch /nonexistent')"
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="tsllm", prompt=questions(service, 1)[0],
                                  extra_body={"knobs": {"num_simulations": sneaky}})
    with pytest.raises(openai.BadRequestError, match="refused its knobs"):
        client.completions.create(model="tsllm", prompt=questions(service, 1)[0],
                                  extra_body={"knobs": {"tree_mode": sneaky}})


def test_bench_serve_prints_throughput_and_latency_beside_evals(tmp_path, capsys):
    from tsllm.cli import main

    out = tmp_path / "serve.json"
    assert main(["bench", "serve", "--questions", "2", "--concurrency", "1,2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [r["clients"] for r in result["rows"]] == [1, 2] and result["eval_questions_per_s"] > 0
    for row in result["rows"]:
        assert row["requests"] == 2 and 0 < row["p50_s"] <= row["p95_s"] and row["vs_eval"] > 0
    assert "vs eval" in capsys.readouterr().out


def test_a_run_served_with_another_default_keeps_its_search_knobs(run_dir):
    """`--method greedy --run RUN`: greedy by default, and the run's search still with the run's knobs,
    `--set` laid over them."""
    service = build("--run", str(run_dir), "--method", "greedy", "--set", "mcts_alpha.width=3")
    assert service.default_method == "greedy"
    assert service.defaults["mcts_alpha"] == {**RUN_KNOBS, "width": 3}
