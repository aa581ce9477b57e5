"""ENCODER_PREPACK: float32 Linear weights reordered once for oneDNN give what the plain layers give."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from encoder_service import prepack
from encoder_service.runtime import EncoderRuntime, ModelLoadError
from encoder_service.settings import EncoderSettings

TEXTS = ["Where is my parcel? It should have arrived yesterday.", "hi", "refund " * 300, "a b c d e f"]

pytestmark = pytest.mark.skipif(not prepack.available(), reason="this torch build has no oneDNN linear")


def _runtime(model, **settings) -> EncoderRuntime:
    runtime = EncoderRuntime(EncoderSettings(model=str(model), **settings))
    runtime.load()
    return runtime


def _packed_layers(runtime: EncoderRuntime) -> list[torch.nn.Module]:
    modules = [*runtime._st.modules(), *(runtime._head.modules() if runtime._head is not None else ())]
    return [m for m in modules if isinstance(m, prepack.PackedLinear)]


def _plain_layers(runtime: EncoderRuntime) -> list[torch.nn.Module]:
    modules = [*runtime._st.modules(), *(runtime._head.modules() if runtime._head is not None else ())]
    return [m for m in modules if type(m) is torch.nn.Linear]


@pytest.mark.parametrize("fixture", ["tiny_bert", "tiny_classifier"])
def test_packed_model_gives_what_the_plain_one_gives(fixture, request):
    model = request.getfixturevalue(fixture)
    packed, plain = _runtime(model, prepack=True), _runtime(model)
    assert _packed_layers(packed) and not _plain_layers(packed)
    assert _plain_layers(plain) and not _packed_layers(plain)
    for output in plain.outputs:
        for a, b in zip(packed.encode(TEXTS, output), plain.encode(TEXTS, output)):
            assert a.shape == b.shape and np.abs(a - b).max() < 1e-5, output
    # Same served space: the contracts' canary fingerprints agree as the gateway's check reads them.
    for output in plain.outputs:
        assert np.allclose(packed.outputs[output].contract.space.fingerprint, plain.outputs[output].contract.space.fingerprint, atol=1e-5)


def test_bfloat16_is_not_packed(tiny_bert):
    runtime = _runtime(tiny_bert, precision="bfloat16", prepack=True)
    assert not _packed_layers(runtime)


def test_a_head_model_holds_its_encoder_once(tiny_classifier):
    runtime = _runtime(tiny_classifier)
    assert runtime._st[0].auto_model is runtime._head.base_model
    weights = {id(p) for p in runtime._st.parameters()} | {id(p) for p in runtime._head.parameters()}
    assert len(weights) == len({id(p) for p in runtime._head.parameters()})


def test_packing_that_changes_the_outputs_is_refused(tiny_bert, monkeypatch):
    real = prepack.PackedLinear.forward
    monkeypatch.setattr(prepack.PackedLinear, "forward", lambda self, x: real(self, x) * 1.01)
    with pytest.raises(ModelLoadError, match="ENCODER_PREPACK=false"):
        _runtime(tiny_bert, prepack=True)
