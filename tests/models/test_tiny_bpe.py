"""The tiny BPE model kind: a byte-level BPE tokenizer trained here on a task's text (Qwen2's
special tokens and ChatML template), tiny Qwen2 / Llama (grouped-query) models, `tsllm eval` and
a search-tree walk on them, and a stop string that ends inside a merged token."""

import json
import re
from pathlib import Path

import pytest
import torch

from tests.launch import LIBRARY_DEFAULTS
from tsllm.cli import main
from tsllm.envs import prontoqa
from tsllm.generation.hf import HFGenerator
from tsllm.models.tiny import (
    BPE_SPECIAL_TOKENS,
    TinyModelConfig,
    build_bpe_tokenizer,
    build_tiny,
    load_causal_lm,
    save_model,
)
from tsllm.models.value import build_value_model, save_value_model
from tsllm.tasks import get_task
from tsllm.tasks.base import TaskSettings
from tsllm.types import SamplingParams

FIXTURE = Path(__file__).parents[1] / "envs" / "fixtures" / "prontoqa_tsllm_published.jsonl"
SMALL = dict(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64,
             max_position_embeddings=1024, tokenizer="bpe", vocab_size=400)


def task_texts(n: int = 100) -> list[str]:
    """PrOntoQA's own text: questions and their gold proofs (what the loop's warm start trains on)."""
    return [f"{p['question']} {p['query']}\n{p['solution']}" for p in prontoqa.generate(n, seed=3)]


def test_bpe_tokenizer_is_byte_level_with_chatml_and_exact_decoding():
    tokenizer = build_bpe_tokenizer(task_texts(), vocab_size=400)
    assert 256 + 3 < len(tokenizer) <= 400
    assert [tokenizer.convert_ids_to_tokens(i) for i in range(3)] == list(BPE_SPECIAL_TOKENS)
    assert tokenizer.bos_token is None and tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token == "<|endoftext|>" and tokenizer.padding_side == "left"
    for text in ["Every wumpus is a tumpus.\nMax is a wumpus.\n", "  two  spaces, é ü 数 🙂\r\n\tend", "=\n=1 ="]:
        ids = tokenizer(text)["input_ids"]
        assert tokenizer.decode(ids) == text and tokenizer.unk_token_id is None  # no text is unknown
    assert len(tokenizer(task_texts(1)[0])["input_ids"]) < len(task_texts(1)[0]) / 3  # merges learned
    chat = tokenizer.apply_chat_template([{"role": "system", "content": "Prove it."},
                                          {"role": "user", "content": "Max is a wumpus."}],
                                         tokenize=False, add_generation_prompt=True)
    assert chat == ("<|im_start|>system\nProve it.<|im_end|>\n<|im_start|>user\nMax is a wumpus.<|im_end|>\n"
                    "<|im_start|>assistant\n")
    assert build_bpe_tokenizer(task_texts(), vocab_size=400).get_vocab() == tokenizer.get_vocab()  # deterministic
    with pytest.raises(ValueError, match="vocab_size=100 must be >= 259"):
        build_bpe_tokenizer(task_texts(), vocab_size=100)


@pytest.mark.parametrize("architecture, model_class", [("qwen2", "Qwen2ForCausalLM"), ("llama", "LlamaForCausalLM")])
def test_tiny_architectures_save_and_load_as_their_hf_class(architecture, model_class, tmp_path):
    config = TinyModelConfig(**SMALL, architecture=architecture)
    model, tokenizer = build_tiny(config, task_texts())
    assert type(model).__name__ == model_class and model.config.num_key_value_heads == 1
    assert model.config.vocab_size == len(tokenizer) and model.config.eos_token_id == tokenizer.eos_token_id
    save_model(model, tokenizer, tmp_path / "m")
    loaded, loaded_tokenizer = load_causal_lm(tmp_path / "m")
    assert type(loaded).__name__ == model_class and loaded_tokenizer.get_vocab() == tokenizer.get_vocab()
    assert loaded_tokenizer.chat_template == tokenizer.chat_template
    ids = torch.tensor([tokenizer("Max is a wumpus.\n")["input_ids"]])
    assert torch.equal(loaded(ids).logits, model(ids).logits)
    with pytest.raises(ValueError, match="learns its vocabulary from the task's text"):
        build_tiny(config)


