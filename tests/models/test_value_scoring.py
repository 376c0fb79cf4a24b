"""Scoring many prefixes of one search tree: texts that share a beginning are scored from one
computation of it, and that must give exactly the values of scoring every text whole."""

import pytest

from tsllm.envs.game24 import Game24Env, make_problem
from tsllm.models.tiny import TinyModelConfig
from tsllm.models.value import ValueFunction, build_value_model, shared_prefix_groups

TINY = TinyModelConfig(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, max_position_embeddings=256)


def tree_texts():
    """What one round of a tree search scores: the children of two expanded nodes (siblings share
    their parent's text), a node scored with its own children, and another puzzle's root."""
    env = Game24Env()
    root = env.initial_state(make_problem([4, 9, 10, 13]))
    child = env.step(root, "13 - 9 = 4 (left: 4 4 10)")
    kids = [env.step(child, step)
            for step in ("4 + 4 = 8 (left: 8 10)", "10 - 4 = 6 (left: 4 6)", "4 * 4 = 16 (left: 10 16)")]
    other = env.step(root, "10 - 4 = 6 (left: 6 9 13)")
    grandkids = [env.step(other, step) for step in ("6 + 9 = 15 (left: 13 15)", "x", "13 - 9 = 4 (left: 4 6)")]
    far = env.initial_state(make_problem([1, 1, 1, 1]))
    return [env.prompt(s) for s in [*kids, *grandkids, child, far, env.step(far, "1 + 1 = 2 (left: 1 1 2)")]]


def test_groups_are_the_cheapest_runs_of_rows_that_share_a_prefix():
    rows = {"a": [1, 5, 6, 7], "b": [1, 5, 6, 7, 8, 9], "c": [1, 5, 6, 7, 3], "d": [1, 2]}
    groups = shared_prefix_groups(list(rows.values()))
    # a, b and c share [1, 5, 6] (a needs one token of its own); d shares only <bos> with them,
    # and pulling it in would cut their shared prefix from 3 tokens to 1
    assert groups == [(1, [3]), (3, [0, 2, 1])]
    assert shared_prefix_groups([[1, 2, 3]]) == [(2, [0])]
    assert shared_prefix_groups([[1, 2], [1, 2]]) == [(1, [0, 1])]  # duplicates: one group


@pytest.mark.parametrize("max_batch_size", [64, 2])
def test_shared_prefix_scoring_gives_the_values_of_whole_texts(max_batch_size):
    model, tokenizer = build_value_model(tiny=TINY)
    texts = tree_texts()
    whole = ValueFunction(model, tokenizer, max_batch_size=max_batch_size, share_prefixes=False)
    shared = ValueFunction(model, tokenizer, max_batch_size=max_batch_size)
    expected = whole(texts)
    assert shared(texts) == pytest.approx(expected, abs=1e-5)
    assert len({round(v, 5) for v in expected}) == len(texts)  # the texts really score differently
    assert shared.tokens_scored == whole.tokens_scored == whole.tokens_computed
    if max_batch_size == 64:  # each parent's text is run once for all its children
        assert shared.tokens_computed < 0.6 * whole.tokens_computed
    assert shared([]) == []


def test_bidirectional_models_score_whole_texts():
    from transformers import BertConfig, BertForTokenClassification

    from tsllm.models.tiny import build_char_tokenizer

    tokenizer = build_char_tokenizer()
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, num_labels=1, pad_token_id=tokenizer.pad_token_id)
    scorer = ValueFunction(BertForTokenClassification(config), tokenizer)
    assert not scorer.share_prefixes  # a later token changes an earlier one's value: no splitting
    scorer(tree_texts())
    assert scorer.tokens_computed == scorer.tokens_scored


def test_kept_kv_caches_score_later_children_from_their_parents():
    model, tokenizer = build_value_model(tiny=TINY)
    env = Game24Env()
    root = env.initial_state(make_problem([4, 9, 10, 13]))
    parents = [env.step(root, s) for s in ("13 - 9 = 4 (left: 4 4 10)", "10 - 4 = 6 (left: 6 9 13)")]
    steps = ("4 + 4 = 8 (left: 8 10)", "9 + 6 = 15 (left: 13 15)")
    children = [env.step(p, s) for p in parents for s in steps]
    whole = ValueFunction(model, tokenizer, share_prefixes=False)
    kept = ValueFunction(model, tokenizer)
    kept([env.prompt(s) for s in [root, *parents]])  # round 1 scores the parents
    before = kept.tokens_computed
    texts = [env.prompt(s) for s in children]
    assert kept(texts) == pytest.approx(whole(texts), abs=1e-5)  # round 2, from the parents' KV
    # one token per character: a child's own tokens are the characters after its parent's text
    own_tokens = sum(len(env.prompt(env.step(p, s))) - len(env.prompt(p)) for p in parents for s in steps)
    assert kept.tokens_computed - before == own_tokens  # only the children's own steps ran

    kept.clear_cache()
    kept(texts)
    assert kept.tokens_computed - before > 2 * own_tokens  # without the parents, their text runs again
    tiny_store = ValueFunction(model, tokenizer, kv_cache_mib=0.05)  # ~50 KB: a few short texts
    tiny_store([env.prompt(s) for s in [root, *parents, *children]])
    assert 0 < tiny_store.kv_store.bytes <= 0.05 * 2**20  # least recently used entries were dropped
    with pytest.raises(ValueError, match="kv_cache_mib must be >= 0"):
        ValueFunction(model, tokenizer, kv_cache_mib=-1)


def test_batches_put_texts_with_as_many_own_tokens_together():
    # every layer runs a batch's own tokens (those after each text's prefix) padded to the longest,
    # so texts are batched by that length, whatever their prefixes: here two short and two long rests
    model, tokenizer = build_value_model(tiny=TINY)
    scorer = ValueFunction(model, tokenizer, max_batch_size=2)
    rows = [[1] * 13, [1] * 5, [1] * 30, [1] * 22]
    groups = [(10, [0]), (2, [1]), (10, [2]), (2, [3])]  # (prefix, members): rests 3, 3, 20, 20
    batches = list(scorer._batches(rows, groups))
    rests = [sorted(len(rows[i]) - prefix for prefix, members in batch for i in members) for batch in batches]
    assert rests == [[3, 3], [20, 20]]
