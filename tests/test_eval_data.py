"""`tsllm eval --data` on every benchmark file layout, end to end with the tiny policy (and reward
model for rlhf): each fixture in tests/envs/fixtures is read in its own layout and every problem
in it is evaluated in file order; a bad row stops the command in one line naming file and line."""

import csv
import json
import re
from pathlib import Path

import pytest

from tests.test_evaluate import models  # noqa: F401  (the tiny policy, value and reward model)
from tsllm.cli import main

FIXTURES = Path(__file__).parent / "envs" / "fixtures"


def jsonl(name: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines() if line.strip()]


def published_prontoqa() -> list[str]:
    examples = json.loads((FIXTURES / "prontoqa_sample.json").read_text()).values()
    return [f"{e['question']} {e['query']}" for e in (x.get("test_example", x) for x in examples)]


# layout -> (task, fixture, the question texts the policy must be shown, in order: read here without
# the task's loaders)
LAYOUTS = {
    "game24 Tree-of-Thoughts CSV": ("game24", "24_tot_sample.csv", lambda: [
        r["Puzzles"] for r in csv.DictReader((FIXTURES / "24_tot_sample.csv").read_text().splitlines())]),
    "game24 TS-LLM jsonl": ("game24", "game24_tsllm.jsonl",
                            lambda: [r["question"] for r in jsonl("game24_tsllm.jsonl")]),
    "gsm8k question/answer jsonl": ("gsm8k", "gsm8k_sample.jsonl",
                                    lambda: [r["question"] for r in jsonl("gsm8k_sample.jsonl")]),
    "prontoqa published json": ("prontoqa", "prontoqa_sample.json", published_prontoqa),
    "prontoqa TS-LLM test jsonl": ("prontoqa", "prontoqa_tsllm_test.jsonl",
                                   lambda: [r["question"] for r in jsonl("prontoqa_tsllm_test.jsonl")]),
    "prontoqa TS-LLM published test.jsonl": ("prontoqa", "prontoqa_tsllm_published.jsonl",
                                             lambda: [r["question"] for r in jsonl("prontoqa_tsllm_published.jsonl")]),
    "rlhf prompt jsonl": ("rlhf", "rlhf_prompts.jsonl", lambda: [r["prompt"] for r in jsonl("rlhf_prompts.jsonl")]),
    "rlhf prompt text": ("rlhf", "rlhf_prompts.txt",
                         lambda: [line for line in (FIXTURES / "rlhf_prompts.txt").read_text().splitlines() if line]),
}


