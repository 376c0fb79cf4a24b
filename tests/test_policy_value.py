"""The policy/value bridge: pure rules checked with a scripted generator, then the real HF
generator on a tiny model driving unchanged search algorithms on Game24 and a token-level env."""

import math

import pytest
import torch

from tsllm import policy_value
from tsllm.envs.base import TextState
from tsllm.envs.game24 import Game24Env, make_problem
from tsllm.envs.rlhf import RLHFEnv
from tsllm.generation.hf import HFGenerator
from tsllm.models.tiny import TinyModelConfig, build_char_tokenizer, build_tiny_llama, save_model
from tsllm.policy_value import LLMPolicyValue, TokenPolicyValue
from tsllm.search import best_first, cot_sc, mcts_alpha, parallel_search
from tsllm.types import Budget, Completion


class ScriptedGenerator:
    """Returns the completions scripted per prompt (pure-logic tests of the bridge's rules)."""

    def __init__(self, script):
        self.script, self.calls = script, []

    def generate(self, prompts, sampling):
        self.calls.append((list(prompts), sampling))
        return [[Completion(text=t, token_ids=[], logprob=lp, num_tokens=n, prompt_tokens=len(p),
                            cached_tokens=3) for t, lp, n in self.script[p][: sampling.n]]
                for p in prompts]

    def update_weights(self, path):
        pass


ENV = Game24Env()
ROOT = ENV.initial_state(make_problem([4, 9, 10, 13]))


def test_expand_dedupes_drops_empty_and_normalises_priors_by_length():
    prompt = ENV.prompt(ROOT)
    gen = ScriptedGenerator({prompt: [
        ("13 - 9 = 4 (left: 4 4 10)", math.log(0.5) * 4, 4),  # per-token prob 0.5
        ("  ", -1.0, 2),  # empty after strip: dropped, tokens still paid
        ("13 - 9 = 4 (left: 4 4 10) ", -9.0, 5),  # duplicate after strip: dropped
        ("10 - 4 = 6 (left: 6 9 13)", math.log(0.25) * 2, 2),  # per-token prob 0.25
    ]})
    pv = LLMPolicyValue(ENV, gen, lambda texts: [0.0] * len(texts))
    [exp] = pv.expand([ROOT], 4)
    assert exp.actions == ["13 - 9 = 4 (left: 4 4 10)", "10 - 4 = 6 (left: 6 9 13)"]
    # TS-LLM priors: exp(logprob / tokens) renormalised over the unique children: .5 / .75, .25 / .75
    assert exp.priors == pytest.approx([2 / 3, 1 / 3])
    assert exp.token_counts == [4, 2] and exp.dropped_tokens == 7
    assert exp.prompt_tokens == 4 * len(prompt) and exp.cached_tokens == 4 * 3  # summed over samples
    params = gen.calls[0][1]
    assert params.n == 4 and params.stop == ["\n"]


def test_one_generator_call_per_distinct_width_and_dead_ends_counted():
    child = ENV.step(ROOT, "13 - 9 = 4 (left: 4 4 10)")
    gen = ScriptedGenerator({ENV.prompt(ROOT): [("9 + 4 = 13 (left: 10 13 13)", -1.0, 1),
                                                ("13 - 9 = 4 (left: 4 4 10)", -1.0, 1)],
                             ENV.prompt(child): [("", -1.0, 3), (" ", -1.0, 2)]})
    pv = LLMPolicyValue(ENV, gen, lambda texts: [0.0] * len(texts))
    same = pv.expand([ROOT, child], 2)
    assert len(gen.calls) == 1 and same[1].actions == [] and pv.dead_ends == 1
    pv.expand([ROOT, child, ROOT], [1, 2, 1])
    assert len(gen.calls) == 3  # widths 1 and 2: two calls
    assert [len(p) for p, _ in gen.calls[1:]] == [2, 1]


