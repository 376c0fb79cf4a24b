"""PrOntoQA as a game: a move names a context rule whose subject is the last fact, the env writes
the fact and, at the queried concept, the answer; a rule leading nowhere, a broken line or the move
cap lose; the label decides a proof's outcome; generated problems are won by their gold chains."""

import random

import pytest

from tsllm.envs import prontoqa
from tsllm.envs.base import TextState, random_play
from tsllm.envs.prontoqa_moves import MAX_STEPS, ProntoQAMovesEnv

# wumpus -> tumpus -> dumpus -> not rompus; tumpus -> lempus leads nowhere; Alex is no zumpus
CONTEXT = ("Every wumpus is a tumpus. Every tumpus is a dumpus. Each dumpus is not a rompus. "
           "Every tumpus is a lempus. Every zumpus is a rompus. Alex is a wumpus.")
PROBLEM = {"question": CONTEXT, "query": "True or false: Alex is a rompus.", "answer": "False"}
PROOF = ["Every wumpus is a tumpus, so Alex is a tumpus.", "Every tumpus is a dumpus, so Alex is a dumpus.",
         "Each dumpus is not a rompus, so Alex is not a rompus. The answer is false."]  # as the env writes them
ENV = ProntoQAMovesEnv()


def play(problem, lines):
    """The state after the lines, up to the end of the game."""
    state = ENV.initial_state(problem)
    for line in lines:
        if ENV.is_terminal(state):
            break
        state = ENV.step(state, line)
    return state


def test_the_policy_names_rules_and_the_env_derives_the_facts_and_the_answer():
    state = ENV.initial_state(PROBLEM)
    assert ENV.prompt(state) == f"{CONTEXT} True or false: Alex is a rompus.\n"
    assert ENV.legal_moves(state) == ["Every wumpus is a tumpus"]  # the zumpus rule does not apply to Alex
    state = ENV.step(state, "Every wumpus is a tumpus")
    assert ENV.legal_moves(state) == ["Every tumpus is a dumpus", "Every tumpus is a lempus"]
    for move in ["Every tumpus is a dumpus", "Each dumpus is not a rompus"]:
        assert not ENV.is_terminal(state) and ENV.reward(state) == 0.0 and ENV.answer(state) is None
        state = ENV.step(state, move)
    assert state.steps == tuple(PROOF)
    assert ENV.is_terminal(state) and ENV.reward(state) == 1.0 and ENV.answer(state) is False
    assert ENV.legal_moves(state) == [] and not ENV.legal_step(state, "Every wumpus is a tumpus")
    context, query = prontoqa.split_question(ENV.prompt(ENV.initial_state(PROBLEM)))
    assert prontoqa.entailed(context, query) is False  # what forward chaining says, the game proves
    assert ENV.check(PROBLEM, "\n".join(PROOF)) and not ENV.check(PROBLEM, "\n".join(PROOF[:2]))
    assert ENV.board(TextState(state.question, state.steps, state.gold)).derived == state.board.derived  # replayed


def test_a_line_names_its_rule_by_subject_and_concept_and_the_env_writes_the_rest():
    # the quantifier, the polarity and whatever follows the comma are the context's and the env's to state
    state = play(PROBLEM, ["Each wumpus is not a tumpus, so Alex is a rompus. The answer is true.",
                           "every tumpus is a dumpus."])
    assert state.steps == tuple(PROOF[:2]) and not ENV.is_terminal(state)


def test_the_label_decides_the_outcome_of_a_proof():
    flipped = {**PROBLEM, "answer": "True"}
    state = play(flipped, PROOF)
    assert ENV.is_terminal(state) and ENV.answer(state) is False and ENV.reward(state) == -1.0


@pytest.mark.parametrize("lines", [
    ["Every wumpus is a tumpus", "Every tumpus is a lempus"],       # a rule whose fact no rule applies to
    ["Every zumpus is a rompus"],                                   # a context rule whose subject Alex is not
    ["Every tumpus is a dumpus"],                                   # a context rule, but not of the last fact
    ["Every wumpus is a tumpus", "Every wumpus is a tumpus"],       # the last fact is tumpus now
    ["Every wumpus is a dumpus"],                                   # not a rule of the context
    ["The answer is false."],                                       # the answer is derived, never said
    ["Alex is a tumpus."],                                          # a fact, not a rule
])
def test_a_dead_end_or_a_broken_line_ends_the_game_at_minus_one(lines):
    state = play(PROBLEM, lines)
    assert ENV.is_terminal(state) and ENV.reward(state) == -1.0 and ENV.legal_moves(state) == []
    assert ENV.answer(state) is None and not ENV.check(PROBLEM, "\n".join(lines))