def eval_args(task: str, data: Path, policy: Path) -> list[str]:
    args = ["eval", "--task", task, "--policy", str(policy), "--data", str(data), "--methods", "greedy",
            "--max-step-tokens", "8"]
    if task == "rlhf":
        args += ["--reward-model", str(policy.parent / "reward"), "--max-response-tokens", "4"]
    return args


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_eval_reads_each_benchmark_layout_end_to_end(layout, models, tmp_path):  # noqa: F811
    task, fixture, questions = LAYOUTS[layout]
    out = tmp_path / "eval.json"
    assert main([*eval_args(task, FIXTURES / fixture, models[0]), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    expected = questions()
    assert result["task"] == task and result["questions"] == len(expected) >= 2
    greedy = result["methods"]["greedy"]
    assert [q["question"] for q in greedy["per_question"]] == expected
    assert all(q["tokens"] > 0 for q in greedy["per_question"])


# layout -> (task, file name, content with a bad row, what the one-line error says after "<file>:")
BAD_ROWS = {
    "game24 CSV puzzle": ("game24", "24.csv", "Rank,Puzzles,AMT (s)\n1,1 1 4 6,3.0\n2,1 1 four 6,3.1\n",
                          r"3: expected four integers like '1 1 4 6', got '1 1 four 6'"),
    "game24 TS-LLM puzzle": ("game24", "test.jsonl", '{"question": "1 1 4 6", "answer": ""}\n'
                                                     '{"question": "1 1 4", "answer": ""}\n', r"2: expected four"),
    "gsm8k answer": ("gsm8k", "test.jsonl", '{"question": "q", "answer": "1+1=2\\n#### 2"}\n'
                                            '{"question": "q", "answer": "no marker"}\n',
                     r"2: the answer has no '####"),
    "prontoqa json": ("prontoqa", "test.json", '{\n  "ex": {\n    "question": "x",\n  }\n}\n', r"4: invalid JSON"),
    "prontoqa json example": ("prontoqa", "test.json", '{"ex1": {"question": "Sam is a a.", "query": "True or false: '
                                                       'Sam is a a.", "answer": "True"},\n "ex2": {"question": "x"}}\n',
                              r"2: example 'ex2': missing field\(s\) \['query', 'answer'\]"),
    "prontoqa TS-LLM query": ("prontoqa", "test.jsonl",
                              '{"question": "Sam is a a.", "answer": [{"text": "The answer is true.", '
                              '"correct": true}]}\n',
                              r"1: the question has no 'True or false: \.\.\.' or 'Is the statement"),
    "rlhf prompt": ("rlhf", "prompts.jsonl", '{"prompt": "Say hi."}\n{"prompt": 3}\n', r"2: 'prompt' must be a string"),
}


@pytest.mark.parametrize("layout", list(BAD_ROWS))
def test_a_bad_row_stops_eval_in_one_line_naming_file_and_line(layout, models, tmp_path, capsys):  # noqa: F811
    task, name, content, message = BAD_ROWS[layout]
    data = tmp_path / name
    data.write_text(content)
    assert main(eval_args(task, data, models[0])) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert re.fullmatch(rf"tsllm: {re.escape(str(data))}:{message}.*", err), err


def test_a_hub_id_that_cannot_be_reached_stops_eval_in_one_line(models, capsys):  # noqa: F811
    assert main(eval_args("gsm8k", Path("tsllm-tests/no-such-gsm8k"), models[0])) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("tsllm: tsllm-tests/no-such-gsm8k: the hub dataset cannot be loaded"), err


def test_ranks_keep_a_tot_csv_rank_range_end_to_end(models, tmp_path):  # noqa: F811
    out = tmp_path / "eval.json"
    rows = list(csv.DictReader((FIXTURES / "24_tot_sample.csv").read_text().splitlines()))
    kept = [r["Puzzles"] for r in rows if 901 <= int(r["Rank"]) <= 1000]
    assert 2 <= len(kept) < len(rows)  # the fixture has rows on both sides of ToT's test range
    args = eval_args("game24", FIXTURES / "24_tot_sample.csv", models[0])
    assert main([*args, "--ranks", "901-1000", "--out", str(out)]) == 0
    greedy = json.loads(out.read_text())["methods"]["greedy"]
    assert [q["question"] for q in greedy["per_question"]] == kept


# --ranks misuse, refused before any model loads -> (task, file given, --ranks, what the usage error says)
BAD_RANKS = {
    "no csv": ("game24", "game24_tsllm.jsonl", "901-1000", "--ranks: ranks cut a Tree-of-Thoughts ranked CSV"),
    "reversed": ("game24", "24_tot_sample.csv", "1000-901", "--ranks: expected ranks lo-hi with 1 <= lo <= hi, "
                                                            "got 1000-901"),
    "unranked task": ("gsm8k", "gsm8k_sample.jsonl", "1-2", "--ranks: task gsm8k has no ranked problems file"),
    "malformed": ("game24", "24_tot_sample.csv", "901", "expected LO-HI such as 901-1000, got '901'"),
}


@pytest.mark.parametrize("case", list(BAD_RANKS))
def test_bad_ranks_stop_eval_naming_the_flag(case, models, capsys):  # noqa: F811
    task, fixture, ranks, message = BAD_RANKS[case]
    with pytest.raises(SystemExit):
        main([*eval_args(task, FIXTURES / fixture, models[0]), "--ranks", ranks])
    assert message in capsys.readouterr().err


def test_a_rank_range_with_no_row_stops_eval_in_one_line_naming_the_file(models, capsys):  # noqa: F811
    data = FIXTURES / "24_tot_sample.csv"
    assert main([*eval_args("game24", data, models[0]), "--ranks", "2000-3000"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"tsllm: {data}: no puzzle has a rank in 2000-3000", err