def test_steps_that_break_the_rules_are_dropped_like_illegal_moves():
    prompt = ENV.prompt(ROOT)  # puzzle 4 9 10 13
    gen = ScriptedGenerator({prompt: [
        ("13 - 9 = 5 (left: 4 5 10)", -1.0, 3),  # wrong result
        ("13 - 9 = 4 (left: 4 4 10)", -1.0, 4),  # legal
        ("7 * 2 = 14 (left: 4 9 10 13 14)", -1.0, 5),  # numbers that are not there
        ("Answer: (10-4)*(13-9) = 24", -2.0, 6),  # an answer using each number once: legal
        ("Answer: 4*6 = 24", -1.0, 7),  # makes 24 but not from the puzzle: illegal
    ]})
    pv = LLMPolicyValue(ENV, gen, lambda texts: [0.0] * len(texts))
    [exp] = pv.expand([ROOT], 5)
    assert exp.actions == ["13 - 9 = 4 (left: 4 4 10)", "Answer: (10-4)*(13-9) = 24"]
    assert exp.dropped_tokens == 3 + 5 + 7 and pv.illegal_steps == 3
    assert sum(exp.priors) == pytest.approx(1.0)
    everything = LLMPolicyValue(ENV, gen, lambda texts: [0.0] * len(texts), legal_steps_only=False)
    assert len(everything.expand([ROOT], 5)[0].actions) == 5 and everything.illegal_steps == 0


def test_values_are_cached_per_state_and_batched():
    seen = []

    def value_fn(texts):
        seen.append(list(texts))
        return [len(t) / 100 for t in texts]

    child = ENV.step(ROOT, "13 - 9 = 4 (left: 4 4 10)")
    pv = LLMPolicyValue(ENV, ScriptedGenerator({}), value_fn)
    assert pv.evaluate([ROOT, child, ROOT]) == pytest.approx([len(ENV.prompt(ROOT)) / 100,
                                                                len(ENV.prompt(child)) / 100,
                                                                len(ENV.prompt(ROOT)) / 100])
    pv.evaluate([child, ROOT])
    assert seen == [[ENV.prompt(ROOT), ENV.prompt(child)]]  # one call, each state once
    assert pv.value.value_calls == 2


def test_rollout_splits_steps_and_stops_at_the_terminal_step():
    text = ("13 - 9 = 4 (left: 4 4 10)\n10 - 4 = 6 (left: 4 6)\n4 * 6 = 24 (left: 24)\n"
            "Answer: (13-9)*(10-4) = 24\nextra\n")
    pv = LLMPolicyValue(ENV, ScriptedGenerator({ENV.prompt(ROOT): [(text, -3.0, 70)]}),
                        lambda t: [0.0] * len(t))
    [[r]] = pv.rollout([ROOT], 1)
    assert r.actions[-1] == "Answer: (13-9)*(10-4) = 24" and len(r.actions) == 4
    end = ROOT
    for a in r.actions:
        end = ENV.step(end, a)
    assert ENV.is_terminal(end) and ENV.reward(end) == 1.0 and r.token_count == 70


def test_an_env_that_writes_its_steps_stops_the_policy_early_and_rolls_out_step_by_step():
    """Reach: the policy names a move ("4 + 3"), the env writes the line; a rollout is one
    generator call per step, so the policy reads the env's lines, not its own arithmetic."""
    from tsllm.envs.reach import ReachEnv
    from tsllm.envs.reach import make_problem as reach_problem

    env = ReachEnv()
    two_moves, one_move, stuck = (env.initial_state(reach_problem(4, 10, ["+3", "*2"])),
                                  env.initial_state(reach_problem(5, 10, ["+1", "*2"])),
                                  env.initial_state(reach_problem(6, 9, ["+1", "+2"])))
    gen = ScriptedGenerator({env.prompt(two_moves): [("4 + 3", -1.0, 5), ("4 * 2", -2.0, 5)],
                             env.prompt(env.step(two_moves, "4 + 3")): [("7 + 3", -0.5, 5)],
                             env.prompt(one_move): [("5 * 2", -0.2, 4)],
                             env.prompt(stuck): [("", -0.1, 1)]})
    pv = LLMPolicyValue(env, gen, lambda t: [0.0] * len(t), max_step_tokens=16, rollout_tokens=100)
    [[a], [b], [c]] = pv.rollout([two_moves, one_move, stuck], 1)
    assert a.actions == ["4 + 3", "7 + 3"] and a.token_count == 10 and a.logprob == -1.5
    end = env.step(env.step(two_moves, "4 + 3"), "7 + 3")
    assert env.prompt(end).endswith("4 + 3 = 7, 3 to go\n7 + 3 = 10\n") and env.reward(end) == 1.0
    assert b.actions == ["5 * 2"] and b.token_count == 4  # won in one move: out of the next call
    assert c.actions == [] and c.token_count == 1  # an empty step ends the rollout
    assert [len(prompts) for prompts, _ in gen.calls] == [3, 1]
    assert all(params.stop == ["\n", " ="] and params.n == 1 for _, params in gen.calls)
    [exp] = pv.expand([two_moves], 2)
    assert exp.actions == ["4 + 3", "4 * 2"] and gen.calls[-1][1].stop == ["\n", " ="]


