"""The one bridge from language models to search: a batched `PolicyValueFn` built from a
`Generator` (the policy) and a value function (the critic), so every algorithm of tsllm.search
runs unchanged on real models.

Sentence level (`LLMPolicyValue`), TS-LLM's rules:
- `expand(states, width)`: one generator call samples `width` candidate next steps for every state
  (stopping at the env's step separator); empty and duplicate steps, and steps that break the
  task's rules (`env.legal_step`, AlphaZero's legal-move mask; off with `legal_steps_only=False`),
  are dropped (their tokens are still paid, as `Expansion.dropped_tokens`); priors are the length-normalised sequence
  probabilities exp(logprob / tokens), renormalised over the unique children. A state whose
  samples give no usable step gets an empty expansion: that branch ends, the run goes on
  (counted in `dead_ends`).
- scored expansion (`scored_moves=True`, the default, for a `GameEnv`, which lists its
  `legal_moves`, and a generator that can `score`: both backends): a state's children are all its
  legal moves, the policy's log-probability of each computed in one batched call
  (`Generator.score`), priors the softmax of those log-probabilities over the legal moves
  (AlphaZero's masked policy). `width` is not used: nothing is sampled, so nothing is duplicated
  or illegal. Each child costs the tokens the backend computed for its move (`token_counts`,
  scored rather than generated; HF runs the moves as a prefix tree, each shared prefix once) and
  the state's prompt what the backend computed of it (HF: once per state; vLLM: the blocks its
  prefix cache did not serve). `move_cutoff` c > 0: a move whose prefix, at some depth of the
  moves' prefix tree, is less than c times as likely as the depth's likeliest prefix is not a
  child; HF stops scoring there (the tokens it ran are paid, as `dropped_tokens`), so a confident
  policy's expansion costs a few moves, not every legal one; vLLM applies the same rule after
  scoring every move, which saves the critic's work but no policy token.
- `evaluate(states)`: one value call for all states not seen before; values are cached per state,
  so a node is scored once however many searches or rounds ask (`value_calls` counts real calls).
- `overlap_value=True`: `expand` also scores the children it makes, sample by sample as the
  generator finishes them (the `on_finished` callback), so the critic runs while the policy is
  still decoding the other samples; the search's `evaluate` of those children hits the cache.
  Worth it with the vllm backend, whose engine decodes in other processes; it scores children the
  search might not evaluate (all the tree searches here do, except `cot_greedy`).
- `rollout(states, n)`: `n` full continuations per state from one generator call, split into steps
  with the env, cut at the first terminal step. For an env that writes part of each step (reach,
  Game24 moves) rollouts go step by step, and with the rules on an illegal step is redrawn (paid
  for), so sampling gets the legal-move mask the searches get. A whole-text rollout is not
  redrawn: its rules are only applied by the searches.

Token level (`TokenPolicyValue`, TS-LLM's RLHF setting): the children of a state are the top-k
next tokens with their probabilities, from one forward pass over all frontier states.
"""

from __future__ import annotations

import inspect
import math
import time
from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from functools import partial
from typing import Any

from tsllm.types import Completion, Expansion, GameEnv, Generator, Rollout, SamplingParams, Scorer, TextEnv

ValueFn = Callable[[list[str]], list[float]]  # texts (env.prompt of each state) -> values

# overlap_value scores finished children in batches of at least this many (see _score_finished)
OVERLAP_BATCH = 64
# a rollout under the task's rules redraws an illegal step at most this many times in a row
MAX_REDRAWS = 8


def _widths(states: Sequence[Any], width: int | Sequence[int]) -> list[int]:
    widths = [width] * len(states) if isinstance(width, int) else list(width)
    if len(widths) != len(states):
        raise ValueError(f"expand: {len(widths)} widths for {len(states)} states")
    return widths


def _tokens_computed(value_fn: ValueFn) -> int:
    """What a value function has run so far, if it counts (a plain callable costs nothing here)."""
    return getattr(value_fn, "tokens_computed", 0)


