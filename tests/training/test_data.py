"""Value/ORM data building: prefix offsets, MC and TD(lambda) targets, dedup, the question split,
and errors that name the file and line. Pure Python: no model is involved."""

import json
import subprocess
import sys

import pytest

from tsllm import tasks
from tsllm.envs.base import DataError, TextState
from tsllm.envs.game24 import Game24Env, is_solvable
from tsllm.tasks.warmstart import game24_contrast_trajectories
from tsllm.training.data import (
    ValueExample,
    build_orm_examples,
    build_value_examples,
    parse_trajectory,
    read_trajectories,
    render_for_task,
    split_by_question,
    td_lambda_targets,
    write_jsonl,
)

ENV = Game24Env()
RENDER = render_for_task("game24", formats=tasks)
ROW = {"question": "4 4 6 8", "steps": ["4 + 4 = 8 (left: 6 8 8)", "8 - 6 = 2 (left: 2 8)",
                                        "8 * 2 = 16 (left: 16)", "Answer: (8-6)*(4+4) = 16"],
       "reward": -1.0, "source": "sample"}


def traj(row=ROW, where="t.jsonl:1"):
    return parse_trajectory(dict(row), where)


def test_every_prefix_is_labelled_at_the_newline_that_closes_it():
    (example,) = build_value_examples([traj()], RENDER)
    steps = ROW["steps"]
    assert example.text == ENV.prompt(TextState(ROW["question"], tuple(steps)))
    assert len(example.label_chars) == len(steps) + 1  # the question alone, then each step
    for k, end in enumerate(example.label_chars):
        prefix = ENV.prompt(TextState(ROW["question"], tuple(steps[:k])))
        assert example.text[: end + 1] == prefix and example.text[end] == "\n"
    assert example.targets == (-1.0,) * 5  # Monte-Carlo, gamma = 1: the outcome everywhere


def test_td_lambda_interpolates_between_one_step_td_and_monte_carlo():
    values = [0.1, 0.2, 0.3, 0.4, 0.5]  # one estimate per prefix; the last is replaced by the reward
    assert td_lambda_targets(values, -1.0, 1.0) == [-1.0] * 5
    assert td_lambda_targets(values, -1.0, 0.0) == [0.2, 0.3, 0.4, -1.0, -1.0]
    # lambda = 0.5 by hand: G4 = -1, G3 = .5*(-1) + .5*(-1) = -1, G2 = .5*.4 + .5*(-1) = -.3,
    # G1 = .5*.3 + .5*(-.3) = 0, G0 = .5*.2 + .5*0 = .1
    assert td_lambda_targets(values, -1.0, 0.5) == pytest.approx([0.1, 0.0, -0.3, -1.0, -1.0])

    (example,) = build_value_examples([traj({**ROW, "values": values})], RENDER, td_lambda=0.5)
    assert example.targets == pytest.approx([0.1, 0.0, -0.3, -1.0, -1.0])
    with pytest.raises(DataError, match=r"t.jsonl:1: td_lambda=0.5 needs per-prefix 'values'"):
        build_value_examples([traj()], RENDER, td_lambda=0.5)


def test_orm_examples_label_only_the_finished_text():
    (example,) = build_orm_examples([traj()], RENDER)
    assert example.label_chars == (len(example.text) - 1,) and example.targets == (-1.0,)


def test_identical_trajectories_are_kept_once_but_disagreeing_ones_both_stay():
    same = [traj(), traj()]
    other_outcome = traj({**ROW, "reward": 1.0})
    examples = build_value_examples(same + [other_outcome], RENDER)
    assert [e.targets[0] for e in examples] == [-1.0, 1.0]


def test_split_holds_out_whole_questions_and_is_seeded():
    examples = [ValueExample(f"q{i % 10}", f"q{i % 10} {i}", (0,), (1.0,)) for i in range(40)]
    train, evaluation = split_by_question(examples, 0.2, seed=3)
    train_q, eval_q = {e.question for e in train}, {e.question for e in evaluation}
    assert len(eval_q) == 2 and not train_q & eval_q and len(train) + len(evaluation) == 40
    assert split_by_question(examples, 0.2, seed=3) == (train, evaluation)
    assert {e.question for e in split_by_question(examples, 0.2, seed=4)[1]} != eval_q
    # A tiny positive fraction still holds out one question; zero holds out none.
    assert len({e.question for e in split_by_question(examples, 0.01, seed=0)[1]}) == 1
    assert split_by_question(examples, 0.0, seed=0)[1] == []


def test_read_reports_empty_files_and_malformed_rows_with_file_and_line(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match=f"{empty}: no trajectories"):
        read_trajectories(empty)
    with pytest.raises(FileNotFoundError, match="missing.jsonl does not exist"):
        read_trajectories(tmp_path / "missing.jsonl")

    good = json.dumps(ROW)
    cases = {
        "{not json": "invalid JSON",
        json.dumps({"question": "1 2 3 4", "steps": []}): r"missing field\(s\) \['reward'\]",
        json.dumps({**ROW, "steps": "4 + 4 = 8"}): "'steps' must be a list of strings",
        json.dumps({**ROW, "steps": ["a\nb"]}): "a step is empty or holds a newline",
        json.dumps({**ROW, "reward": "1"}): "'reward' must be a finite number",
        json.dumps({**ROW, "reward": True}): "'reward' must be a finite number",
        json.dumps({**ROW, "values": [0.0, 1.0]}): r"len\(steps\)\+1 = 5, got 2",
    }
    for bad_row, message in cases.items():
        path = tmp_path / "bad.jsonl"
        path.write_text(good + "\n\n" + bad_row + "\n")
        with pytest.raises(DataError, match=f"{path}:3: .*{message}"):
            read_trajectories(path)


def test_a_render_that_does_not_extend_its_prefixes_is_refused():
    def shuffled(question, steps):  # puts the steps before the question: prefixes do not nest
        return "".join(s + "\n" for s in steps) + question + "\n"

    with pytest.raises(DataError, match="t.jsonl:1: the rendered prefix with 0 step"):
        build_value_examples([traj()], shuffled)


def test_demo_data_pairs_solver_traces_with_losing_traces(tmp_path):
    rows = game24_contrast_trajectories(20, seed=1)
    assert len(rows) == 40 and [r["reward"] for r in rows[:2]] == [1.0, -1.0]
    for good, losing in zip(rows[::2], rows[1::2]):
        numbers = [int(n) for n in good["question"].split()]
        assert ENV.check({"numbers": numbers}, "\n".join(good["steps"]))
        first = ENV.step(ENV.initial_state({"numbers": numbers}), losing["steps"][0])
        assert ENV.check_steps(first)  # a valid step ...
        left = losing["steps"][0].split("(left: ")[1].rstrip(")").split()
        assert not is_solvable([int(x) for x in left])  # ... into an unsolvable position
    path = write_jsonl(rows, tmp_path / "d" / "demo.jsonl")
    assert len(read_trajectories(path)) == 40 and not list(path.parent.glob("*.tmp-*"))


def test_data_module_imports_no_torch():
    code = "import sys, tsllm.training.data; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