class QueuedGenerator(ScriptedGenerator):
    """Each call pops the next scripted completion of each prompt (successive draws differ)."""

    def generate(self, prompts, sampling):
        self.calls.append((list(prompts), sampling))
        return [[Completion(text=t, token_ids=[], logprob=lp, num_tokens=n, prompt_tokens=len(p), cached_tokens=0)
                 for t, lp, n in [self.script[p].pop(0)]] for p in prompts]


def test_rollouts_under_the_rules_redraw_an_illegal_step_and_pay_for_it():
    """Sampling gets the legal-move mask the searches get: a step naming no allowed move is drawn
    again (its tokens counted), not played; without the rules it is played and loses."""
    from tsllm.envs.reach import ReachEnv
    from tsllm.envs.reach import make_problem as reach_problem

    env = ReachEnv()
    root = env.initial_state(reach_problem(4, 10, ["+3", "*2"]))
    after = env.step(root, "4 + 3")

    def script():
        return {env.prompt(root): [("4 - 1", -3.0, 5), ("4 + 3", -1.0, 5)],
                env.prompt(after): [("7 + 3", -0.5, 5)]}

    gen = QueuedGenerator(script())
    pv = LLMPolicyValue(env, gen, lambda t: [0.0] * len(t), max_step_tokens=16, rollout_tokens=100)
    [[ruled]] = pv.rollout([root], 1)
    assert ruled.actions == ["4 + 3", "7 + 3"] and ruled.token_count == 15  # the redraw is paid
    assert ruled.logprob == -1.5 and pv.illegal_steps == 1  # only the steps played count
    assert ruled.prompt_tokens == 2 * len(env.prompt(root)) + len(env.prompt(after))
    free = LLMPolicyValue(env, QueuedGenerator(script()), lambda t: [0.0] * len(t), max_step_tokens=16,
                          rollout_tokens=100, legal_steps_only=False)
    [[unruled]] = free.rollout([root], 1)
    lost = env.step(root, "4 - 1")
    assert unruled.actions == ["4 - 1"] and env.is_terminal(lost) and env.reward(lost) == -1.0

    stubborn = LLMPolicyValue(env, QueuedGenerator({env.prompt(root): [("4 - 1", -3.0, 2)] * 20}),
                              lambda t: [0.0] * len(t), max_step_tokens=16, rollout_tokens=100)
    [[gave_up]] = stubborn.rollout([root], 1)
    assert gave_up.actions == [] and gave_up.token_count == 2 * (policy_value.MAX_REDRAWS + 1)


def test_token_level_env_is_refused_by_the_sentence_bridge():
    env = RLHFEnv(lambda p, r: 0.0, eos_id=2, decode=str)
    with pytest.raises(ValueError, match="TokenPolicyValue"):
        LLMPolicyValue(env, ScriptedGenerator({}), lambda t: t)


# --- the real HF generator on a tiny model ------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tokenizer = build_char_tokenizer()
    config = TinyModelConfig(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
                             max_position_embeddings=256, seed=0)
    model = build_tiny_llama(config, tokenizer)
    path = tmp_path_factory.mktemp("models") / "policy"
    save_model(model, tokenizer, path)
    return path, model, tokenizer


def real_pv(path, **kw):
    # a random model's steps are almost never legal moves: keep them, to exercise the searches
    return LLMPolicyValue(ENV, HFGenerator(path), lambda texts: [-len(t) / 1000 for t in texts],
                          max_step_tokens=12, rollout_tokens=40, legal_steps_only=False, **kw)