def test_a_stop_string_inside_a_merged_token_cuts_the_text_and_keeps_the_token(monkeypatch):
    """With merges across newlines, "\\n" is generated inside a token such as " =1\\nnex": the step's
    text must end before it, and the completion's token ids (what was generated and paid for) end
    with that token."""
    tokenizer = build_bpe_tokenizer([f"x{i} =1\nnext =1\n" for i in range(50)], vocab_size=300, split_pattern=None)
    model, _ = build_tiny(TinyModelConfig(**SMALL), tokenizer=tokenizer)
    script = tokenizer("x7 =1\nnext")["input_ids"]
    pieces = [tokenizer.decode([token]) for token in script]
    at = next(i for i, piece in enumerate(pieces) if "\n" in piece)
    assert pieces[at].startswith(" =1\n") and len(pieces[at]) > 1  # the stop string shares a token
    generator = HFGenerator(model, tokenizer)
    steps = iter(range(100))
    # the model "draws" the scripted tokens, whatever its random logits say
    monkeypatch.setattr(HFGenerator, "_pick", staticmethod(lambda logits, warpers: torch.full(
        (logits.shape[0],), script[min(next(steps), len(script) - 1)], dtype=torch.long)))
    (completion,) = generator.generate(["Q:\n"], SamplingParams(temperature=0, max_new_tokens=8, stop=["\n"]))[0]
    assert completion.text == "x7 =1" and completion.finish_reason == "stop"
    assert completion.token_ids == script[: at + 1] and completion.num_tokens == at + 1


@pytest.fixture(scope="module")
def bpe_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("bpe_models")
    config = TinyModelConfig(**SMALL, architecture="qwen2")
    policy, tokenizer = build_tiny(config, task_texts())
    save_model(policy, tokenizer, root / "policy")
    value, value_tokenizer = build_value_model(tiny=config, tokenizer=tokenizer)
    assert type(value).__name__ == "Qwen2ForTokenClassification"
    save_value_model(value, value_tokenizer, root / "value")
    return root / "policy", root / "value"


@pytest.mark.parametrize("prompt_format", [[], ["--prompt-format", "chat", "--system-prompt", "Prove it."]],
                         ids=["plain", "chat"])
def test_eval_and_every_search_tree_node_extends_its_parents_tokens(prompt_format, bpe_models, tmp_path):
    """`tsllm eval` (greedy, CoT-SC, MCTS-alpha) on a BPE Qwen2, with the task's prompt or the
    chat template's; then, over every node of every tree it searched, the rule of
    docs/ARCHITECTURE.md: a child's prompt encodes to its parent's token ids followed by its own
    step's."""
    policy, value = bpe_models
    out, trees = tmp_path / "eval.json", tmp_path / "trees"
    assert main(["eval", "--task", "prontoqa", "--policy", str(policy), "--value", str(value),
                 "--data", str(FIXTURE), "--methods", "greedy,cot_sc,mcts_alpha", "--allow-illegal-steps",
                 "--set", "mcts_alpha.num_simulations=3", "--set", "mcts_alpha.width=3",
                 "--max-step-tokens", "6", "--out", str(out), "--trees", str(trees), *prompt_format]) == 0
    methods = json.loads(out.read_text())["methods"]
    assert list(methods) == ["greedy", "cot_sc", "mcts_alpha"]
    assert all(len(m["per_question"]) == 5 and m["tokens_per_question"] > 0 for m in methods.values())

    _, tokenizer = load_causal_lm(policy)
    settings = TaskSettings(base_model=str(policy), prompt_format="chat" if prompt_format else "plain",
                            system_prompt="Prove it." if prompt_format else None)
    env = get_task("prontoqa")(settings).env
    question = env.prompt(env.initial_state(prontoqa.load_jsonl(FIXTURE)[0]))
    if prompt_format:  # the question is the user's turn; the steps are the assistant's lines
        assert question.startswith("<|im_start|>system\nProve it.<|im_end|>\n<|im_start|>user\n")
        assert question.endswith("true or false?<|im_end|>\n<|im_start|>assistant\n")
        assert tokenizer(question)["input_ids"][0] == tokenizer.convert_tokens_to_ids("<|im_start|>")
    else:
        assert question == open(FIXTURE).readline().split('"question": "')[1].split('", "i"')[0].replace(
            '\\"', '"') + "\n"
    problems = prontoqa.load_jsonl(FIXTURE)
    checked = 0
    for index, problem in enumerate(problems):
        nodes = json.loads((trees / "mcts_alpha" / f"{index:04d}.json").read_text())["nodes"]
        states, ids = {}, {}
        for node in nodes:  # depth-first: a parent comes before its children
            me, parent = node["id"], node["parent"]
            states[me] = env.initial_state(problem) if parent is None else env.step(states[parent], node["step"])
            ids[me] = tokenizer(env.prompt(states[me]))["input_ids"]
            if parent is not None:
                assert ids[me][: len(ids[parent])] == ids[parent], node["step"]
                checked += 1
    assert checked >= 5 * 3  # every root got children


