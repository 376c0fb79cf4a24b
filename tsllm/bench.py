"""Engine benchmark: how well a generation backend serves tree search (docs/ARCHITECTURE.md section 7);
serve benchmark: how `tsllm serve` batches concurrent clients (`run_serve_bench`, docs/SERVE.md).

    tsllm bench engine --backend hf --out engine_hf.json
    tsllm bench engine --backend vllm --tokenizer char,bpe     # both tiny tokenizers, side by side
    tsllm bench serve [--questions 32] [--concurrency 1,8,32] [--out serve.json]

It runs MCTS-α on Game24 with a policy and a value model, and a flat batched sampling run of
about as many generated tokens on the same backend, model and settings, interleaved and
repeated in one process, and reports:
- tse: tree tokens/s / flat tokens/s, the median over repeats of each repeat's ratio (a tree run
  and the flat run right after it share the machine's state, so a slow stretch of the machine
  moves both); 1.0 means search costs no more per token than plain sampling.
- prf: prompt tokens the backend computed (not served from its prefix cache) / distinct token
  positions in the search trees; 1.0 means every tree position was computed once.
- vcn: value-model calls per created node; 1.0 means each node was scored once.
Without --model a tiny random Llama is built (random weights make random steps, which is fine for
throughput, once they cannot write lone bytes: `writes_whole_characters`) with the character
tokenizer, or with `--tokenizer bpe` a byte-level BPE one trained on Game24's text (the `bpe`
kind of tsllm.models.tiny: steps end inside merged tokens, and a child's prompt must still extend
its parent's ids for the prefix cache to serve it); the value
model is a tiny random token-classification model with the same tokenizer. `--tokenizer char,bpe`
runs both, one after the other in one process, and prints them side by side.

Batching: 8 simulations per move run in one round with virtual loss (`parallel_simulations`), so
an expansion call carries up to 16 roots x 8 leaves x 4 samples = 512 sequences, as a batched
evaluation would; the flat run samples as many tokens from the same 16 prompts in one call.
`overlap_value` (off by default) scores children while the engine still decodes; on the idle 2-core
CPU machine it did not pay (vLLM tse 0.65 with it, 0.67 without; see docs/RESULTS.md, engine benchmark).
"""

from __future__ import annotations

import json
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from tsllm.envs.base import TextState
from tsllm.envs.game24 import Game24Env, make_problem, split
from tsllm.search import mcts_alpha
from tsllm.types import SamplingParams

TOKENIZERS = ("char", "bpe")  # the tiny model's tokenizer kinds (tsllm.models.tiny)


def _tiny_models(workdir: Path, tokenizer: str = "char") -> tuple[Path, Any]:
    """A tiny random Llama policy and value model of the `tokenizer` kind; the same shape and
    seed for both kinds, so only the tokenizer differs."""
    from tsllm.models.tiny import TinyModelConfig, build_tiny, save_model
    from tsllm.models.value import ValueFunction, build_value_model

    config = TinyModelConfig(max_position_embeddings=512, tokenizer=tokenizer)
    model, tok = build_tiny(config, game24_texts() if tokenizer == "bpe" else ())
    writes_whole_characters(model, tok)
    path = workdir / "policy"
    save_model(model, tok, path)
    value_model, value_tokenizer = build_value_model(tiny=config, tokenizer=tok)
    return path, ValueFunction(value_model, value_tokenizer)


def writes_whole_characters(model, tokenizer) -> list[int]:
    """Make a random Llama never sample the tokens that are not whole characters alone, and return
    their ids. A byte-level vocabulary holds the lone bytes 0x80-0xFF; a trained model never writes
    them in ASCII text, but random weights sample them often. Each decodes to U+FFFD, which
    re-encodes as three bytes, so a random step's text (what prompts and the value model read)
    would be longer in tokens than what was generated, a cost no trained model pays (measured in
    docs/RESULTS.md, engine benchmark). Dimension 0 of the
    residual stream becomes a positive constant (its embedding column; no layer writes to it), and
    those tokens' output rows read it with a large negative weight; the other tokens' choices stay
    those of random weights. A character vocabulary has no such token and is left as it is."""
    import torch

    bad = [i for i in range(len(tokenizer)) if "\ufffd" in tokenizer.decode([i])]
    if not bad:
        return bad
    inner = model.model
    with torch.no_grad():
        inner.embed_tokens.weight[:, 0] = 0.05
        for layer in inner.layers:
            layer.self_attn.o_proj.weight[0] = 0
            layer.mlp.down_proj.weight[0] = 0
        model.lm_head.weight[bad, 0] = -1000.0
    return bad


