"""The continuations of one prompt as a radix tree of token ids, so a scorer runs each shared
prefix once: legal moves such as "14 + 3", "14 + 1", "14 * 2" share "14 " (and "14 + "), and
scoring them as three separate rows would compute those positions three times.

A node is a span of token ids under its parent (-1: the prompt). Siblings start with different
tokens; a node ends where its continuations part or where one of them ends. Depth-by-depth, each
node extends its parent's KV cache by its span (`HFGenerator._score_batch`). No torch here.

A scorer may stop early on the unlikely branches (`likely_enough`): a move's probability is at most
its prefix's, so a prefix far less likely than its depth's likeliest bounds every move under it;
those moves are not scored further and are not children (AlphaZero's expansion keeps the moves
whose prior is not negligible; the cut is what makes a confident policy's expansion cheap).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass
class Span:
    parent: int  # index of the parent span; -1 for the prompt
    ids: list[int]
    depth: int  # 1 under the prompt
    children: list[int] = field(default_factory=list)


@dataclass
class PrefixTree:
    spans: list[Span]
    paths: list[list[int]]  # per continuation, its spans from the prompt down
    paid: list[int]  # per continuation, the tokens of its spans no earlier continuation passed through

    @property
    def tokens(self) -> int:
        """Positions a scorer computes for all the continuations: each shared prefix once."""
        return sum(len(s.ids) for s in self.spans)


def prefix_tree(continuations: Sequence[Sequence[int]]) -> PrefixTree:
    """The radix tree of `continuations` (token id lists, each non-empty)."""
    spans: list[Span] = []
    paths: list[list[int]] = [[] for _ in continuations]

    def grow(members: list[int], parent: int, offset: int, depth: int) -> None:
        groups: dict[int, list[int]] = {}
        for m in members:
            if len(continuations[m]) > offset:
                groups.setdefault(continuations[m][offset], []).append(m)
        for group in groups.values():  # dicts keep first-seen order: spans follow the continuations' order
            end = offset + 1
            while all(len(continuations[m]) > end for m in group) and \
                    len({continuations[m][end] for m in group}) == 1:
                end += 1
            spans.append(Span(parent, list(continuations[group[0]][offset:end]), depth))
            index = len(spans) - 1
            if parent >= 0:
                spans[parent].children.append(index)
            for m in group:
                paths[m].append(index)
            grow(group, index, end, depth + 1)

    grow(list(range(len(continuations))), -1, 0, 1)
    tree = PrefixTree(spans, paths, [])
    tree.paid = paid_for(tree, set(range(len(spans))))
    return tree


def likely_enough(cumulative: Mapping[int, float], cutoff: float) -> set[int]:
    """Of one tree's spans at one depth (span index -> log-prob of the prefix it ends), those
    scored further: at least `cutoff` times as likely as the likeliest of them (0: all)."""
    if cutoff <= 0 or not cumulative:
        return set(cumulative)
    floor = max(cumulative.values()) + math.log(cutoff)
    return {i for i, logprob in cumulative.items() if logprob >= floor}


def paid_for(tree: PrefixTree, computed: set[int]) -> list[int]:
    """Per continuation, the tokens of its spans in `computed` that no earlier continuation passed
    through (`PrefixTree.paid` when every span was computed)."""
    seen: set[int] = set()
    paid = []
    for path in tree.paths:
        ran = [s for s in path if s in computed]
        paid.append(sum(len(tree.spans[s].ids) for s in ran if s not in seen))
        seen.update(ran)
    return paid


def scored_whole(tree: PrefixTree, token_logprobs: Sequence[Sequence[float]], cutoff: float) -> list[bool]:
    """Per continuation, whether the depth-by-depth cut (`likely_enough` at each depth, on the
    spans under kept prefixes) keeps it, given every continuation's per-token log-probs: the rule
    a scorer that stops early applies as it goes, for a scorer that computed everything."""
    span_logprob: dict[int, float] = {}
    for path, logprobs in zip(tree.paths, token_logprobs):
        offset = 0
        for s in path:
            length = len(tree.spans[s].ids)
            span_logprob.setdefault(s, sum(logprobs[offset : offset + length]))
            offset += length
    prefix: dict[int, float] = {}
    kept: set[int] = set()
    for depth in range(1, max((s.depth for s in tree.spans), default=0) + 1):
        level = [j for j, s in enumerate(tree.spans) if s.depth == depth and (s.parent < 0 or s.parent in kept)]
        for j in level:
            parent = tree.spans[j].parent
            prefix[j] = (0.0 if parent < 0 else prefix[parent]) + span_logprob[j]
        kept |= likely_enough({j: prefix[j] for j in level}, cutoff)
    return [all(s in kept for s in path) for path in tree.paths]