class CachedValue:
    """Values of states, each computed once: one batched `value_fn` call per `evaluate` for the
    states not seen before. `tokens_computed`: the tokens the value model ran for them, when the
    value function reports its own (`ValueFunction.tokens_computed`: a state extending one it
    scored before runs only its new tokens), so the critic's work can be priced like the policy's."""

    def __init__(self, env: Any, value_fn: ValueFn):
        self.env, self.value_fn = env, value_fn
        self.cache: dict[Hashable, float] = {}
        self.value_calls = 0  # states actually sent to the value model
        self.tokens_computed = 0
        self.batches = 0
        self.seconds = 0.0  # wall time inside the value model

    def __call__(self, states: Sequence[Hashable]) -> list[float]:
        todo = list(dict.fromkeys(s for s in states if s not in self.cache))
        if todo:
            start, before = time.perf_counter(), _tokens_computed(self.value_fn)
            values = self.value_fn([self.env.prompt(s) for s in todo])
            self.seconds += time.perf_counter() - start
            self.tokens_computed += _tokens_computed(self.value_fn) - before
            if len(values) != len(todo):
                raise ValueError(f"value function returned {len(values)} values for {len(todo)} texts")
            self.cache.update(zip(todo, map(float, values)))
            self.value_calls += len(todo)
            self.batches += 1
        return [self.cache[s] for s in states]


# the bridge's knobs a search config sets beside the algorithm's own (search.knobs, tsllm eval --set)
BRIDGE_KNOBS = ("move_cutoff",)


def move_cutoff_problem(value: float) -> str | None:
    """What is wrong with `value` as a move_cutoff (None: nothing)."""
    return None if 0.0 <= value < 1.0 else f"must be in [0, 1), got {value}"


def apply_bridge_knobs(pv: Any, knobs: dict[str, Any]) -> dict[str, Any]:
    """`knobs` less the bridge's (`BRIDGE_KNOBS`), which are set on `pv` (its setters check them);
    a bridge without such a setting refuses it, naming it."""
    for name in BRIDGE_KNOBS:
        if name in knobs:
            if not hasattr(pv, name):
                raise ValueError(f"{name}: this task's policy/value ({type(pv).__name__}) has no such setting")
            setattr(pv, name, knobs[name])
    return {name: value for name, value in knobs.items() if name not in BRIDGE_KNOBS}