def test_searches_run_unchanged_on_a_real_model(tiny):
    path, _, _ = tiny
    roots = [ENV.initial_state(make_problem(p)) for p in ([4, 9, 10, 13], [1, 2, 3, 4], [2, 3, 4, 6])]
    pv = real_pv(path)
    outs = mcts_alpha(ENV, pv, roots, num_simulations=3, width=3, budget=Budget(max_expansions=6))
    for root, out in zip(roots, outs):
        assert out.best_path[0] == root and len(out.best_path) >= 2
        assert all(isinstance(s, TextState) for s in out.best_path)
        # what the budget saw is what the generator produced
        assert out.budget.tokens > 0 and out.budget.prompt_tokens > 0
    # every expansion round was one generator call for all roots (widths are uniform here)
    assert pv.generate_calls <= max(o.budget.expansions for o in outs)
    # vcn: the cache scores each distinct state once
    nodes = sum(o.stats["nodes"] for o in outs)
    assert pv.value.value_calls <= nodes

    sc = cot_sc(ENV, real_pv(path), roots[:2], k=3)
    assert all(o.budget.tokens > 0 for o in sc)
    bf = best_first(ENV, real_pv(path), roots[:1], width=2, budget=Budget(max_expansions=2))[0]
    assert bf.root_value is not None
    par = parallel_search(ENV, real_pv(path), roots[:2], rule="rebase", num_rollouts=4, max_depth=2)
    assert all(o.stats["rollouts"] >= 4 for o in par)


def test_overlap_value_scores_children_while_generating_and_changes_nothing_else(tiny, monkeypatch):
    path, _, _ = tiny
    monkeypatch.setattr(policy_value, "OVERLAP_BATCH", 2)  # score as soon as two children are ready
    roots = [ENV.initial_state(make_problem(p)) for p in ([4, 9, 10, 13], [1, 2, 3, 4], [2, 3, 4, 6])]
    inside_generate = []

    def value_fn(texts):
        inside_generate.append(generating[0])
        return [-len(t) / 1000 for t in texts]

    generating = [False]
    gen = HFGenerator(path, max_batch_size=4)  # 3 roots x width 2: batches of 2 prompts, so 2 callbacks
    real_generate = gen.generate

    def tracked_generate(prompts, sampling, on_finished=None):
        generating[0] = True
        try:
            return real_generate(prompts, sampling, on_finished=on_finished)
        finally:
            generating[0] = False

    gen.generate = tracked_generate
    # a random model's steps are almost never legal moves: keep them
    overlapped = LLMPolicyValue(ENV, gen, value_fn, max_step_tokens=12, legal_steps_only=False, overlap_value=True)
    plain = LLMPolicyValue(ENV, HFGenerator(path, max_batch_size=4), lambda t: [-len(x) / 1000 for x in t],
                           max_step_tokens=12, legal_steps_only=False)
    a, b = overlapped.expand(roots, 2), plain.expand(roots, 2)
    assert [e.actions for e in a] == [e.actions for e in b] and [e.priors for e in a] == [e.priors for e in b]
    assert inside_generate and all(inside_generate)  # children were scored during generation
    children = [ENV.step(r, action) for r, e in zip(roots, a) for action in e.actions]
    scored_early = overlapped.value.value_calls
    assert scored_early >= len(children) - 1  # all but a last one left short of a batch
    assert overlapped.evaluate(children) == plain.evaluate(children)
    assert overlapped.value.value_calls == len(children)  # evaluate scored only what was left
    assert overlapped.generate_seconds > 0 and overlapped.value.seconds > 0
    with pytest.raises(ValueError, match="takes on_finished"):
        LLMPolicyValue(ENV, ScriptedGenerator({}), value_fn, overlap_value=True)


