"""A task added from outside the package: this module alone defines and registers it, and one
loop round and `tsllm eval` run on it with no other edit.

The task: "the number after n". One step, `Answer: n+1`; the exact checker reads that number."""

import json
import re
from pathlib import Path

import pytest

from tests.launch import LIBRARY_DEFAULTS
from tsllm import tasks
from tsllm.cli import main
from tsllm.envs.base import TextEnv
from tsllm.tasks.base import TaskSettings, TextTask


class NextNumberEnv(TextEnv):
    template = "After {question} comes:\n"

    def __init__(self, template: str | None = None):
        super().__init__(max_steps=2, template=template)

    def gold_of(self, problem):
        return problem["answer"]

    def is_final_step(self, step: str) -> bool:
        return step.startswith("Answer:")

    def extract_answer(self, text: str):
        found = re.findall(r"Answer: (-?\d+)", text[-200:])
        return found[-1] if found else None

    def check(self, problem, text: str) -> bool:
        return self.extract_answer(text) == problem["answer"]


def problem(n: int) -> dict:
    return {"question": str(n), "answer": str(n + 1)}


@tasks.register
class NextNumberTask(TextTask):
    name = "next_number"

    @classmethod
    def make_env(cls, settings: TaskSettings, template: str | None = None):
        return NextNumberEnv(template)

    def train_problems(self) -> list[dict]:
        return [problem(n) for n in range(self.settings.train_questions)]

    def test_problems(self) -> list[dict]:
        return [problem(n) for n in range(500, 500 + self.settings.test_questions)]

    def warmstart_rows(self) -> list[dict]:
        return [{"question": p["question"], "steps": [f"Answer: {p['answer']}"], "reward": 1.0,
                 "task": self.name, "source": "warmstart"} for p in self.train_problems()]


@pytest.fixture(scope="module", autouse=True)
def registered():
    yield
    tasks.unregister(NextNumberTask.name)  # other modules see the built-in tasks only


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_a_task_defined_in_one_module_runs_a_loop_round_and_evaluates(tmp_path):
    assert "next_number" in tasks.names()
    out = tmp_path / "run"
    tiny = ["task=next_number", "rounds=1", "train_questions=6", "test_questions=3", "warmstart.max_seconds=4",
            "samples_per_question=2", "max_step_tokens=8", "search.knobs={num_simulations: 2, width: 2}",
            "value.num_train_epochs=1", "policy.num_train_epochs=1", "tracking.report_to=none",
            "tiny={hidden_size: 32, num_layers: 1, num_heads: 1, intermediate_size: 64}"]
    assert main(["run", *LIBRARY_DEFAULTS, "--output-dir", str(out), "--no-progress", *tiny]) == 0
    sampled = read_jsonl(out / "round_0" / "sample" / "trajectories.jsonl")
    assert len(sampled) == 6 * 2 and {r["task"] for r in sampled} == {"next_number"}
    assert [r["question"] for r in sampled[::2]] == [str(n) for n in range(6)]
    warm = read_jsonl(out / "warmstart" / "trajectories.jsonl")
    assert warm[0] == {"question": "0", "steps": ["Answer: 1"], "reward": 1.0, "task": "next_number",
                       "source": "warmstart"}
    assert [r["round"] for r in read_jsonl(out / "rounds.jsonl")] == [0, 1]
    assert json.loads((out / "config.json").read_text())["task"] == "next_number"

    result = tmp_path / "eval.json"
    assert main(["eval", "--task", "next_number", "--policy", str(out / "warmstart" / "model"),
                 "--value", str(out / "round_0" / "value" / "model"), "--test-questions", "3",
                 "--methods", "greedy,mcts_alpha,cot_sc", "--set", "mcts_alpha.num_simulations=2",
                 "--set", "mcts_alpha.width=2", "--max-step-tokens", "8", "--out", str(result)]) == 0
    written = json.loads(result.read_text())
    assert written["task"] == "next_number" and written["questions"] == 3
    for method in ("greedy", "mcts_alpha", "cot_sc"):
        per_question = written["methods"][method]["per_question"]
        assert [q["question"] for q in per_question] == ["500", "501", "502"]  # the task's held-out problems
