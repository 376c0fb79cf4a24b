"""The task registry and the rule that keeps tasks in tsllm/tasks/: no task name is compared or
branched on anywhere else in the package (the envs may name themselves)."""

import ast
from pathlib import Path

import pytest

from tsllm import tasks
from tsllm.config import ConfigError, load_config
from tsllm.loop import LoopConfig
from tsllm.tasks.base import TaskSettings, held_out_seed, train_seed

PACKAGE = Path(tasks.__file__).resolve().parents[1]
BUILT_IN = {"game24", "gsm8k", "prontoqa", "rlhf", "toy"}


def task_name_uses(source: str, names: set[str]) -> list[str]:
    """Where `source` tests or dispatches on a task name: a comparison (==, !=, in) with a name
    or a collection holding one, a dict keyed by names, `choices=` or `Literal[...]` listing them,
    or a `case "name":`."""
    def named(node: ast.AST) -> bool:
        if isinstance(node, ast.Constant):
            return node.value in names
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return any(named(e) for e in node.elts)
        return False

    found = []
    for node in ast.walk(ast.parse(source)):
        hits = []
        if isinstance(node, ast.Compare):
            hits = [n for n in [node.left, *node.comparators] if named(n)]
        elif isinstance(node, ast.Dict):
            hits = [k for k in node.keys if k is not None and named(k)]
        elif isinstance(node, ast.keyword) and node.arg == "choices" and named(node.value):
            hits = [node.value]
        elif isinstance(node, ast.Subscript) and getattr(node.value, "id", None) == "Literal":
            hits = [node.slice] if named(node.slice) else []
        elif isinstance(node, ast.MatchValue) and named(node.value):
            hits = [node.value]
        found += [f"line {node.lineno}: {ast.unparse(node)[:80]}" for _ in hits[:1]]
    return found


def test_the_detector_finds_each_way_of_branching_on_a_task():
    planted = ['if cfg.task == "rlhf": pass', 'x = task in ("game24", "prontoqa")', 'envs = {"gsm8k": 1}',
               'p.add_argument("--task", choices=["game24"])', 'task: Literal["game24", "gsm8k"] = "game24"',
               'match t:\n    case "toy":\n        pass']
    for line in planted:
        assert task_name_uses(line, BUILT_IN), line
    assert not task_name_uses('row = {"task": "game24"}\nout = "runs/game24-tiny"', BUILT_IN)


def test_no_task_name_is_compared_or_branched_on_outside_tsllm_tasks():
    names = set(tasks.names())
    assert BUILT_IN <= names
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        part = path.relative_to(PACKAGE).parts[0]
        if part in ("tasks", "envs"):
            continue
        uses = task_name_uses(path.read_text(), names)
        if uses:
            offenders[str(path.relative_to(PACKAGE.parent))] = uses
    assert not offenders, f"task-specific code outside tsllm/tasks/: {offenders}"


def test_registry_names_and_lookups():
    assert tasks.names() == sorted(tasks.names())
    assert tasks.get_task("game24").name == "game24"
    with pytest.raises(KeyError, match="unknown task 'nope'"):
        tasks.get_task("nope")
    assert "text" in tasks.prompt_formats() and set(tasks.names()) <= set(tasks.prompt_formats())
    assert tasks.joins_steps("rlhf") and not tasks.joins_steps("game24") and not tasks.joins_steps(None)

    class Clash(tasks.Task):
        name = "game24"

    with pytest.raises(ValueError, match="already registered"):
        tasks.register(Clash)
    assert tasks.get_task("game24") is not Clash


def test_a_task_without_a_warm_start_needs_base_model_before_the_run_starts():
    class NoWarmStart(tasks.base.TextTask):
        name = "no_warm_start"

    with pytest.raises(ConfigError, match="config key 'base_model': not set, and task no_warm_start has no warm"):
        NoWarmStart.check(TaskSettings(), training=True)
    NoWarmStart.check(TaskSettings(), training=False)  # evaluation needs no warm start


def test_the_loop_config_takes_any_registered_task_and_names_the_valid_ones():
    with pytest.raises(ConfigError, match=r"config key 'task': must be one of \['game24', .*'toy'\], got 'nope'"):
        load_config(LoopConfig, None, ["task=nope"])
    with pytest.raises(ConfigError, match="config key 'task': toy trees have no text"):
        load_config(LoopConfig, None, ["task=toy"])
    assert load_config(LoopConfig, None, ["task=prontoqa"]).task == "prontoqa"


@pytest.mark.parametrize("name", ["prontoqa", "gsm8k"])
def test_generated_tasks_hold_out_problems_the_training_pool_never_shows(name):
    settings = TaskSettings(seed=3, train_questions=40, test_questions=40)
    task = tasks.get_task(name)(settings)
    train, test = task.problems()
    assert len(train) == 40 and len(test) == 40
    assert not {p["question"] for p in train} & {p["question"] for p in test}
    # one rule for the held-out seed, whichever task uses it
    assert held_out_seed(3) != train_seed(3)
    again = tasks.get_task(name)(TaskSettings(seed=3, train_questions=40, test_questions=40)).test_problems()
    assert [p["question"] for p in again] == [p["question"] for p in test]


def test_game24_warm_start_uses_only_the_training_side_of_the_evaluation_split():
    task = tasks.get_task("game24")(TaskSettings(seed=0, test_questions=100))
    test = {p["question"] for p in task.test_problems()}
    rows = task.warmstart_rows()
    assert rows and {r["task"] for r in rows} == {"game24"}
    assert not {r["question"] for r in rows} & test


def test_policy_learns_from_correct_rows_or_each_prompts_top_reward_row():
    rows = [{"question": "a", "steps": ["x"], "reward": -0.5}, {"question": "a", "steps": ["y"], "reward": 0.2},
            {"question": "b", "steps": ["z"], "reward": -0.1}, {"question": "b", "steps": [], "reward": 3.0},
            {"question": "c", "steps": ["w"], "reward": 1.0}]
    correct = tasks.get_task("game24").policy_rows(rows)
    assert [r["steps"] for r in correct] == [["y"], ["w"]]
    top = tasks.get_task("rlhf").policy_rows(rows)
    assert {r["question"]: r["steps"] for r in top} == {"a": ["y"], "b": ["z"], "c": ["w"]}


def test_rlhf_reports_the_mean_reward_of_finished_responses():
    result = {"per_question": [{"reward": 1.0}, {"reward": None}, {"reward": -0.5}]}
    assert tasks.get_task("rlhf").method_metrics(result) == {"reward": 0.25}
    assert tasks.get_task("game24").method_metrics(result) == {}
