"""A game is a few lines on GameEnv: the board and its moves. The env then writes each move's line,
ends the game, masks and lists the legal moves, and a search scores those moves through the
policy/value bridge with no model (a scorer with fixed preferences)."""

import random

from tsllm.envs.base import GameEnv, TextState, random_play
from tsllm.policy_value import LLMPolicyValue
from tsllm.search import dfs
from tsllm.tasks.base import random_play_rows
from tsllm.types import Completion
from tsllm.types import GameEnv as GameEnvProtocol
from tsllm.types import TextEnv as TextEnvProtocol


class StairsEnv(GameEnv):
    """Climb from 0 to exactly the top (the question) in at most 4 moves of 1 or 2 (`up 2`)."""

    template = "Top {question}\n"
    max_steps = 4

    def gold_of(self, problem):
        return int(problem)

    def start(self, top):
        return (0, top)  # the board: where we stand, and the top

    def moves(self, board):
        return ["up 1", "up 2"]

    def apply(self, board, line):
        move = line.strip()[:4]
        if move not in self.moves(board):
            return None
        at = board[0] + int(move[-1])
        return f"{move} = {at}", (at, board[1])

    def outcome(self, board):
        return None if board[0] < board[1] else 1.0 if board[0] == board[1] else -1.0

    def answer_of(self, board):
        return board[0]


ENV = StairsEnv()


class FixedPreferences:
    """A Scorer (tsllm.types) whose log-probability of a move is fixed; it never samples."""

    def __init__(self, logprobs):
        self.logprobs, self.scored = logprobs, []

    def generate(self, prompts, sampling):
        raise AssertionError("a scored expansion samples nothing")

    def update_weights(self, path):
        pass

    def score(self, prompts, continuations):
        self.scored += [list(moves) for moves in continuations if moves]
        return [[Completion(text=m, token_ids=[], logprob=self.logprobs[m], num_tokens=2, prompt_tokens=len(p))
                 for m in moves] for p, moves in zip(prompts, continuations)]


def test_the_env_writes_each_move_and_the_board_decides_the_game():
    root = ENV.initial_state(5)
    assert isinstance(ENV, GameEnvProtocol) and isinstance(ENV, TextEnvProtocol) and ENV.writes_steps
    assert ENV.prompt(root) == "Top 5\n" and ENV.legal_moves(root) == ["up 1", "up 2"]
    state = root
    for line in ["up 2, I think", "up 2 = 7", "up 1"]:  # whatever follows the move is the env's to write
        assert ENV.legal_step(state, line) and not ENV.is_terminal(state) and ENV.reward(state) == 0.0
        state = ENV.step(state, line)
    assert state.steps == ("up 2 = 2", "up 2 = 4", "up 1 = 5") and state.board == (5, 5)
    assert ENV.is_terminal(state) and ENV.reward(state) == 1.0 and ENV.answer(state) == 5
    assert ENV.check(5, "up 2\nup 2\nup 1") and not ENV.check(5, "up 2\nup 2") and not ENV.check(5, None)
    # a state rebuilt from a row (no board in it) replays the lines to the same board
    assert ENV.board(TextState("5", state.steps, 5)) == (5, 5)
    # after the end no move is legal: a line there breaks the rules like any other illegal line
    assert ENV.legal_moves(state) == [] and not ENV.legal_step(state, "up 1")
    assert ENV.reward(ENV.step(state, "up 1")) == -1.0


def test_overshooting_the_move_cap_or_a_broken_rule_lose():
    root = ENV.initial_state(5)
    over = ENV.step(ENV.step(ENV.step(root, "up 2"), "up 2"), "up 2")
    capped = root
    for _ in range(4):
        capped = ENV.step(capped, "up 1")
    broken = ENV.step(root, "down 1")
    assert broken.steps == ("down 1",) and not ENV.legal_step(root, "down 1")
    for end in (over, capped, broken):
        assert ENV.is_terminal(end) and ENV.reward(end) == -1.0 and ENV.legal_moves(end) == []
    assert ENV.legal_step(broken, "anything")  # after a broken rule nothing more is ruled out
    assert ENV.answer(broken) is None and ENV.answer(over) == 6


def test_a_search_over_scored_legal_moves_needs_no_model():
    scorer = FixedPreferences({"up 1": -2.0, "up 2": -0.1})
    pv = LLMPolicyValue(ENV, scorer, lambda texts: [0.0] * len(texts))
    assert pv.scored_moves and pv.step_stops == ["\n", " ="]
    out = dfs(ENV, pv, [ENV.initial_state(5)], use_terminal_reward=True, prior_weight=1.0)[0]
    # the policy prefers "up 2" and the checker ranks the win first: 2, 4, then 1 to reach 5
    assert [s.steps[-1] for s in out.best_path[1:]] == ["up 2 = 2", "up 2 = 4", "up 1 = 5"]
    assert out.answer == 5 and ENV.reward(out.best_path[-1]) == 1.0
    assert scorer.scored == [["up 1", "up 2"]] * 3  # every expansion: exactly the legal moves


def test_random_play_rows_teach_the_rules_and_never_a_solution():
    path = random_play(ENV, 5, random.Random(0))
    assert ENV.is_terminal(path[-1]) and not any(ENV.is_terminal(s) for s in path[:-1])
    assert all(ENV.step(a, b.steps[-1]) == b for a, b in zip(path, path[1:]))  # legal moves, as the env writes

    def passes_two(path):  # a play through 2 would show the solution of the problem "top 2"
        return any(s.board[0] == 2 for s in path)

    rows = random_play_rows(ENV, [3, 4, 5], 30, random.Random(1), "stairs", passes_two)
    assert 0 < len(rows) < 90 and {r["task"] for r in rows} == {"stairs"}
    for row in rows:
        end = ENV.board(TextState(row["question"], tuple(row["steps"]), row["gold"]))
        assert end is not None and end[0] != int(row["question"]) and row["reward"] == -1.0
        assert "up 2 = 2" not in row["steps"] and "up 1 = 2" not in row["steps"]