def test_scored_expansion_scores_exactly_the_legal_moves_once_per_state(tiny):
    from tsllm.envs.game24_moves import Game24MovesEnv
    from tsllm.envs.reach import ReachEnv
    from tsllm.envs.reach import make_problem as reach_problem
    from tsllm.generation.prefix_tree import prefix_tree
    from tsllm.search import dfs

    path, model, tokenizer = tiny
    reach, moves24 = ReachEnv(), Game24MovesEnv()
    states = [reach.initial_state(reach_problem(7, 46, ["+1", "+3", "*2"])),
              moves24.initial_state({"numbers": [4, 9, 10, 13]})]
    for env, state in zip((reach, moves24), states):
        pv = LLMPolicyValue(env, HFGenerator(path), lambda texts: [0.0] * len(texts))
        assert pv.scored_moves
        [exp] = pv.expand([state], 2)  # the width is not used: every legal move is a child
        assert exp.actions == env.legal_moves(state) and len(exp.actions) > 2
        prompt_ids = tokenizer(env.prompt(state))["input_ids"]
        logprobs = []
        for move in exp.actions:
            move_ids = tokenizer.encode(move, add_special_tokens=False)
            with torch.no_grad():
                rows = torch.log_softmax(model(torch.tensor([prompt_ids + move_ids])).logits[0].float(), dim=-1)
            logprobs.append(sum(rows[len(prompt_ids) - 1 + t, i].item() for t, i in enumerate(move_ids)))
        top = max(logprobs)
        weights = [math.exp(lp - top) for lp in logprobs]
        assert exp.priors == pytest.approx([w / sum(weights) for w in weights], abs=1e-5)
        # cost: the moves' tokens with each shared prefix once ("7 " of "7 + 1", "7 + 3", "7 * 2"),
        # and the prompt computed once (the other moves reuse its cache)
        move_ids = [tokenizer.encode(m, add_special_tokens=False) for m in exp.actions]
        shared = sum(map(len, move_ids)) - sum(exp.token_counts)
        assert exp.token_counts == prefix_tree(move_ids).paid and shared > 0
        assert exp.prompt_tokens - exp.cached_tokens == len(prompt_ids) and exp.dropped_tokens == 0
        assert pv.score_calls == 1 and pv.generate_calls == 0
        budget = Budget()
        budget.charge_expansion(exp)
        assert budget.compute == sum(exp.token_counts) + len(prompt_ids)
    # with a cutoff the unlikely moves are not children; what was computed for them is still paid
    cut_pv = LLMPolicyValue(moves24, HFGenerator(path), lambda t: [0.0] * len(t), move_cutoff=0.5)
    [cut] = cut_pv.expand([states[1]], 2)
    assert cut.actions and set(cut.actions) < set(exp.actions)
    assert 0 < sum(cut.token_counts) + cut.dropped_tokens < sum(exp.token_counts)
    full_prior = dict(zip(exp.actions, exp.priors))
    kept_mass = sum(full_prior[a] for a in cut.actions)
    assert cut.priors == pytest.approx([full_prior[a] / kept_mass for a in cut.actions], abs=1e-5)
    with pytest.raises(ValueError, match="move_cutoff"):
        LLMPolicyValue(moves24, HFGenerator(path), lambda t: [0.0] * len(t), move_cutoff=1.0)
    # the policy alone (no rules: greedy, CoT-SC) still samples its steps
    assert not LLMPolicyValue(reach, HFGenerator(path), lambda t: [0.0] * len(t), legal_steps_only=False,
                              scored_moves=False).scored_moves
    # a search over scored moves only ever makes legal moves, whatever the random policy prefers
    out = dfs(reach, LLMPolicyValue(reach, HFGenerator(path), lambda t: [0.0] * len(t)), states[:1],
              use_terminal_reward=True, budget=Budget(max_expansions=30))[0]
    assert all(reach.board(s) is not None for s in out.best_path)


def test_token_level_children_are_the_top_k_next_tokens(tiny):
    _, model, tokenizer = tiny
    env = RLHFEnv(lambda p, r: float(len(r)), eos_id=tokenizer.eos_token_id, decode=tokenizer.decode, max_depth=5)
    pv = TokenPolicyValue(env, model, tokenizer, lambda texts: [0.0] * len(texts))
    states = [env.initial_state("hello"), env.step(env.initial_state("abc"), tokenizer.convert_tokens_to_ids("x"))]
    exps = pv.expand(states, 3)
    assert pv.forward_calls == 1
    for state, exp in zip(states, exps):
        ids = torch.tensor([pv._ids(state)])
        with torch.no_grad():
            probs = torch.softmax(model(input_ids=ids).logits[0, -1], -1)
        top = probs.topk(3)
        assert exp.actions == top.indices.tolist()  # left padding does not change the answer
        assert exp.priors == pytest.approx((top.values / top.values.sum()).tolist(), abs=1e-5)
    torch.manual_seed(0)
    [[a, b]] = pv.rollout(states[:1], 2)
    assert 1 <= len(a.actions) <= 5 and a.token_count == len(a.actions)