def game24_texts(seed: int = 0) -> list[str]:
    """Game24's prompts with their solver traces (the training split): what a BPE tokenizer for
    the benchmark learns its merges from."""
    env = Game24Env()
    train, _ = split(seed=seed)
    return [env.prompt(env.initial_state(p)) + p["solution"] + "\n" for p in train if p["solution"]]



def run_engine_bench(backend: str = "hf", model: str | None = None, value_model: str | None = None,
                     roots: int = 16, simulations: int = 8, width: int = 4, repeats: int = 5,
                     parallel_simulations: int = 8, overlap_value: bool = False,
                     max_step_tokens: int = 32, seed: int = 0, tokenizer: str = "char",
                     **generator_kwargs: Any) -> dict:
    from tsllm.generation import make_generator
    from tsllm.models.value import ValueFunction
    from tsllm.policy_value import LLMPolicyValue

    with tempfile.TemporaryDirectory() as tmp:
        if model is None:
            model_path, value_fn = _tiny_models(Path(tmp), tokenizer)
        else:
            model_path = Path(model)
            if value_model is None:
                raise ValueError("--model needs --value-model (a value model folder) too")
            value_fn = ValueFunction(value_model)
        generator = make_generator(backend, str(model_path), **generator_kwargs)
        encode = getattr(generator, "tokenizer", None) or value_fn.tokenizer
        env = Game24Env()
        _, test = split(seed=seed, test_size=max(roots, 1))
        states = [env.initial_state(make_problem(p["numbers"], with_solution=False)) for p in test[:roots]]
        prompts = [env.prompt(s) for s in states]
        prompt_len_cache: dict = {}

        def prompt_len(state) -> int:
            if state not in prompt_len_cache:
                prompt_len_cache[state] = len(encode(env.prompt(state))["input_ids"])
            return prompt_len_cache[state]

        # warm-up (untimed): first calls pay for compilation, allocation and cache set-up
        # Every proposed step is kept (no legal-move mask): a random model's steps are almost never
        # legal Game24 moves, and the mask is a search rule, not work for the engine to serve.
        bridge = {"max_step_tokens": max_step_tokens, "overlap_value": overlap_value, "legal_steps_only": False}
        warm = LLMPolicyValue(env, generator, value_fn, seed=seed, **bridge)
        mcts_alpha(env, warm, states[:2], num_simulations=2, width=width)
        generator.generate(prompts[:2], SamplingParams(n=2, max_new_tokens=max_step_tokens, seed=seed))

        tree_rates, flat_rates, runs = [], [], []
        for r in range(repeats):
            pv = LLMPolicyValue(env, generator, value_fn, seed=seed + r, **bridge)
            start = time.perf_counter()
            outs = mcts_alpha(env, pv, states, num_simulations=simulations, width=width,
                              parallel_simulations=parallel_simulations)
            tree_s = time.perf_counter() - start
            tokens = sum(o.budget.tokens for o in outs)
            computed = sum(o.budget.prompt_tokens - o.budget.cached_tokens for o in outs)
            nodes = sum(o.stats["nodes"] for o in outs)
            distinct = distinct_positions(states, pv.value.cache, prompt_len)
            tree_rates.append(tokens / tree_s)

            # flat: the same prompts, about as many generated tokens, no stop string
            per_prompt = max(1, round(tokens / (len(prompts) * max_step_tokens * 2)))
            params = SamplingParams(n=per_prompt, max_new_tokens=max_step_tokens * 2, seed=seed + r)
            start = time.perf_counter()
            flat = generator.generate(prompts, params)
            flat_s = time.perf_counter() - start
            flat_tokens = sum(c.num_tokens for row in flat for c in row)
            flat_rates.append(flat_tokens / flat_s)
            runs.append({"tree_tokens": tokens, "tree_seconds": tree_s, "flat_tokens": flat_tokens,
                         "flat_seconds": flat_s, "prompt_tokens_computed": computed,
                         "distinct_positions": distinct, "nodes": nodes,
                         "value_calls": pv.value.value_calls, "dead_ends": pv.dead_ends,
                         "generate_seconds": pv.generate_seconds, "value_seconds": pv.value.seconds})
        if hasattr(generator, "close"):  # a vLLM engine's memory, before the next run starts one
            generator.close()
        last = runs[-1]
        return {
            "backend": backend,
            "model": str(model) if model else "tiny-random",
            "tokenizer": None if model else tokenizer,
            "root_prompt_tokens": sum(prompt_len(s) for s in states),
            "repeats": repeats,
            "tse": statistics.median(tree / flat for tree, flat in zip(tree_rates, flat_rates)),
            "prf": last["prompt_tokens_computed"] / max(last["distinct_positions"], 1),
            "vcn": last["value_calls"] / max(last["nodes"], 1),
            "generated_tokens": last["tree_tokens"],
            "wall_seconds": sum(r["tree_seconds"] + r["flat_seconds"] for r in runs),
            "tree_tokens_per_s": statistics.median(tree_rates),
            "flat_tokens_per_s": statistics.median(flat_rates),
            "settings": {"roots": roots, "simulations": simulations, "width": width,
                         "parallel_simulations": parallel_simulations, "overlap_value": overlap_value,
                         "max_step_tokens": max_step_tokens, "algorithm": "mcts_alpha"},
            "runs": runs,
        }



