"""The encoder runtime: loads the model, tokenizes, runs forward passes. No HTTP in here.

One forward pass yields all three outputs: the token vectors (``tokens``, padding excluded), their
pooling as the model's sentence-transformers config says (``embedding``) and, when the model has a
sequence-classification head, ``probabilities`` in ``id2label`` order. Which model to load, and the
checks before it loads, are :mod:`encoder_service.loading`'s; tokenizing, :mod:`encoder_service.tokenizing`'s.
"""

from __future__ import annotations

import contextlib
import logging
import math
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules.normalize import Normalize
from transformers import AutoConfig, AutoModelForSequenceClassification

from encoder_service import attention, prepack
from encoder_service.loading import (
    ModelLoadError,
    bfloat16_supported,
    contract_id,
    require_safetensors,
    resolve_model,
    usable_cores,
    weights_sha256,
)
from encoder_service.settings import EncoderSettings
from encoder_service.streams import Streams
from encoder_service.tokenizing import TokenizedText, tokenize
from services.contracts import CANARY_TEXTS, EmbeddingSpace, TensorContract
from services.errors import OutputUnavailable
from services.http.memory import RETURNER

log = logging.getLogger("seam.encoder")

# How far the served model (its Linear layers, its attention) may move an output from the loaded float32
# model's on the canaries (relative to the output's largest magnitude, at least 1). float32 packing and
# padding-free attention only reorder the same sums: 1e-4. bfloat16 matmuls round their inputs to 8
# bits of mantissa: MiniLM's canary outputs move by at most 8.7e-4 (embedding) and 2.3e-3 (tokens);
# 3e-2 leaves room for other models and refuses one whose outputs bfloat16 moves by a few percent.
CANARY_TOLERANCE = {"float32": 1e-4, "bfloat16": 3e-2}


@dataclass(frozen=True)
class Output:
    """An output the encoder can produce: its contract and the contract's stable id."""

    contract: TensorContract
    id: str


