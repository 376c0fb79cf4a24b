"""The transformers backend on a real tiny Llama: batching, stops, seeds, log-probs, checks, and
weight updates from a merged checkpoint and from a LoRA adapter."""

import copy
import math
from contextlib import contextmanager

import pytest
import torch

from tsllm.generation import make_generator
from tsllm.generation.hf import HFGenerator
from tsllm.models.tiny import (
    TinyModelConfig,
    build_char_tokenizer,
    build_tiny_llama,
    save_model,
)
from tsllm.types import Generator, SamplingParams

CONTEXT = 96
PROMPTS = ["4 6 8 2", "1 + 1 =", "x", "hello world, this prompt is longer"]


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    tokenizer = build_char_tokenizer()
    config = TinyModelConfig(
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        intermediate_size=64,
        max_position_embeddings=CONTEXT,
        seed=0,
    )
    path = tmp_path_factory.mktemp("models") / "base"
    save_model(build_tiny_llama(config, tokenizer), tokenizer, path)
    return path


@pytest.fixture
def generator(base_dir):
    return HFGenerator(base_dir)


def greedy(max_new_tokens=12, **kwargs):
    return SamplingParams(temperature=0, max_new_tokens=max_new_tokens, **kwargs)


@contextmanager
def recorded_forwards(generator):
    """The input_ids shape of every forward pass the model runs inside the block."""
    shapes = []
    hook = generator.model.register_forward_pre_hook(
        lambda module, args, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    try:
        yield shapes
    finally:
        hook.remove()


def forward_logprob(generator, prompt, token_ids):
    """Sum of log p(token) over the completion, recomputed by one unpadded forward pass."""
    prompt_ids = generator.tokenizer(prompt)["input_ids"]
    ids = torch.tensor([prompt_ids + token_ids])
    with torch.no_grad():
        log_probs = torch.log_softmax(generator.model(ids).logits[0].float(), dim=-1)
    positions = range(len(prompt_ids), len(prompt_ids) + len(token_ids))
    return sum(log_probs[p - 1, ids[0, p]].item() for p in positions)


def test_generator_follows_the_protocol_and_factory_builds_it(base_dir):
    generator = make_generator("hf", base_dir)
    assert isinstance(generator, HFGenerator) and isinstance(generator, Generator)
    with pytest.raises(ValueError, match="choose one of: hf, vllm"):
        make_generator("llama.cpp", base_dir)


def prefills(shapes):
    return [shape for shape in shapes if shape[1] > 1]  # decode steps feed one token per row


def test_all_prompts_share_one_batch_and_each_prompt_is_encoded_once(generator):
    with recorded_forwards(generator) as shapes:
        out = generator.generate(PROMPTS, SamplingParams(n=3, max_new_tokens=8, seed=0))
    # one prefill of the prompts (not of prompts x n), then one-token steps for all 3 samples each
    assert prefills(shapes) == [(len(PROMPTS), max(len(p) for p in PROMPTS) + 1)]
    assert shapes[1] == (len(PROMPTS) * 3, 1)
    assert [len(row) for row in out] == [3] * len(PROMPTS)

    # Above max_batch_size sequences (prompts x n) the prompts are split into chunks.
    generator.max_batch_size = 4
    with recorded_forwards(generator) as shapes:
        generator.generate(PROMPTS + ["y"], SamplingParams(n=2, max_new_tokens=4, seed=0))
    assert [shape[0] for shape in prefills(shapes)] == [2, 2, 1]


def test_greedy_is_deterministic_and_n_copies_agree(generator):
    first = generator.generate(PROMPTS, greedy(n=3))
    second = generator.generate(PROMPTS, greedy(n=3))
    for row_a, row_b in zip(first, second, strict=True):
        assert len({c.text for c in row_a}) == 1
        assert [c.token_ids for c in row_a] == [c.token_ids for c in row_b]


def test_seeded_sampling_is_reproducible_and_leaves_global_rng_alone(generator):
    sampling = SamplingParams(n=4, temperature=1.0, max_new_tokens=10, seed=7)
    torch.manual_seed(123)
    first = generator.generate(PROMPTS, sampling)
    after = torch.rand(1)
    torch.manual_seed(123)
    assert torch.equal(torch.rand(1), after)  # seeding happened in a forked RNG

    second = generator.generate(PROMPTS, sampling)
    other = generator.generate(PROMPTS, SamplingParams(n=4, temperature=1.0, max_new_tokens=10, seed=8))
    def texts(out):
        return [[c.text for c in row] for row in out]
    assert texts(first) == texts(second)
    assert [c.logprob for c in first[0]] == [c.logprob for c in second[0]]
    assert texts(first) != texts(other)
    assert len(set(texts(first)[0])) > 1  # the n samples of one prompt differ


def test_logprobs_and_token_counts_match_a_forward_pass(generator):
    sampling = SamplingParams(n=3, temperature=0.8, top_p=0.9, top_k=20, max_new_tokens=15, seed=1)
    out = generator.generate(PROMPTS, sampling)
    for prompt, row in zip(PROMPTS, out, strict=True):
        for index, completion in enumerate(row):
            assert completion.num_tokens == len(completion.token_ids) > 0
            assert completion.prompt_tokens == len(prompt) + 1  # <bos> + one token per character
            # the prompt is computed for the first sample; the others start from its KV cache
            assert completion.cached_tokens == (0 if index == 0 else completion.prompt_tokens)
            assert completion.finish_reason in {"eos", "length"}
            if completion.finish_reason == "length":
                assert completion.num_tokens == sampling.max_new_tokens
            else:
                assert completion.token_ids[-1] == generator.tokenizer.eos_token_id
            expected = forward_logprob(generator, prompt, completion.token_ids)
            assert completion.logprob == pytest.approx(expected, abs=1e-3)


def test_score_gives_each_continuations_forward_logprob_and_runs_each_prompt_once(generator):
    from tsllm.types import Scorer

    assert isinstance(generator, Scorer)
    # shared prefixes ("3 " of three moves, "3 + " of two) and a continuation that is another's prefix
    continuations = [["3 + 1", "3 * 2", "3 + 4"], [], ["y"], ["abc", "a"]]
    generator.max_batch_size = 3  # the four prompts' six continuations take two batches
    out = generator.score(PROMPTS, continuations)
    assert [[c.text for c in row] for row in out] == continuations
    # each shared prefix is computed once, paid by the first continuation through it
    assert [[c.num_tokens for c in row] for row in out] == [[5, 3, 1], [], [1], [3, 0]]
    for prompt, row in zip(PROMPTS, out):
        for index, c in enumerate(row):
            ids = generator.tokenizer.encode(c.text, add_special_tokens=False)
            assert c.token_ids == ids
            assert c.logprob == pytest.approx(forward_logprob(generator, prompt, ids), abs=1e-4)
            # the prompt is computed once; its other continuations start from its cache
            assert c.prompt_tokens == len(prompt) + 1 and c.cached_tokens == (0 if index == 0 else c.prompt_tokens)
    with pytest.raises(ValueError, match="2 continuation lists for 1 prompts"):
        generator.score(["x"], [["a"], ["b"]])


def test_score_with_a_cutoff_runs_only_the_likely_prefixes_and_scores_them_exactly(generator):
    from tsllm.generation.prefix_tree import likely_enough, paid_for, prefix_tree

    prompt, moves, cutoff = PROMPTS[0], ["3 + 1", "3 * 2", "3 + 4", "7 - 1", "abc", "ab"], 0.5
    ids = [generator.tokenizer.encode(m, add_special_tokens=False) for m in moves]
    tree = prefix_tree(ids)
    # the rule by hand: per depth, the spans under kept prefixes run; those within the cutoff of
    # that depth's likeliest are kept
    prefix_logprob, kept, ran = {}, set(), set()
    for depth in range(1, max(s.depth for s in tree.spans) + 1):
        level = [j for j, s in enumerate(tree.spans) if s.depth == depth and (s.parent < 0 or s.parent in kept)]
        for j in level:
            chain, k = [], j
            while k >= 0:
                chain, k = tree.spans[k].ids + chain, tree.spans[k].parent
            prefix_logprob[j] = forward_logprob(generator, prompt, chain)
        ran |= set(level)
        kept |= likely_enough({j: prefix_logprob[j] for j in level}, cutoff)
    out = generator.score([prompt], [moves], cutoff=cutoff)[0]
    whole = [all(s in kept for s in path) for path in tree.paths]
    assert any(whole) and not all(whole)  # the case tests something
    for row, path, scored in zip(out, tree.paths, whole):
        if scored:
            assert row.logprob == pytest.approx(prefix_logprob[path[-1]], abs=1e-4)
        else:
            assert row.logprob == -math.inf
    assert [c.num_tokens for c in out] == paid_for(tree, ran)
    assert sum(c.num_tokens for c in out) < tree.tokens  # the cut branches were not run
    assert [c.logprob for c in generator.score([prompt], [moves], cutoff=0.0)[0]] == pytest.approx(
        [forward_logprob(generator, prompt, i) for i in ids], abs=1e-4)


def test_left_padding_gives_the_unbatched_greedy_output(generator):
    batched = generator.generate(PROMPTS, greedy(max_new_tokens=16))
    for prompt, row in zip(PROMPTS, batched, strict=True):
        alone = generator.generate([prompt], greedy(max_new_tokens=16))[0][0]
        assert row[0].token_ids == alone.token_ids
        assert row[0].logprob == pytest.approx(alone.logprob, abs=1e-4)


def test_copied_prompt_cache_and_early_stops_match_plain_generate(generator):
    """Each prompt is encoded once and its KV cache copied for its n samples, and rows leave the
    batch as they stop; neither may change a token. With top_k=1 every sample is the greedy
    continuation, which transformers' own `generate` gives as the reference."""
    reference = {}
    for prompt in PROMPTS:
        ids = generator.tokenizer(prompt, return_tensors="pt")
        out = generator.model.generate(**ids, do_sample=False, max_new_tokens=20)
        reference[prompt] = out[0, ids["input_ids"].shape[1] :].tolist()
    # a stop character the first prompt reaches at its 4th token; other rows end at eos or length
    tokenizer = generator.tokenizer
    stops = [tokenizer.decode(reference[PROMPTS[0]][3:4])]
    out = generator.generate(PROMPTS, SamplingParams(n=3, top_k=1, max_new_tokens=20, stop=stops, seed=0))
    lengths = set()
    for prompt, row in zip(PROMPTS, out, strict=True):
        expected = reference[prompt]
        ends = [i for i, t in enumerate(expected) if tokenizer.decode([t], skip_special_tokens=True) in stops]
        expected = expected[: ends[0] + 1] if ends else expected
        assert [c.token_ids for c in row] == [expected] * 3
        lengths.add(len(expected))
    assert len(lengths) > 1  # rows did stop at different steps


def test_stop_string_ends_generation_early_and_is_cut_from_text(generator):
    free = generator.generate(["4 6 8 2"], greedy(max_new_tokens=30))[0][0]
    # A stop string the greedy path will produce: its 6th-8th characters.
    stop_at = 5
    stop = free.text[stop_at : stop_at + 2]
    steps = []
    hook = generator.model.register_forward_hook(lambda *args: steps.append(1))
    try:
        stopped = generator.generate(["4 6 8 2"], greedy(max_new_tokens=30, stop=[stop, "~~~~"]))[0][0]
    finally:
        hook.remove()
    cut = free.text.find(stop)
    assert stopped.finish_reason == "stop"
    assert stopped.text == free.text[:cut] and stop not in stopped.text
    decoded = generator.tokenizer.decode(stopped.token_ids, skip_special_tokens=True)
    assert decoded == free.text[: cut + len(stop)]  # ids run up to and including the stop
    assert stopped.token_ids == free.token_ids[: stopped.num_tokens]
    assert stopped.logprob == pytest.approx(sum_prefix_logprob(generator, free, stopped.num_tokens), abs=1e-4)
    assert len(steps) == stopped.num_tokens < 30  # one forward per generated token, then it stopped


def sum_prefix_logprob(generator, completion, count):
    return forward_logprob(generator, "4 6 8 2", completion.token_ids[:count])


def test_newline_stop_under_sampling(generator):
    out = generator.generate(PROMPTS, SamplingParams(n=16, max_new_tokens=40, stop=["\n"], seed=3))
    completions = [c for row in out for c in row]
    newline = generator.tokenizer.convert_tokens_to_ids("\n")
    assert any(c.finish_reason == "stop" for c in completions)
    for c in completions:
        assert "\n" not in c.text
        if c.finish_reason == "stop":
            assert c.token_ids[-1] == newline and newline not in c.token_ids[:-1]
            assert c.num_tokens == len(c.token_ids) <= 40


def test_bad_input_fails_with_the_cause(generator):
    too_long = "9" * (CONTEXT - 10 + 1)  # + <bos> = limit + 2 tokens
    with pytest.raises(ValueError, match=r"prompt 1 has 88 tokens but at most 86 fit"):
        generator.generate(["ok", too_long], greedy(max_new_tokens=10))
    generator.generate(["ok", too_long[:-2]], greedy(max_new_tokens=10))  # exactly at the limit
    with pytest.raises(ValueError, match="cannot be produced by this tokenizer"):
        generator.generate(["ok"], greedy(stop=["\u00e9"]))
    with pytest.raises(ValueError, match="top_p"):
        generator.generate(["ok"], SamplingParams(top_p=0))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        HFGenerator("/no/such/model/folder")


def test_update_weights_from_a_merged_checkpoint(generator, base_dir, tmp_path):
    model = copy.deepcopy(generator.model)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    save_model(model, generator.tokenizer, tmp_path / "round_1")

    before = generator.generate(PROMPTS, greedy())
    generator.update_weights(str(tmp_path / "round_1"))
    after = generator.generate(PROMPTS, greedy())
    expected = HFGenerator(tmp_path / "round_1").generate(PROMPTS, greedy())
    assert [r[0].token_ids for r in after] == [r[0].token_ids for r in expected]
    assert [r[0].logprob for r in after] == pytest.approx([r[0].logprob for r in expected], abs=1e-4)
    assert [r[0].token_ids for r in after] != [r[0].token_ids for r in before]


def make_adapter(base_dir, path, seed):
    """A LoRA adapter with non-zero B (fresh adapters are zero, i.e. a no-op), and the base model
    with that adapter merged by PEFT itself, saved as the reference."""
    from peft import LoraConfig, get_peft_model

    base = HFGenerator(base_dir).model
    lora = get_peft_model(
        base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"])
    )
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, parameter in lora.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.3)
    lora.save_pretrained(path / "adapter")
    tokenizer = HFGenerator(base_dir).tokenizer
    save_model(lora.merge_and_unload(), tokenizer, path / "merged")
    return path / "adapter", path / "merged"