class LLMPolicyValue:
    """Sentence-level policy/value over a text env (see the module docstring).

    `env` is a `tsllm.types.TextEnv` (every `tsllm.envs.base.TextEnv` is one); a `GameEnv` also
    lists its legal moves. `max_step_tokens` caps one step; `rollout_tokens` caps a full rollout."""

    def __init__(self, env: TextEnv, generator: Generator, value_fn: ValueFn, *, temperature: float = 1.0,
                 top_p: float = 1.0, top_k: int = 0, max_step_tokens: int = 64,
                 rollout_tokens: int = 512, seed: int | None = 0, legal_steps_only: bool = True,
                 overlap_value: bool = False, scored_moves: bool = True,
                 move_cutoff: float = 0.0):
        if not isinstance(env, TextEnv):
            raise ValueError(f"LLMPolicyValue needs a sentence-level env (tsllm.types.TextEnv), not "
                             f"{type(env).__name__}; use TokenPolicyValue for token-level envs")
        if overlap_value and "on_finished" not in inspect.signature(generator.generate).parameters:
            raise ValueError(f"overlap_value=True needs a generator whose generate() takes on_finished "
                             f"(the hf and vllm backends do); {type(generator).__name__} does not: "
                             "pass overlap_value=False")
        self.env, self.generator = env, generator
        self.sampling = dict(temperature=temperature, top_p=top_p, top_k=top_k)
        self.max_step_tokens, self.rollout_tokens, self.seed = max_step_tokens, rollout_tokens, seed
        self.value = CachedValue(env, value_fn)
        # drop proposals that break the task's rules (env.legal_step), as AlphaZero masks illegal moves
        self.legal_steps_only = legal_steps_only
        self.illegal_steps = 0
        self.overlap_value = overlap_value
        self.dead_ends = 0  # states whose samples gave no usable step
        self.generate_calls = 0
        self.generate_seconds = 0.0  # wall time waiting for the generator (not in on_finished work)
        self._finished_seconds = 0.0  # wall time in on_finished callbacks
        self._calls = 0  # varies the seed per call so repeated expansions are fresh samples
        self.step_stops = list(env.step_stops)
        # all legal moves scored in one pass (AlphaZero's expansion) where the env lists them
        self.scored_moves = scored_moves and isinstance(env, GameEnv) and isinstance(generator, Scorer)
        self.score_calls = 0
        self.move_cutoff = move_cutoff

    @property
    def move_cutoff(self) -> float:
        return self._move_cutoff

    @move_cutoff.setter
    def move_cutoff(self, value: float) -> None:
        if problem := move_cutoff_problem(value):
            raise ValueError(f"move_cutoff {problem}")
        self._move_cutoff = value

    def _generate(self, prompts: list[str], n: int, max_new_tokens: int, stop: list[str],
                  on_finished=None) -> list[list[Completion]]:
        self._calls += 1
        self.generate_calls += 1
        seed = None if self.seed is None else self.seed + self._calls
        params = SamplingParams(n=n, max_new_tokens=max_new_tokens, stop=stop, seed=seed, **self.sampling)
        start, before = time.perf_counter(), self._finished_seconds
        extra = {} if on_finished is None else {"on_finished": on_finished}
        out = self.generator.generate(prompts, params, **extra)
        self.generate_seconds += time.perf_counter() - start - (self._finished_seconds - before)
        return out

    def expand(self, states: Sequence[Hashable], width: int | Sequence[int]) -> list[Expansion]:
        widths = _widths(states, width)
        if self.scored_moves:
            return self._scored_expansions(states, widths)
        by_width: dict[int, list[int]] = defaultdict(list)  # one generator call per distinct width
        for i, w in enumerate(widths):
            if w > 0:
                by_width[w].append(i)
        completions: list[list[Completion]] = [[] for _ in states]
        pending: list[Hashable] = []  # children of finished samples, not scored yet
        for w, idx in by_width.items():
            early = partial(self._score_finished, [states[i] for i in idx], pending) if self.overlap_value else None
            outs = self._generate([self.env.prompt(states[i]) for i in idx], w, self.max_step_tokens,
                                  self.step_stops, on_finished=early)
            for i, out in zip(idx, outs):
                completions[i] = out
        return [self._expansion(s, c) for s, c in zip(states, completions)]

    def _scored_expansions(self, states: Sequence[Hashable], widths: list[int]) -> list[Expansion]:
        """Every legal move of each state (width > 0) scored by the policy in one call."""
        moves = [self.env.legal_moves(s) if w > 0 else [] for s, w in zip(states, widths)]
        start = time.perf_counter()
        cut = {"cutoff": self.move_cutoff} if self.move_cutoff > 0 else {}  # a Scorer need not know the cut
        prompts = [self.env.prompt(s) for s in states]
        scored = self.generator.score(prompts, moves, **cut) if any(moves) else [[]] * len(states)
        self.generate_seconds += time.perf_counter() - start
        self.score_calls += 1
        out = []
        for actions, row in zip(moves, scored):
            kept = [(a, c) for a, c in zip(actions, row) if c.logprob > -math.inf]  # the cut's are not children
            if not kept:
                out.append(Expansion(actions=[], priors=[], token_counts=[]))
                continue
            top = max(c.logprob for _, c in kept)
            weights = [math.exp(c.logprob - top) for _, c in kept]
            total = sum(weights)
            out.append(Expansion(actions=[a for a, _ in kept], priors=[w / total for w in weights],
                                 token_counts=[c.num_tokens for _, c in kept],
                                 dropped_tokens=sum(c.num_tokens for c in row if c.logprob == -math.inf),
                                 prompt_tokens=sum(c.prompt_tokens for c in row),
                                 cached_tokens=sum(c.cached_tokens for c in row)))
        if self.overlap_value:  # the children are known now: score them in the same breath
            self.value([self.env.step(s, a) for s, e in zip(states, out) for a in e.actions])
        return out

    def _score_finished(self, states: list[Hashable], pending: list[Hashable],
                        finished: list[tuple[int, Completion]]) -> None:
        """on_finished: collect the children the samples just finished make, and score them (one
        value call) once there are enough for a full batch, while the generator goes on decoding
        the other samples. Fewer at a time would pay the critic's per-call cost over and over; the
        last ones wait for the search's evaluate. Children `_expansion` will drop are skipped; a
        duplicate is scored once (the value cache)."""
        start = time.perf_counter()
        for index, completion in finished:
            step = completion.text.strip()
            if step and self.env.step_separator not in step and self._legal(states[index], step):
                pending.append(self.env.step(states[index], step))
        if len(pending) >= OVERLAP_BATCH:
            self.value(pending)
            pending.clear()
        self._finished_seconds += time.perf_counter() - start

    def _legal(self, state: Hashable, step: str) -> bool:
        return not self.legal_steps_only or self.env.legal_step(state, step)

    def _usable(self, state: Hashable, step: str, actions: list[str]) -> bool:
        if not step or step in actions or self.env.step_separator in step:
            return False
        if not self._legal(state, step):
            self.illegal_steps += 1
            return False
        return True

    def _expansion(self, state: Hashable, completions: list[Completion]) -> Expansion:
        actions, scores, tokens, dropped = [], [], [], 0
        for c in completions:
            step = c.text.strip()
            if not self._usable(state, step, actions):
                dropped += c.num_tokens
                continue
            actions.append(step)
            scores.append(math.exp(c.logprob / max(c.num_tokens, 1)))  # length-normalised probability
            tokens.append(c.num_tokens)
        total = sum(scores)
        priors = [s / total for s in scores] if total > 0 else [1.0 / len(scores) for _ in scores]
        if not actions and completions:
            self.dead_ends += 1
        # each completion reports the prompt tokens it went through and how many came from a
        # cache (HF recomputes the prompt per sample; vLLM serves the repeats from its cache)
        return Expansion(actions=actions, priors=priors, token_counts=tokens, dropped_tokens=dropped,
                         prompt_tokens=sum(c.prompt_tokens for c in completions),
                         cached_tokens=sum(c.cached_tokens for c in completions))

    def evaluate(self, states: Sequence[Hashable]) -> list[float]:
        return self.value(states)

    def rollout(self, states: Sequence[Hashable], n: int) -> list[list[Rollout]]:
        if not states:
            return []
        if self.env.writes_steps:
            return self._stepwise_rollouts(states, n)
        outs = self._generate([self.env.prompt(s) for s in states], n, self.rollout_tokens, [])
        return [[self._to_rollout(s, c) for c in row] for s, row in zip(states, outs)]

    def _stepwise_rollouts(self, states: Sequence[Hashable], n: int) -> list[list[Rollout]]:
        """Rollouts for an env that writes part of each step: one generator call per step for every
        unfinished rollout, stopped where the policy's part ends, the env writing the line. A
        rollout ends at a terminal state, an empty step or `rollout_tokens` generated tokens.
        With the task's rules on (`legal_steps_only`), a step that breaks them is drawn again, its
        tokens paid, in the next call (rejection sampling: the policy's distribution masked to
        the legal steps, the information a search's expansion has); after `MAX_REDRAWS` illegal
        draws in a row the rollout ends there, unfinished."""
        walkers = [s for s in states for _ in range(n)]
        actions: list[list[str]] = [[] for _ in walkers]
        tokens, logprobs = [0] * len(walkers), [0.0] * len(walkers)
        prompt, cached, redraws = [0] * len(walkers), [0] * len(walkers), [0] * len(walkers)
        active = [k for k, s in enumerate(walkers) if not self.env.is_terminal(s)]
        while active:
            outs = self._generate([self.env.prompt(walkers[k]) for k in active], 1,
                                  min(self.max_step_tokens, self.rollout_tokens), self.step_stops)
            still = []
            for k, (c,) in zip(active, outs):
                tokens[k] += c.num_tokens
                prompt[k] += c.prompt_tokens
                cached[k] += c.cached_tokens
                step = c.text.strip()
                if not step:
                    continue
                if not self._legal(walkers[k], step):
                    self.illegal_steps += 1
                    redraws[k] += 1
                    if redraws[k] <= MAX_REDRAWS and tokens[k] < self.rollout_tokens:
                        still.append(k)
                    continue
                redraws[k] = 0
                logprobs[k] += c.logprob
                walkers[k] = self.env.step(walkers[k], step)
                actions[k].append(step)
                if not self.env.is_terminal(walkers[k]) and tokens[k] < self.rollout_tokens:
                    still.append(k)
            active = still
        return [[Rollout(actions=actions[k], token_count=tokens[k], logprob=logprobs[k], prompt_tokens=prompt[k],
                         cached_tokens=cached[k]) for k in range(i * n, (i + 1) * n)] for i in range(len(states))]

    def _to_rollout(self, state: Hashable, c: Completion) -> Rollout:
        actions, cur = [], state
        for step in self.env.split_steps(c.text):
            if self.env.is_terminal(cur):
                break
            cur = self.env.step(cur, step)
            actions.append(step)
        return Rollout(actions=actions, token_count=c.num_tokens, logprob=c.logprob, prompt_tokens=c.prompt_tokens,
                       cached_tokens=c.cached_tokens)


