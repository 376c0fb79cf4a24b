"""Shared text-env machinery: hashable states, prompt rendering, step splitting, depth cap,
and jsonl errors that name the file and line."""

import pytest

from tsllm.envs.base import DataError, TextEnv, TextState, read_jsonl, split_steps


class EchoEnv(TextEnv):
    """Minimal subclass: a line starting with "done" ends the episode; the answer is the last line."""

    template = "Q: {question}\n"

    def gold_of(self, problem):
        return problem.get("answer") if isinstance(problem, dict) else None

    def is_final_step(self, step):
        return step.startswith("done")

    def extract_answer(self, text):
        return text.split("\n")[-1]

    def check(self, problem, text):
        return self.extract_answer(text) == problem["answer"]


def test_states_are_hashable_values_and_hide_gold_from_repr():
    a = TextState("q", ("x", "y"), gold="42")
    b = TextState("q", ("x", "y"), gold="42")
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert "42" not in repr(a)  # snapshots show what the policy sees, not the key
    assert a.depth == 2 and a.text() == "x\ny"


def test_prompt_ends_with_separator_and_child_extends_parent():
    env = EchoEnv(max_steps=5)
    s0 = env.initial_state({"question": "2+2? {not a field}", "answer": "done 4"})
    assert env.prompt(s0) == "Q: 2+2? {not a field}\n"  # braces in the question are not format fields
    s1 = env.step(s0, "  think  \n")
    s2 = env.step(s1, "done 4")
    assert s1.steps == ("think",)
    assert env.prompt(s2) == "Q: 2+2? {not a field}\nthink\ndone 4\n"
    assert env.prompt(s2).startswith(env.prompt(s1))  # prefix-cache friendly


def test_terminal_reward_and_depth_cap():
    env = EchoEnv(max_steps=3)
    s = env.initial_state({"question": "q", "answer": "done 4"})
    assert not env.is_terminal(s) and env.reward(s) == 0.0 and env.answer(s) is None
    s = env.step(s, "a")
    assert not env.is_terminal(s) and env.reward(s) == 0.0
    assert env.reward(env.step(s, "done 4")) == 1.0
    assert env.reward(env.step(s, "done 5")) == -1.0
    capped = env.step(env.step(s, "b"), "c")  # three steps, none final: the cap ends it
    assert env.is_terminal(capped) and env.reward(capped) == -1.0


def test_reward_without_gold_raises_instead_of_guessing():
    env = EchoEnv(max_steps=1)
    s = env.step(env.initial_state("bare question"), "done")
    with pytest.raises(ValueError, match="no gold"):
        env.reward(s)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError):
        EchoEnv(max_steps=0)
    with pytest.raises(ValueError, match="question"):
        EchoEnv(template="no placeholder")


def test_split_steps_strips_and_drops_blank_lines():
    assert split_steps("  a \n\n b\n   \nc") == ["a", "b", "c"]
    assert split_steps("") == []


@pytest.mark.parametrize(
    "lines, line_no, message",
    [
        (['{"a": 1}', '{"a": 2', '{"a": 3}'], 2, "invalid JSON"),
        (['{"a": 1}', "", "[1, 2]"], 3, "expected a JSON object"),
        (['{"a": 1}', '{"b": 2}'], 2, "missing field"),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path, lines, line_no, message):
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as err:
        read_jsonl(path, required=("a",))
    assert f"{path}:{line_no}:" in str(err.value) and message in str(err.value)


def test_jsonl_reads_rows_and_skips_blank_lines(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n')
    assert read_jsonl(path, required=("a",)) == [{"a": 1}, {"a": 2}]