def test_update_weights_from_lora_adapters(generator, base_dir, tmp_path):
    adapter_a, merged_a = make_adapter(base_dir, tmp_path / "a", seed=1)
    adapter_b, merged_b = make_adapter(base_dir, tmp_path / "b", seed=2)
    assert (adapter_a / "adapter_config.json").is_file()

    def assert_same_outputs(gen, reference):
        ours, theirs = gen.generate(PROMPTS, greedy()), reference.generate(PROMPTS, greedy())
        assert [r[0].token_ids for r in ours] == [r[0].token_ids for r in theirs]
        assert [r[0].logprob for r in ours] == pytest.approx([r[0].logprob for r in theirs], abs=1e-4)

    before = generator.generate(PROMPTS, greedy())
    generator.update_weights(str(adapter_a))
    assert_same_outputs(generator, HFGenerator(merged_a))
    assert [r[0].token_ids for r in generator.generate(PROMPTS, greedy())] != [r[0].token_ids for r in before]

    # A second adapter replaces the first one rather than stacking on it.
    generator.update_weights(str(adapter_b))
    assert_same_outputs(generator, HFGenerator(merged_b))

    # A full checkpoint drops the adapter.
    generator.update_weights(str(base_dir))
    assert_same_outputs(generator, HFGenerator(base_dir))

    with pytest.raises(FileNotFoundError, match="neither adapter_config.json"):
        generator.update_weights(str(tmp_path))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text("{}")
    generator.update_weights(str(adapter_a))
    with pytest.raises(ValueError, match="could not load the LoRA adapter"):
        generator.update_weights(str(broken))
    assert_same_outputs(generator, HFGenerator(merged_a))  # the previous adapter stays in force
