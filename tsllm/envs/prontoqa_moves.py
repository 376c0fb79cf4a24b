"""PrOntoQA on `tsllm.envs.base.GameEnv` (as tsllm.envs.reach): the policy names the rule to apply,
the env writes what it derives.

    Every wumpus is a tumpus. Each tumpus is not a rompus. Alex is a wumpus. ... True or false: Alex is a rompus.
    Every wumpus is a tumpus, so Alex is a tumpus.
    Each tumpus is not a rompus, so Alex is not a rompus. The answer is false.

A move is a rule of the context, named by a line's start (`Every wumpus is a tumpus`; the policy's
generation stops at the comma). It is legal when its subject is the concept the entity was last
shown to be: the context's fact at the opening, then the fact the previous move derived (a negative
fact, "Alex is not a rompus", leads nowhere). The env writes the rule as the context states it and
the fact it gives; once that fact is about the queried concept it also writes the answer it proves,
and the game ends: +1 if that answer is the label, else -1. A rule that leads nowhere (no rule
applies to its fact) ends the game at -1, and so does `max_steps` moves or a line that names no
legal rule. The policy never writes the answer: it has to be derived. The prompt is the context
with the entity's fact moved last, then the query, so the opening board is read where every later
one is: just before the policy's line.

Why the board is the last fact and not every fact established so far: PrOntoQA's proofs are chains,
each step applying a rule to the fact just derived, so the policy's lookup is one (the rule whose
subject is the last line's concept), and a wrong rule loses the game. Over every fact established,
a wrong rule would only cost a move, and random legal play would win nearly every generated problem
within a few moves of slack; as a chain it loses about as often as it wins (docs/RESULTS.md), so
the policy has a strategy to learn (which rule leads to the queried concept), not only the rules.
A rule that leads nowhere ends the game as soon as it is applied, so a search that reads outcomes
sees it at once: on generated problems, whose wrong branches are one rule long, DFS with the
outcome proves every query, and what the loop improves is the policy's own play.

The problems and the grammar are tsllm.envs.prontoqa's (its generator checks every label by forward
chaining). A problem's gold key is its question text and label: the board is parsed from the
question, so a state rebuilt from a row replays it. Model output is untrusted: a line is parsed
with the restricted grammar's anchored regexes; nothing is evaluated.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any, NamedTuple

from tsllm.envs.base import STEP_SEPARATOR, GameEnv, TextState
from tsllm.envs.prontoqa import Fact, Rule, fact_text, parse_label, parse_sentence, split_query, split_question

MAX_STEPS = 8  # a generated proof is at most 5 rules; loaded ontologies may run longer
MOVE_END = ","  # a line is `<rule>, so <fact>`: the policy's part ends at the comma

Gold = tuple[str, bool]  # (question text, label)


class Board(NamedTuple):
    entity: str
    rules: tuple[tuple[Rule, str], ...]  # each context rule with its sentence as written (no period)
    query: Fact
    label: bool
    last: tuple[Fact, ...]  # the facts the next rule applies to: the context's, then the one just derived
    derived: Fact | None = None  # the fact the last move derived


def rule_of(line: str) -> tuple[str, str] | None:
    """(subject, concept) of the rule a line names by its start, up to the comma; None if the start
    is not a rule of the grammar. The quantifier and the polarity are the context's to state."""
    head = line.split(MOVE_END, 1)[0].strip() if isinstance(line, str) else ""
    rule = parse_sentence(head)
    return (rule.subject, rule.concept) if isinstance(rule, Rule) else None


class ProntoQAMovesEnv(GameEnv):
    """PrOntoQA as a game (see the module doc)."""

    template = "{question}\n"
    max_steps = MAX_STEPS
    step_stops = (STEP_SEPARATOR, MOVE_END)

    def question_text(self, problem: Any) -> str:
        """The context with its facts last, then the query: the opening board (the fact the first
        rule applies to) is read where every later one is, just before the policy's line."""
        text = f"{problem['question']} {problem.get('query', '')}" if isinstance(problem, Mapping) else str(problem)
        context, query = split_query(text)
        facts = [s for s in context if isinstance(parse_sentence(s), Fact)]
        return " ".join([s for s in context if s not in facts] + facts + ([query] if query else []))

    def gold_of(self, problem: Any) -> Hashable:
        if isinstance(problem, Mapping) and "answer" in problem:
            return self.question_text(problem), parse_label(problem["answer"])
        return None

    def problem_of(self, state: TextState) -> dict[str, Any]:
        question, label = state.gold
        return {"question": question, "answer": label}

    def start(self, gold: Sequence) -> Board:
        question, label = gold
        context, query = split_question(question)
        q = parse_sentence(query or "")
        if not isinstance(q, Fact):
            raise ValueError(f"not a PrOntoQA question (no 'True or false: <fact>' query): {question!r}")
        parsed = [(parse_sentence(s), s.rstrip(".")) for s in context]
        rules = tuple((p, text) for p, text in parsed if isinstance(p, Rule))
        facts = tuple(p for p, _ in parsed if isinstance(p, Fact) and p.entity == q.entity)
        return Board(q.entity, rules, q, bool(label), facts)

    def _applicable(self, board: Board) -> list[tuple[Rule, str]]:
        subjects = {f.concept for f in board.last if f.positive}
        return [(rule, text) for rule, text in board.rules if rule.subject in subjects]

    def moves(self, board: Board) -> list[str]:
        return list(dict.fromkeys(text for _, text in self._applicable(board)))

    def apply(self, board: Board, line: str) -> tuple[str, Board] | None:
        named = rule_of(line)
        for rule, text in self._applicable(board):
            if (rule.subject, rule.concept) == named:
                derived = Fact(board.entity, rule.concept, rule.positive)
                after = board._replace(last=(derived,), derived=derived)
                answer = self.answer_of(after)
                proved = "" if answer is None else f" The answer is {'true' if answer else 'false'}."
                return f"{text}, so {fact_text(derived)}{proved}", after
        return None

    def outcome(self, board: Board) -> float | None:
        answer = self.answer_of(board)
        if answer is not None:
            return 1.0 if answer == board.label else -1.0
        return None if self._applicable(board) else -1.0  # a fact no rule applies to: a dead end

    def answer_of(self, board: Board) -> bool | None:
        """The answer the derived fact proves (True: the query holds), None before the queried
        concept is derived."""
        fact = board.derived
        if fact is None or fact.concept != board.query.concept:
            return None
        return fact.positive == board.query.positive
