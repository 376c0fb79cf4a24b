"""`tsllm eval` on a real (tiny, random) policy and value model: methods, matched budgets, the
JSON it writes, and its errors for bad input; every task evaluates (gsm8k on a question/answer
jsonl, rlhf on a prompt list with a reward model, the toy trees with no checkpoint)."""

import json
from pathlib import Path

import pytest
import torch
from transformers import LlamaForSequenceClassification

from tsllm.cli import main
from tsllm.models.tiny import TinyModelConfig, build_char_tokenizer, build_tiny_llama, save_model
from tsllm.models.value import build_value_model, save_value_model

TOT_CSV = Path(__file__).parent / "envs" / "fixtures" / "24_tot_sample.csv"
GSM8K_ROWS = Path(__file__).parent / "envs" / "fixtures" / "gsm8k_sample.jsonl"
PROMPTS = ["Say hi.", "Name a color.", "Count to three."]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_models")
    tokenizer = build_char_tokenizer()
    config = TinyModelConfig(hidden_size=32, num_layers=1, num_heads=1, intermediate_size=64,
                             max_position_embeddings=1024)
    policy = build_tiny_llama(config, tokenizer)
    save_model(policy, tokenizer, root / "policy")
    value, value_tokenizer = build_value_model(tiny=config, tokenizer=tokenizer)
    save_value_model(value, value_tokenizer, root / "value")
    policy.config.num_labels = 1
    torch.manual_seed(0)
    save_model(LlamaForSequenceClassification(policy.config), tokenizer, root / "reward")
    return root / "policy", root / "value"