class EncoderRuntime:
    """A loaded model. ``load()`` once (slow), then ``tokenize()`` and ``submit()`` from any thread;
    forward passes run one at a time on the runtime's own threads (``Streams``)."""

    def __init__(self, settings: EncoderSettings) -> None:
        self.settings = settings
        self.model_id = ""
        self.outputs: dict[str, Output] = {}
        # The same outputs computed in float32 on request, where the encoder serves another precision.
        self.float32_outputs: dict[str, Output] = {}
        self.ready = False
        self._st: SentenceTransformer | None = None
        self._head: torch.nn.Module | None = None
        self._onnx = None  # OnnxEncoder when ENCODER_BACKEND=onnxruntime
        self._streams: Streams | None = None

    # -- loading -----------------------------------------------------------------------------
    def load(self) -> None:
        """Load the model and describe its outputs; slow, blocks. It runs on the lead thread, where
        every forward pass runs, so torch's thread pool is the one the passes use."""
        settings = self.settings
        threads = settings.threads or usable_cores()
        # onnxruntime shares out its own thread pool: one stream feeds it.
        streams = 1 if settings.backend == "onnxruntime" else settings.streams or threads
        self._streams = Streams(streams, threads)
        self._streams.alone(self._load, threads).result()

    def _load(self, threads: int) -> None:
        settings = self.settings
        folder, self.model_id = resolve_model(settings)
        choice = settings.precision_choice
        if choice.precision == "bfloat16" and not bfloat16_supported():
            raise ModelLoadError("ENCODER_PRECISION=bfloat16 needs a CPU with bfloat16 support (AVX512-BF16 or AMX); use float32 or auto")
        if choice.precision == "bfloat16" and settings.backend == "onnxruntime":
            raise ModelLoadError("ENCODER_BACKEND=onnxruntime computes in float32; set ENCODER_PRECISION=float32 (or auto) or use torch")
        log.info("computing in %s: %s", choice.precision, choice.reason)
        RETURNER.fixed_mmap_threshold()
        log.info("loading %s from %s", self.model_id, folder)
        require_safetensors(folder)
        # Loaded in float32, as trained: in bfloat16 only the Linear layers compute in bfloat16 (prepack.py).
        try:
            self._st = SentenceTransformer(
                str(folder), device="cpu", local_files_only=True, model_kwargs={"use_safetensors": True, "dtype": torch.float32}
            )
            config = AutoConfig.from_pretrained(folder, local_files_only=True)
            if any(a.endswith("ForSequenceClassification") for a in config.architectures or ()):
                self._head = AutoModelForSequenceClassification.from_pretrained(
                    folder, local_files_only=True, use_safetensors=True, dtype=torch.float32
                ).eval()
                # The head's encoder is the same network: share it rather than hold the weights twice.
                # (``auto_model`` is a read-only view of ``model``; assigning it would add a copy.)
                self._st[0].model = self._head.base_model
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot load a transformer from {folder}: {exc}") from exc
        self._st.eval()
        sha = weights_sha256(folder)
        if settings.backend == "onnxruntime":
            self._onnx = self._load_onnx(sha, threads)
            canaries = {"float32": self._canaries()}
        else:
            canaries = self._serve(choice.precision)
        self._describe_outputs(sha, config, canaries)
        self.ready = True
        log.info("ready: %s outputs %s", self.model_id, sorted(self.outputs))

    def _serve(self, precision: str) -> dict[str, list[dict[str, np.ndarray]]]:
        """Switch the model to attention that never sees padding (``attention.py``) and its Linear
        layers to ones computing in ``precision``, oneDNN-packed where asked and possible (with the
        GELU that follows a packed one fused into it and, in bfloat16, each attention layer's query, key
        and value computed as one); then check on the canaries that the model still gives what it gave
        as loaded, in float32 (and in bfloat16, that its float32 passes on request do too). Returns the
        canaries' outputs as served, by precision: ``precision``'s, and float32's on request."""
        assert self._st is not None
        packed = self.settings.packs_weights and prepack.available()
        if self.settings.packs_weights and not packed:
            log.warning("ENCODER_PREPACK=true, but this torch build has no oneDNN linear: serving the weights unpacked")
        before = self._canaries()
        attention.use_exact(self._head if self._head is not None else self._st[0].auto_model)
        models = [model for model in (self._st, self._head) if model is not None]
        plain: list[torch.nn.Linear] = []
        joined: list[torch.nn.Linear] = []
        if precision != "float32" or packed:  # else nn.Linear as loaded computes just that
            dtype = getattr(torch, precision)
            for model in models:
                if packed and precision == "bfloat16":  # in float32, one wide GEMM was slower than three
                    joined += prepack.fuse_projections(model, dtype)
                plain += prepack.serve_linears(model, dtype, packed)
        fused = sum(prepack.fuse_gelu(model) for model in models)
        released = prepack.page_out_weights(plain + joined)
        fix = "set ENCODER_PREPACK=false" if precision == "float32" else "set ENCODER_PRECISION=float32"
        canaries = {precision: self._canaries()}
        self._vet(before, canaries[precision], precision, f"{precision} {'oneDNN-packed ' if packed else ''}Linear "
                  "layers and padding-free attention", fix)
        if precision != "float32":  # float32 on request, from the loaded weights: as close as float32 packing is
            mapped, resident = prepack.map_float32_weights(models)
            canaries["float32"] = self._canaries(float32=True)
            self._vet(before, canaries["float32"], "float32", "float32 passes on request", fix)
            log.info("float32 on request: %.0f MB of float32 weights read from the mapped file when asked, %.0f MB "
                     "held in memory", mapped / 2**20, resident / 2**20)
        log.info("%d Linear layers compute in %s%s (%d with their GELU fused, %d attention layers' query, key and value "
                 "as one); %.0f MB of their float32 weights handed back", len(plain + joined), precision,
                 ", packed for oneDNN" if packed else "", fused, len(joined) // len(prepack.PROJECTIONS), released / 2**20)
        return canaries

    @staticmethod
    def _vet(before: list[dict[str, np.ndarray]], after: list[dict[str, np.ndarray]], precision: str, what: str,
             fix: str) -> None:
        """ModelLoadError unless ``after`` (the canaries as served) is within ``precision``'s tolerance of
        ``before`` (as loaded, in float32)."""
        tolerance = CANARY_TOLERANCE[precision]
        for was, now in zip(before, after):
            for name in was:
                scale = max(1.0, float(np.abs(was[name]).max()))
                drift = float(np.abs(was[name] - now[name]).max())
                if drift > tolerance * scale:
                    raise ModelLoadError(
                        f"{what} change the {name} output by {drift:.2e} on the canaries (at most {tolerance:.0e} "
                        f"allowed); {fix}"
                    )

    @property
    def max_tokens(self) -> int:
        assert self._st is not None
        return int(self._st.max_seq_length)

    def _load_onnx(self, sha: str, threads: int):
        from encoder_service.onnx_backend import OnnxEncoder, export

        target = Path(self.settings.cache_dir) / f"{sha[:24]}-{'head' if self._head else 'base'}.onnx"
        if not target.exists():
            log.info("exporting %s to ONNX at %s (once; cached by weight hash)", self.model_id, target)
            example = self._pad(self.tokenize(["an example sentence to trace", "hi"]))
            model = self._head if self._head is not None else self._st[0].auto_model
            export(model, head=self._head is not None, example=example, target=target)
        return OnnxEncoder(target, threads)

    def _canaries(self, float32: bool = False) -> list[dict[str, np.ndarray]]:
        """Every output the model has, for the canary texts."""
        return self._forward(self.tokenize(list(CANARY_TEXTS)),
                             ["embedding", "tokens"] + (["probabilities"] if self._head else []), float32)

    def _describe_outputs(self, sha: str, config, canaries: dict[str, list[dict[str, np.ndarray]]]) -> None:
        """``outputs``, and ``float32_outputs`` where the encoder serves another precision, from the
        canaries' outputs by precision (``_serve``'s)."""
        served = self.settings.compute_precision
        self.outputs = self._contracts(sha, config, canaries[served], served)
        if served != "float32":
            self.float32_outputs = self._contracts(sha, config, canaries["float32"], "float32")

    def _contracts(self, sha: str, config, canaries: list[dict[str, np.ndarray]], dtype: str) -> dict[str, Output]:
        assert self._st is not None
        pooling = getattr(self._st[1], "pooling_mode", None) if len(self._st) > 1 else None
        space = EmbeddingSpace(
            model_id=self.model_id,
            weights_sha256=sha,
            pooling=str(pooling or "none"),
            normalized=any(isinstance(m, Normalize) for m in self._st),
            max_tokens=self.max_tokens,
            fingerprint=[[round(float(x), 6) for x in row["embedding"]] for row in canaries],
        )
        contracts = {
            "embedding": TensorContract(kind="embedding", dim=len(canaries[0]["embedding"]), dtype=dtype, space=space),
            "tokens": TensorContract(kind="tokens", dim=canaries[0]["tokens"].shape[1], dtype=dtype, space=space),
        }
        if self._head is not None:
            labels = [str(config.id2label[i]) for i in range(config.num_labels)]
            contracts["probabilities"] = TensorContract(
                kind="probabilities", dim=len(labels), dtype=dtype, space=space, labels=labels
            )
        return {name: Output(c, contract_id(c)) for name, c in contracts.items()}

    def output(self, name: str, float32: bool = False) -> Output:
        """``name``'s contract as served, or as computed on request in float32 (the served one where the
        encoder serves float32)."""
        try:
            return (self.float32_outputs or self.outputs)[name] if float32 else self.outputs[name]
        except KeyError:
            if name == "probabilities":
                raise OutputUnavailable(
                    f"model {self.model_id} has no sequence-classification head, so it has no probabilities; "
                    f"ask for one of {sorted(self.outputs)}"
                ) from None
            raise OutputUnavailable(f"unknown output {name!r}; this encoder offers {sorted(self.outputs)}") from None

    # -- inference ---------------------------------------------------------------------------
    def tokenize(self, texts: list[str]) -> list[TokenizedText]:
        """Token ids per text, truncated to the model window (see :func:`encoder_service.tokenizing.tokenize`)."""
        assert self._st is not None
        return tokenize(self._st[0].tokenizer, texts, self.max_tokens)

    def submit(self, items: list[TokenizedText], want: list[str], float32: bool = False
               ) -> Future[list[dict[str, np.ndarray]]]:
        """Queue a forward pass on the runtime's lead thread (what the batcher awaits); ``float32``: computed
        in float32 from the loaded weights whatever the served precision (``prepack.in_float32``)."""
        assert self._streams is not None, "load() first"
        return self._streams.submit(self._forward, items, want, float32)

    @torch.inference_mode()
    def _forward(self, items: list[TokenizedText], want: list[str], float32: bool = False) -> list[dict[str, np.ndarray]]:
        """Texts are length-sorted and cut into micro-batches so little padding is computed; the
        micro-batches run side by side on the streams, largest first."""
        assert self._st is not None and self._streams is not None
        results: list[dict[str, np.ndarray]] = [{} for _ in items]
        order = sorted(range(len(items)), key=lambda i: items[i].n_tokens)
        chunks = self._micro_batches(order, items)
        chunks.sort(key=lambda chunk: len(chunk) * items[chunk[-1]].n_tokens, reverse=True)
        self._streams.map(lambda chunk: self._run_chunk(chunk, items, want, results, float32), chunks)
        RETURNER.maybe_trim()  # here, on the lead thread: never on the event loop
        return results

    def _run_chunk(self, chunk: list[int], items: list[TokenizedText], want: list[str],
                   results: list[dict[str, np.ndarray]], float32: bool) -> None:
        batch = self._pad([items[i] for i in chunk])
        with prepack.in_float32() if float32 else contextlib.nullcontext():  # on the stream's own thread
            features = self._encode_batch(batch)
        lengths = batch["attention_mask"].sum(dim=1).tolist()
        pooled = features["sentence_embedding"].float().numpy()
        tokens = features["token_embeddings"].float().numpy() if "tokens" in want else None
        probs = features["probabilities"].float().numpy() if "probabilities" in features else None
        for row, i in enumerate(chunk):
            out = results[i]
            if "embedding" in want:
                out["embedding"] = pooled[row]
            if tokens is not None:
                out["tokens"] = tokens[row, : lengths[row]]
            if probs is not None and "probabilities" in want:
                out["probabilities"] = probs[row]

    def _micro_batches(self, order: list[int], items: list[TokenizedText]) -> list[list[int]]:
        """Cut length-sorted texts into micro-batches of about ``micro_batch_tokens`` padded tokens (and
        at most ``max_batch_size`` texts), in whole rounds of the streams: 3 micro-batches on 2 streams
        would leave one stream idle while the other computes the third."""
        assert self._streams is not None
        streams = self._streams.streams
        total = sum(items[i].n_tokens for i in order)
        target = streams * math.ceil(total / (streams * self.settings.micro_batch_tokens))
        budget = math.ceil(total / target)
        batches = self._cut(order, items, budget)
        for _ in range(16):  # padding makes the cut overshoot: widen the budget until it fits the rounds
            if len(batches) <= target:
                break
            budget = math.ceil(budget * 1.1)
            batches = self._cut(order, items, budget)
        return batches

    def _cut(self, order: list[int], items: list[TokenizedText], budget: int) -> list[list[int]]:
        limit = self.settings.max_batch_size
        batches: list[list[int]] = []
        current: list[int] = []
        for i in order:  # ascending length: the last one added sets the padded width
            if current and (len(current) >= limit or (len(current) + 1) * items[i].n_tokens > budget):
                batches.append(current)
                current = []
            current.append(i)
        if current:
            batches.append(current)
        return batches

    def _pad(self, items: list[TokenizedText]) -> dict[str, torch.Tensor]:
        width = max(item.n_tokens for item in items)
        ids = torch.zeros((len(items), width), dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        batch = {"input_ids": ids, "attention_mask": mask}
        if items[0].token_type_ids is not None:
            batch["token_type_ids"] = torch.zeros((len(items), width), dtype=torch.long)
        pad_id = self._st[0].tokenizer.pad_token_id or 0
        ids.fill_(pad_id)
        for row, item in enumerate(items):
            n = item.n_tokens
            ids[row, :n] = torch.tensor(item.input_ids)
            mask[row, :n] = 1
            if item.token_type_ids is not None:
                batch["token_type_ids"][row, :n] = torch.tensor(item.token_type_ids)
        return batch

    def _token_vectors(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The transformer itself: token vectors, and logits when there is a classification head."""
        if self._onnx is not None:
            return self._onnx(batch)
        if self._head is not None:
            out = self._head(**batch, output_hidden_states=True)
            return out.hidden_states[-1], out.logits
        return self._st[0](dict(batch))["token_embeddings"], None

    def _encode_batch(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        assert self._st is not None
        tokens, logits = self._token_vectors(batch)
        features = {**batch, "token_embeddings": tokens}
        for module in list(self._st)[1:]:  # pooling, normalisation, ... as the model's config says
            features = module(features)
        if logits is not None:
            features["probabilities"] = logits.float().softmax(dim=-1)
        return features

    def close(self) -> None:
        """Let the passes already queued finish, then stop the runtime's threads."""
        if self._streams is not None:
            self._streams.shutdown()