def distinct_positions(roots, valued_states, prompt_len) -> int:
    """Token positions in the search trees: each root's prompt, plus for every other state the
    tokens its step added (its prompt length minus its parent's). Every created node is valued
    once by the bridge, so the value cache holds exactly the trees' states."""
    total = sum(prompt_len(r) for r in set(roots))
    for state in set(valued_states) - set(roots):
        parent = TextState(state.question, state.steps[:-1], state.gold)
        total += prompt_len(state) - prompt_len(parent)
    return total


def print_engine_table(result: dict) -> None:
    tokenizer = f" ({result['tokenizer']} tokenizer)" if result.get("tokenizer") else ""
    print(f"backend {result['backend']}  model {result['model']}{tokenizer}  repeats {result['repeats']}")
    for key in ("tse", "prf", "vcn"):
        print(f"  {key:<4} {result[key]:8.3f}")
    print(f"  tree {result['tree_tokens_per_s']:.0f} tok/s, flat {result['flat_tokens_per_s']:.0f} tok/s, "
          f"{result['generated_tokens']} tokens per tree run, {result['wall_seconds']:.1f} s in all")
    run = result["runs"][-1]
    rest = run["tree_seconds"] - run["generate_seconds"] - run["value_seconds"]
    overlap = " (most of it while the engine decodes)" if result["settings"].get("overlap_value") else ""
    print(f"  tree time: waiting for generation {run['generate_seconds']:.1f} s, value {run['value_seconds']:.1f} s"
          f"{overlap}, search code {rest:.1f} s")


def print_engine_comparison(results: list[dict]) -> None:
    """Runs of one backend on tiny models of different tokenizers, one column each."""
    names = [r["tokenizer"] for r in results]
    print(f"backend {results[0]['backend']}: tiny models by tokenizer")
    print(f"  {'':<20}" + "".join(f"{name:>10}" for name in names))
    rows = [("tse", "tse", "{:.3f}"), ("prf", "prf", "{:.3f}"), ("vcn", "vcn", "{:.3f}"),
            ("tree tok/s", "tree_tokens_per_s", "{:.0f}"), ("flat tok/s", "flat_tokens_per_s", "{:.0f}"),
            ("root prompt tokens", "root_prompt_tokens", "{}")]
    for label, key, form in rows:
        print(f"  {label:<20}" + "".join(f"{form.format(r[key]):>10}" for r in results))


def engine_json(results: list[dict]) -> dict:
    """What `--out` holds: one run's result, or with several tokenizers each run by its name."""
    if len(results) == 1:
        return results[0]
    return {"backend": results[0]["backend"], "tokenizers": {r["tokenizer"]: r for r in results}}


def write_json(result: dict, path: str | Path) -> None:
    Path(path).write_text(json.dumps(result, indent=1) + "\n")


# ------------------------------------------------------------------------------- tsllm bench serve

SERVE_KNOBS = {"num_simulations": 4, "width": 2}  # MCTS-α small enough for 2 CPU cores


