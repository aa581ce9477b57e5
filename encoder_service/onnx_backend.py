"""The onnxruntime backend: the same weights exported once with ``torch.onnx`` and cached by
their hash, for lower single-request latency on the CPU. Pooling stays sentence-transformers'."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger("seam.encoder.onnx")


class _Exportable(torch.nn.Module):
    """Token vectors (and logits, for a classification head) from named inputs."""

    def __init__(self, model: torch.nn.Module, head: bool) -> None:
        super().__init__()
        self.model, self.head = model, head

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        if self.head:
            out = self.model(**kwargs, output_hidden_states=True)
            return out.hidden_states[-1], out.logits
        return self.model(**kwargs).last_hidden_state


def export(model: torch.nn.Module, *, head: bool, example: dict[str, torch.Tensor], target: Path) -> None:
    """Export to ``target`` atomically: a crash mid-export leaves no half file behind."""
    target.parent.mkdir(parents=True, exist_ok=True)
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in example]
    outputs = ["tokens", "logits"] if head else ["tokens"]
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence", max=4096)
    shapes = {name: {0: batch, 1: seq} for name in names}
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    module = _Exportable(model, head).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's own deprecation chatter, not ours to fix
        program = torch.onnx.export(
            module, tuple(example[n] for n in names), input_names=names, output_names=outputs,
            dynamic_shapes=tuple(shapes[n] for n in names), dynamo=True, external_data=False,
        )
    program.save(str(tmp))
    os.replace(tmp, target)


class OnnxEncoder:
    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def __call__(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        feeds = {name: batch[name].numpy().astype(np.int64, copy=False) for name in self.inputs}
        outputs = self.session.run(None, feeds)
        logits = torch.from_numpy(outputs[1]) if len(outputs) > 1 else None
        return torch.from_numpy(outputs[0]), logits