class TokenPolicyValue:
    """Token-level policy/value for `tsllm.envs.rlhf.RLHFEnv`: children are the top-`width` next
    tokens and their probabilities (renormalised over the kept tokens), computed for every frontier
    state in one padded forward pass of an HF causal LM. Each child costs one generated token."""

    def __init__(self, env: Any, model: Any, tokenizer: Any, value_fn: ValueFn, *, rollout_tokens: int = 64,
                 temperature: float = 1.0):
        self.env, self.model, self.tokenizer = env, model, tokenizer
        self.value = CachedValue(env, value_fn)
        self.rollout_tokens, self.temperature = rollout_tokens, temperature
        self.forward_calls = 0

    def _ids(self, state: Any) -> list[int]:
        # the prompt is encoded once; response tokens are appended as ids (never re-tokenised)
        return list(self.tokenizer(state.prompt)["input_ids"]) + list(state.tokens)

    def _next_token_logprobs(self, states: Sequence[Any]):
        import torch

        rows = [self._ids(s) for s in states]
        length = max(map(len, rows))
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.tensor([[pad] * (length - len(r)) + r for r in rows])  # left padding
        mask = torch.tensor([[0] * (length - len(r)) + [1] * len(r) for r in rows])
        with torch.no_grad():
            logits = self.model(input_ids=ids, attention_mask=mask).logits[:, -1, :].float()
        self.forward_calls += 1
        return torch.log_softmax(logits / self.temperature, dim=-1)

    def expand(self, states: Sequence[Any], width: int | Sequence[int]) -> list[Expansion]:
        widths = _widths(states, width)
        if not states:
            return []
        logprobs = self._next_token_logprobs(states)
        out = []
        for row, w in zip(logprobs, widths):
            top = row.topk(min(w, row.numel()))
            probs = top.values.exp().tolist()
            total = sum(probs)
            out.append(Expansion(actions=top.indices.tolist(), priors=[p / total for p in probs],
                                 token_counts=[1] * len(probs)))
        return out

    def evaluate(self, states: Sequence[Any]) -> list[float]:
        return self.value(states)

    def rollout(self, states: Sequence[Any], n: int) -> list[list[Rollout]]:
        """Sample n continuations per state token by token (one forward per depth for all)."""
        import torch

        walkers = [(i, s) for i, s in enumerate(states) for _ in range(n)]
        paths: list[list[int]] = [[] for _ in walkers]
        logps = [0.0] * len(walkers)
        active = [k for k, (_, s) in enumerate(walkers) if not self.env.is_terminal(s)]
        cur = [s for _, s in walkers]
        for _ in range(self.rollout_tokens):
            if not active:
                break
            rows = self._next_token_logprobs([cur[k] for k in active])
            picks = torch.multinomial(rows.exp(), 1).squeeze(1).tolist()
            for k, tok, row in zip(active, picks, rows):
                cur[k] = self.env.step(cur[k], tok)
                paths[k].append(tok)
                logps[k] += float(row[tok])
            active = [k for k in active if not self.env.is_terminal(cur[k])]
        result: list[list[Rollout]] = [[] for _ in states]
        for k, (i, _) in enumerate(walkers):
            result[i].append(Rollout(actions=paths[k], token_count=len(paths[k]), logprob=logps[k]))
        return result