def run_serve_bench(questions: int = 32, concurrency: tuple[int, ...] = (1, 8, 32), method: str = "mcts_alpha",
                    knobs: dict[str, Any] | None = None, max_step_tokens: int = 16, seed: int = 0) -> dict:
    """`tsllm serve` on the tiny random model (Game24 questions of the held-out split, every proposed
    step kept, as the engine benchmark does): requests/s and p50/p95 latency with `concurrency`
    clients, each sending its share of the questions one request at a time through the openai
    client; beside `tsllm eval`'s throughput (run_method, questions/s) on the same questions with
    the same models, method and knobs. The server batches concurrent requests into one search call,
    so its throughput should rise towards eval's as clients are added."""
    import argparse
    from concurrent.futures import ThreadPoolExecutor

    import openai

    from tsllm import serve
    from tsllm.evaluate import run_method
    from tsllm.models.tiny import TinyModelConfig, build_char_tokenizer, build_tiny_llama, save_model
    from tsllm.models.value import build_value_model, save_value_model

    knobs = dict(SERVE_KNOBS if knobs is None else knobs)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer, config = build_char_tokenizer(), TinyModelConfig(max_position_embeddings=512, seed=seed)
        save_model(build_tiny_llama(config, tokenizer), tokenizer, Path(tmp) / "policy")
        save_value_model(*build_value_model(tiny=config, tokenizer=tokenizer), Path(tmp) / "value")
        parser = argparse.ArgumentParser()
        flags = ["serve", "--policy", f"{tmp}/policy", "--value", f"{tmp}/value", "--task", "game24",
                 "--method", method, "--max-step-tokens", str(max_step_tokens),
                 "--allow-illegal-steps", "--seed", str(seed), "--queue-size", str(max(64, questions)),
                 *[f"--set={method}.{k}={json.dumps(v)}" for k, v in knobs.items()]]
        serve_parser = serve.add_arguments(parser.add_subparsers(dest="command"))
        args = parser.parse_args(flags)
        args.test_questions = max(questions, 100)  # the held-out split the questions come from
        service = serve.build_service(args, serve_parser)
        asked = [p["question"] for p in service.task.test_problems()[:questions]]
        run_method(service.env, service.make_pv, asked[:2], method, knobs, progress=False)  # warm-up, untimed
        start = time.perf_counter()
        run_method(service.env, service.make_pv, asked, method, knobs, progress=False)
        eval_rate = len(asked) / (time.perf_counter() - start)
        rows = []
        with serve.running(service) as url:
            client = openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=600)

            def ask(question: str) -> tuple[float, int]:
                sent = time.perf_counter()
                done = client.completions.create(model=method, prompt=question)
                return time.perf_counter() - sent, done.model_extra["tsllm"]["searches"][0]["batch"]

            ask(asked[0])  # warm-up, untimed
            for clients in concurrency:
                shares = [asked[i::clients] for i in range(clients)]
                start = time.perf_counter()
                with ThreadPoolExecutor(clients) as pool:
                    done = [r for share in pool.map(lambda qs: [ask(q) for q in qs], shares) for r in share]
                wall = time.perf_counter() - start
                latencies = sorted(d for d, _ in done)
                rows.append({"clients": clients, "requests": len(done), "requests_per_s": len(done) / wall,
                             "p50_s": percentile(latencies, 50), "p95_s": percentile(latencies, 95),
                             "mean_batch": sum(b for _, b in done) / len(done),
                             "vs_eval": len(done) / wall / eval_rate})
    return {"method": method, "knobs": knobs, "questions": len(asked), "model": "tiny-random", "backend": "hf",
            "eval_questions_per_s": eval_rate, "rows": rows}


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-th percentile by the nearest rank (a few dozen latencies need no interpolation)."""
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def print_serve_table(result: dict) -> None:
    print(f"tsllm serve: {result['method']} {result['knobs']} on {result['questions']} Game24 questions, "
          f"{result['model']} model ({result['backend']})")
    print(f"  tsllm eval (run_method, one batched call): {result['eval_questions_per_s']:.2f} questions/s")
    print(f"  {'clients':>7}{'req/s':>9}{'p50 s':>9}{'p95 s':>9}{'batch':>8}{'vs eval':>9}")
    for r in result["rows"]:
        print(f"  {r['clients']:>7}{r['requests_per_s']:>9.2f}{r['p50_s']:>9.2f}{r['p95_s']:>9.2f}"
              f"{r['mean_batch']:>8.1f}{r['vs_eval']:>9.2f}")
    print("  batch: prompts per search call the server made, on average per request; vs eval: requests/s ÷ "
          "eval's questions/s")