def test_eval_writes_accuracy_and_tokens_per_method(models, tmp_path, capsys):
    policy, value = models
    out = tmp_path / "eval.json"
    code = main(["eval", "--policy", str(policy), "--value", str(value), "--data", str(TOT_CSV),
                 "--methods", "greedy,mcts_alpha,cot_sc", "--set", "mcts_alpha.num_simulations=2",
                 "--set", "mcts_alpha.width=2", "--max-step-tokens", "16", "--out", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    rows = sum(1 for line in TOT_CSV.read_text().splitlines()[1:] if line.strip())
    assert result["questions"] == rows
    methods = result["methods"]
    assert list(methods) == ["greedy", "mcts_alpha", "cot_sc"]
    for r in methods.values():
        assert 0.0 <= r["accuracy"] <= 1.0 and r["tokens_per_question"] > 0
        assert len(r["per_question"]) == rows
        assert r["accuracy"] == sum(q["correct"] for q in r["per_question"]) / rows
    # CoT-SC at the tree search's compute: its mean as CoT-SC's per-question limit, samples drawn
    # while they fit (at most MAX_SAMPLES), so it never spends more than the search did on average
    search, sc = methods["mcts_alpha"], methods["cot_sc"]
    assert sc["knobs"]["k"] == 64 and sc["knobs"]["max_compute"] == max(1, round(search["compute_per_question"]))
    assert all(q["compute"] <= sc["knobs"]["max_compute"] for q in sc["per_question"])
    assert 0 < sc["compute_per_question"] and search["compute_per_question"] >= search["tokens_per_question"]
    assert "accuracy" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--methods", "greedy,mcts_gamma"], "unknown method"),
    (["--methods", "mcts_alpha"], "need --value"),
    (["--methods", "greedy", "--set", "bfs.width=2"], "not in --methods"),
    (["--methods", "greedy", "--data", "/no/such.csv"], "does not exist"),
    (["--task", "rlhf", "--methods", "greedy", "--data", str(GSM8K_ROWS)], "--reward-model: not set"),
    (["--task", "gsm8k", "--methods", "greedy", "--reward-model", "x"], "needs no reward_model"),
    (["--task", "nope"], "invalid choice"),
])
def test_eval_rejects_bad_input(models, args, message, capsys):
    policy, _ = models
    with pytest.raises(SystemExit):
        main(["eval", "--policy", str(policy), *args])
    assert message in capsys.readouterr().err


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_eval_gsm8k_on_a_question_answer_jsonl(models, tmp_path):
    policy, value = models
    out = tmp_path / "eval.json"
    assert main(["eval", "--task", "gsm8k", "--policy", str(policy), "--value", str(value), "--data", str(GSM8K_ROWS),
                 "--methods", "greedy,mcts_alpha,cot_sc", "--set", "mcts_alpha.num_simulations=2",
                 "--set", "mcts_alpha.width=2", "--max-step-tokens", "16", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    questions = [row["question"] for row in read_jsonl(GSM8K_ROWS)]
    assert result["task"] == "gsm8k" and result["questions"] == len(questions)
    for r in result["methods"].values():  # the file's problems, in order, each checked
        assert [q["question"] for q in r["per_question"]] == questions
        assert all(isinstance(q["correct"], bool) for q in r["per_question"])


def test_eval_rlhf_on_prompts_with_a_reward_model(models, tmp_path, capsys):
    policy, value = models
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    out = tmp_path / "eval.json"
    assert main(["eval", "--task", "rlhf", "--policy", str(policy), "--value", str(value), "--data", str(prompts),
                 "--reward-model", str(policy.parent / "reward"), "--max-response-tokens", "4",
                 "--set", "mcts_alpha.num_simulations=2", "--set", "mcts_alpha.width=2", "--out", str(out)]) == 0
    methods = json.loads(out.read_text())["methods"]
    assert list(methods) == ["greedy", "mcts_alpha", "best_of_n"]  # the task's baseline by default
    assert methods["best_of_n"]["knobs"]["method"] == "orm_max"
    cap = max(1, round(methods["mcts_alpha"]["compute_per_question"]))
    assert methods["best_of_n"]["knobs"]["n"] == 64 and methods["best_of_n"]["knobs"]["max_compute"] == cap
    assert all(q["compute"] <= cap for q in methods["best_of_n"]["per_question"])
    for r in methods.values():  # the reward model's mean score of the chosen responses
        assert [q["question"] for q in r["per_question"]] == PROMPTS
        scores = [q["reward"] for q in r["per_question"] if q["reward"] is not None]
        assert scores and r["reward"] == pytest.approx(sum(scores) / len(scores))
    assert "reward" in capsys.readouterr().out


def test_eval_toy_trees_need_no_checkpoint(tmp_path):
    out = tmp_path / "eval.json"
    assert main(["eval", "--task", "toy", "--test-questions", "12", "--methods", "greedy,mcts_alpha,cot_sc",
                 "--out", str(out)]) == 0
    methods = json.loads(out.read_text())["methods"]
    for r in methods.values():
        assert len(r["per_question"]) == 12 and r["tokens_per_question"] > 0
        assert r["accuracy"] == sum(q["correct"] for q in r["per_question"]) / 12


def test_budget_limits_among_the_knobs_become_the_methods_budget():
    from tsllm.envs.toy import FixedTreeEnv, FixedTreePolicyValue, random_tree
    from tsllm.evaluate import run_method

    env = FixedTreeEnv(random_tree(depth=4, branching=3, seed=2))
    toy_pv = lambda *args: FixedTreePolicyValue(env)  # noqa: E731
    knobs = {"num_simulations": 8, "width": 3}
    free = run_method(env, toy_pv, ["root"], "mcts", knobs, progress=False)
    capped = run_method(env, toy_pv, ["root"], "mcts", {**knobs, "max_expansions": 2}, progress=False)
    assert capped["outputs"][0].budget.expansions == 2 < free["outputs"][0].budget.expansions
    assert capped["knobs"] == {**knobs, "max_expansions": 2}  # recorded as given


def test_every_sampling_method_gets_the_rules_and_greedy_the_policy_alone():
    """No baseline lacks the legal-move mask the searches have; greedy stays the policy's own."""
    from tsllm.evaluate import prepare_method

    asked = {}
    for method in ("greedy", "cot_sc", "best_of_n", "best_of_n_checker", "dfs", "mcts_alpha"):
        prepare_method(lambda temperature, guided, rules, m=method: asked.setdefault(m, rules), method, {})
    assert asked == {"greedy": False, "cot_sc": True, "best_of_n": True, "best_of_n_checker": True,
                     "dfs": True, "mcts_alpha": True}


@pytest.mark.parametrize("task", ["game24", "prontoqa"])
def test_eval_without_data_uses_the_held_out_problems_the_loop_evaluates(models, task, tmp_path):
    from tsllm.loop import Loop, LoopConfig

    policy, value = models
    out = tmp_path / "eval.json"
    assert main(["eval", "--task", task, "--policy", str(policy), "--value", str(value), "--seed", "5",
                 "--test-questions", "2", "--methods", "greedy,mcts_alpha", "--set", "mcts_alpha.num_simulations=1",
                 "--set", "mcts_alpha.width=1", "--max-step-tokens", "8", "--out", str(out)]) == 0
    config = LoopConfig(task=task, seed=5, test_questions=2, tracking="none", output_dir=str(tmp_path / "run"))
    loop = Loop(config)  # builds the task only: no stage runs
    held_out = [loop.env.initial_state(p).question for p in loop.test]
    for r in json.loads(out.read_text())["methods"].values():
        assert [q["question"] for q in r["per_question"]] == held_out


def bad_inputs(root: Path, policy: Path, value: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (eval arguments, what the one-line error must say); files made under `root`."""
    (root / "empty.csv").write_text("")
    (root / "binary.jsonl").write_bytes(b"\x00\x01\x02 1 4 6\n")
    (root / "no_config").mkdir(exist_ok=True)
    (root / "a_file").write_text("x")
    base = ["--methods", "greedy", "--data", str(TOT_CSV)]
    return {
        "value model as --policy": (["--policy", str(value), *base],
                                    "--policy: .* holds a LlamaForTokenClassification"),
        "policy as --value": (["--policy", str(policy), "--value", str(policy), "--methods", "greedy",
                               "--data", str(TOT_CSV)], "--value: .* holds a LlamaForCausalLM"),
        "empty data file": (["--policy", str(policy), "--methods", "greedy", "--data", str(root / "empty.csv")],
                            "--data: .* is empty"),
        "binary data file": (["--policy", str(policy), "--methods", "greedy", "--data", str(root / "binary.jsonl")],
                             "--data: .* is a binary file"),
        "folder as --data": (["--policy", str(policy), "--methods", "greedy", "--data", str(root)],
                             "--data: .* is a folder"),
        "config-less --policy": (["--policy", str(root / "no_config"), *base], "--policy: .* has no config.json"),
        "unwritable --out": (["--policy", str(policy), *base, "--out", str(root / "a_file" / "eval.json")],
                             "--out: .* is not a folder"),
    }


@pytest.mark.parametrize("case", ["value model as --policy", "policy as --value", "empty data file",
                                  "binary data file", "folder as --data", "config-less --policy",
                                  "unwritable --out"])
def test_eval_refuses_wrong_inputs_in_one_line_before_decoding(models, case, tmp_path, capsys, monkeypatch):
    import tsllm.evaluate

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoding started before the input was checked")

    monkeypatch.setattr(tsllm.evaluate, "evaluate_methods", no_decoding)
    args, message = bad_inputs(tmp_path, *models)[case]
    with pytest.raises(SystemExit) as stop:
        main(["eval", *args])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("tsllm: "), err
    assert __import__("re").search(message, err), err


def test_eval_warns_about_puzzles_outside_the_rules(models, tmp_path, capsys):
    policy, _ = models
    data = tmp_path / "odd.jsonl"
    data.write_text('{"numbers": [0, 0, 0, 0]}\n{"numbers": [99999999, 1, 4, 6]}\n{"numbers": [4, 9, 10, 13]}\n')
    code = main(["eval", "--policy", str(policy), "--methods", "greedy", "--data", str(data),
                 "--max-step-tokens", "8"])
    assert code == 0
    err = capsys.readouterr().err
    assert "warning: 2 of 3 puzzles have numbers outside 1..13 and 0 cannot make 24" in err