def test_a_broken_line_is_kept_as_written_and_the_mask_rules_it_out():
    root = ENV.initial_state(PROBLEM)
    assert not ENV.legal_step(root, "Every zumpus is a rompus") and ENV.legal_step(root, "Every wumpus is a tumpus")
    assert ENV.step(root, "Every zumpus is a rompus").steps == ("Every zumpus is a rompus",)


def test_a_negative_fact_leads_nowhere_and_a_cycle_ends_at_the_move_cap():
    negative = {"question": "Each wumpus is not a tumpus. Every tumpus is a rompus. Alex is a wumpus.",
                "query": "True or false: Alex is a rompus.", "answer": "False"}
    state = play(negative, ["Each wumpus is not a tumpus"])
    assert state.steps == ("Each wumpus is not a tumpus, so Alex is not a tumpus.",)
    assert ENV.is_terminal(state) and ENV.reward(state) == -1.0
    cycle = {"question": "Every wumpus is a tumpus. Every tumpus is a wumpus. Every yumpus is a rompus. "
                         "Alex is a wumpus.", "query": "True or false: Alex is a rompus.", "answer": "False"}
    state = play(cycle, ["Every wumpus is a tumpus", "Every tumpus is a wumpus"] * MAX_STEPS)
    assert len(state.steps) == MAX_STEPS and ENV.is_terminal(state) and ENV.reward(state) == -1.0


def test_the_prompt_shows_the_opening_fact_last_before_the_query():
    problem = {"question": "Alex is a wumpus. Every wumpus is a tumpus. Each tumpus is not a rompus.",
               "query": "True or false: Alex is a rompus.", "answer": "False"}
    expected = ("Every wumpus is a tumpus. Each tumpus is not a rompus. Alex is a wumpus. "
                "True or false: Alex is a rompus.")
    assert ENV.question_text(problem) == expected and ENV.question_text(expected) == expected
    # TS-LLM's layout states the query inside the question, in its own words
    released = 'Alex is a wumpus. Every wumpus is a tumpus. Is the statement "Alex is a tumpus" true or false?'
    assert ENV.question_text(released) == ('Every wumpus is a tumpus. Alex is a wumpus. '
                                           'Is the statement "Alex is a tumpus" true or false?')
    assert ENV.reward(play({"question": released, "answer": "True"}, ["Every wumpus is a tumpus"])) == 1.0


def test_plural_rules_of_a_loaded_problem_are_moves_as_the_context_writes_them():
    problem = {"question": "Wumpuses are tumpuses. Tumpuses are not rompuses. Sam is a wumpus.",
               "query": "True or false: Sam is a rompus.", "answer": "False"}
    state = ENV.initial_state(problem)
    assert ENV.legal_moves(state) == ["Wumpuses are tumpuses"]
    state = play(problem, ["Wumpuses are tumpuses", "Tumpuses are not rompuses"])
    assert state.steps == ("Wumpuses are tumpuses, so Sam is a tumpus.",
                           "Tumpuses are not rompuses, so Sam is not a rompus. The answer is false.")
    assert ENV.reward(state) == 1.0


def test_generated_problems_are_won_by_their_gold_chains_and_random_play_ends_by_the_rules():
    rng = random.Random(0)
    for problem in prontoqa.generate(200, seed=5):
        rules = problem["chain_of_thought"][1::2]  # the gold proof alternates facts and rules
        state = play(problem, [rule.rstrip(".") for rule in rules])
        assert ENV.is_terminal(state) and ENV.reward(state) == 1.0
        assert ENV.answer(state) == prontoqa.parse_label(problem["answer"])
        assert state.steps[-1].endswith(f"The answer is {problem['answer'].lower()}.")
        end = random_play(ENV, problem, rng)[-1]
        assert ENV.is_terminal(end) and len(end.steps) < MAX_STEPS  # decided, never capped
        if ENV.reward(end) > 0:
            assert ENV.answer(end) == prontoqa.parse_label(problem["answer"])
        else:  # a random play loses only on a rule whose fact leads nowhere
            assert ENV.answer(end) is None and ENV.board(end) is not None and not ENV.moves(ENV.board(end))