def test_one_loop_round_on_a_fresh_bpe_qwen2_in_chat_format(tmp_path):
    """`tiny.tokenizer: bpe` in the loop: the warm start trains the BPE tokenizer on the task's
    rows and a fresh Qwen2 on them; the value model and the round's policy inherit both. With
    `prompt_format: chat` every trainer renders the prompts the search sees: the chat template's."""
    out = tmp_path / "run"
    tiny = ("tiny={hidden_size: 32, num_layers: 1, num_heads: 2, num_kv_heads: 1, intermediate_size: 64, "
            "tokenizer: bpe, architecture: qwen2, vocab_size: 400}")
    assert main(["run", *LIBRARY_DEFAULTS, "--output-dir", str(out), "--no-progress", "rounds=1", "train_questions=6",
                 "test_questions=4", "warmstart.max_seconds=4", "samples_per_question=2", "max_step_tokens=24",
                 "search.knobs={num_simulations: 2, width: 2}", "value.num_train_epochs=1",
                 "policy.num_train_epochs=1", "tracking.report_to=none", tiny,
                 "prompt_format=chat", "system_prompt=Reach 24."]) == 0
    chat = "<|im_start|>system\nReach 24.<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
    assert json.loads((out / "warmstart" / "metrics.json").read_text())["config"]["template"] == chat
    assert json.loads((out / "round_0" / "value" / "metrics.json").read_text())["config"]["template"] == chat
    assert [json.loads(line)["round"] for line in (out / "rounds.jsonl").read_text().splitlines()] == [0, 1]
    policy, tokenizer = load_causal_lm(out / "warmstart" / "model")
    assert type(policy).__name__ == "Qwen2ForCausalLM" and tokenizer.eos_token == "<|im_end|>"
    assert 259 < len(tokenizer) <= 400 and len(tokenizer("(4 + 6) * 2 = 20")["input_ids"]) < 16  # merges
    value_config = json.loads((out / "round_0" / "value" / "model" / "config.json").read_text())
    assert value_config["architectures"] == ["Qwen2ForTokenClassification"]


@pytest.mark.parametrize("overrides, message", [
    (["prompt_format=chat"], "config key 'prompt_format': chat needs a tokenizer with a chat template"),
    (["system_prompt=Be brief."], "config key 'system_prompt': only prompt_format chat has a system turn"),
    (["prompt_format=chat", "system_prompt=Solve {question}"], "config key 'system_prompt': must not hold"),
])
def test_prompt_format_errors_name_the_key(overrides, message):
    from tsllm.config import ConfigError, load_config
    from tsllm.loop_config import LoopConfig
    from tsllm.tasks.base import Task

    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(LoopConfig, None, overrides)
    with pytest.raises(ConfigError, match="task rlhf takes its prompts as they are"):  # the base check of every task
        Task.check.__func__(get_task("rlhf"), TaskSettings(prompt_format="chat"), training=False)


def test_eval_chat_on_a_tokenizer_without_a_chat_template_is_one_line(tmp_path, capsys):
    model, tokenizer = build_tiny(TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2))  # char tokenizer
    save_model(model, tokenizer, tmp_path / "char")
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["eval", "--task", "prontoqa", "--policy", str(tmp_path / "char"), "--data", str(FIXTURE),
              "--methods", "greedy", "--prompt-format", "chat"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--prompt-format: chat, but" in err and "has no chat template" in err, err
