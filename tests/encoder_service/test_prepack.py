"""ENCODER_PREPACK (on by default): Linear weights reordered once for oneDNN give what the plain layers
give, leave no second copy resident, and come with bounded oneDNN caches; bfloat16 is bfloat16 Linear
layers over a float32 stream."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from encoder_service import prepack
from encoder_service.__main__ import BFLOAT16_CACHE_ENTRIES, PACKED_CACHE_ENTRIES, library_env
from encoder_service.runtime import EncoderRuntime, ModelLoadError
from encoder_service.settings import EncoderSettings
from tests.encoder_service import encode
from tests.processes import ROOT
from tests.support import needs_pageout

TEXTS = ["Where is my parcel? It should have arrived yesterday.", "hi", "refund " * 300, "a b c d e f"]

pytestmark = pytest.mark.skipif(not prepack.available(), reason="this torch build has no oneDNN linear")


def _runtime(model, **settings) -> EncoderRuntime:
    runtime = EncoderRuntime(EncoderSettings(model=str(model), **settings))
    runtime.load()
    return runtime


def _packed_layers(runtime: EncoderRuntime) -> list[torch.nn.Module]:
    modules = [*runtime._st.modules(), *(runtime._head.modules() if runtime._head is not None else ())]
    return [m for m in modules if isinstance(m, prepack.ServedLinear) and m.packed]


def _plain_layers(runtime: EncoderRuntime) -> list[torch.nn.Module]:
    modules = [*runtime._st.modules(), *(runtime._head.modules() if runtime._head is not None else ())]
    return [m for m in modules if type(m) is torch.nn.Linear]


@pytest.mark.parametrize("fixture", ["tiny_bert", "tiny_classifier"])
def test_packed_model_gives_what_the_plain_one_gives(fixture, request):
    model = request.getfixturevalue(fixture)
    packed, plain = _runtime(model, prepack=True), _runtime(model, prepack=False)
    assert _packed_layers(packed) and not _plain_layers(packed)
    assert _plain_layers(plain) and not _packed_layers(plain)
    # Each intermediate layer's GELU is fused into its packed dense layer (and only where packed).
    intermediate = [m for m in packed._st.modules() if type(m).__name__ == "BertIntermediate"]
    assert intermediate and all(m.dense.gelu == "none" and isinstance(m.intermediate_act_fn, torch.nn.Identity)
                                for m in intermediate)
    assert {m.gelu for m in _packed_layers(packed)} == {None, "none"}
    assert not any(isinstance(m.intermediate_act_fn, torch.nn.Identity) for m in plain._st.modules()
                   if type(m).__name__ == "BertIntermediate")
    for output in plain.outputs:
        for a, b in zip(encode(packed, TEXTS, output), encode(plain, TEXTS, output)):
            assert a.shape == b.shape and np.abs(a - b).max() < 1e-5, output
    # Same served space: the contracts' canary fingerprints agree as the gateway's check reads them.
    for output in plain.outputs:
        assert np.allclose(packed.outputs[output].contract.space.fingerprint, plain.outputs[output].contract.space.fingerprint, atol=1e-5)


@pytest.mark.parametrize("packed", [True, False])
def test_bfloat16_computes_the_linear_layers_in_bfloat16_and_the_rest_in_float32(tiny_bert, packed):
    runtime = _runtime(tiny_bert, precision="bfloat16", prepack=packed)
    served = [m for m in runtime._st.modules() if isinstance(m, prepack.ServedLinear)]
    assert served and not _plain_layers(runtime)
    assert {(m.dtype, m.packed) for m in served} == {(torch.bfloat16, packed)}
    # The stream between them stays float32: embeddings, layer norms, the outputs themselves.
    others = [p.dtype for m in runtime._st.modules() if not isinstance(m, prepack.ServedLinear) for p in m.parameters(recurse=False)]
    assert others and set(others) == {torch.float32}
    float32 = _runtime(tiny_bert, precision="float32", prepack=False)
    for a, b in zip(encode(runtime, TEXTS, "embedding"), encode(float32, TEXTS, "embedding")):
        assert a.dtype == np.float32 and float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) > 0.999


@pytest.mark.parametrize("fixture", ["tiny_bert", "tiny_classifier"])
def test_bfloat16_computes_each_attention_layers_query_key_and_value_as_one_layer(fixture, request, monkeypatch):
    model = request.getfixturevalue(fixture)
    joined = _runtime(model, precision="bfloat16", prepack=True)
    modules = [*joined._st.modules(), *joined._head.modules()] if joined._head is not None else [*joined._st.modules()]
    attention = [m for m in modules if type(m).__name__ == "BertSelfAttention"]
    assert attention and all(isinstance(getattr(m, name), prepack.Projection) for m in attention for name in prepack.PROJECTIONS)
    monkeypatch.setattr(prepack, "fuse_projections", lambda module, dtype: [])
    apart = _runtime(model, precision="bfloat16", prepack=True)
    assert not any(isinstance(m, prepack.Projection) for m in apart._st.modules())
    for output in apart.outputs:
        for a, b in zip(encode(joined, TEXTS, output), encode(apart, TEXTS, output)):
            assert a.shape == b.shape and np.abs(a - b).max() < 1e-5, output
    # In float32 (where one wide layer was slower) and unpacked, the three stay apart.
    monkeypatch.undo()
    for settings in ({"precision": "float32", "prepack": True}, {"precision": "bfloat16", "prepack": False}):
        assert not any(isinstance(m, prepack.Projection) for m in _runtime(model, **settings)._st.modules())


def test_joined_projections_give_what_three_layers_give_in_any_order_and_from_any_thread():
    torch.manual_seed(0)
    layers = [torch.nn.Linear(16, width) for width in (16, 16, 8)]
    holder = torch.nn.Module()
    for name, layer in zip(prepack.PROJECTIONS, layers):
        setattr(holder, name, layer)
    assert prepack.fuse_projections(holder, torch.bfloat16) == layers
    apart = [prepack.ServedLinear(layer.weight, layer.bias, torch.bfloat16, True) for layer in layers]
    slices = [getattr(holder, name) for name in prepack.PROJECTIONS]
    x, y = torch.randn(5, 16), torch.randn(3, 16)
    for order in ([0, 1, 2], [2, 0, 1], [1, 1, 0, 2, 2]):  # a repeated slice computes afresh
        for i in order:
            assert torch.equal(slices[i](x), apart[i](x))
    # Interleaved inputs: each call gets its own input's slice.
    assert torch.equal(slices[0](x), apart[0](x)) and torch.equal(slices[1](y), apart[1](y))
    assert torch.equal(slices[1](x), apart[1](x)) and torch.equal(slices[2](x), apart[2](x))
    # Once each slice of an input is taken, nothing is held; and threads do not see each other's.
    assert torch.equal(slices[0](x), apart[0](x)) and slices[0].projections._computed.last is None
    inputs = [torch.randn(4, 16) for _ in range(64)]
    expected = [[layer(v) for layer in apart] for v in inputs]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda v: [s(v) for s in slices], inputs))
    assert all(torch.equal(a, b) for row, want in zip(got, expected) for a, b in zip(row, want))


@pytest.mark.parametrize("fixture", ["tiny_bert", "tiny_classifier"])
@pytest.mark.parametrize("packed", [True, False])
def test_a_bfloat16_encoder_computes_in_float32_on_request_what_a_float32_one_computes(fixture, packed, request):
    model = request.getfixturevalue(fixture)
    bfloat16, float32 = _runtime(model, precision="bfloat16", prepack=packed), _runtime(model, precision="float32")
    for output in float32.outputs:
        served = encode(bfloat16, TEXTS, output)
        asked = encode(bfloat16, TEXTS, output, float32=True)
        reference = encode(float32, TEXTS, output)
        assert max(np.abs(a - b).max() for a, b in zip(asked, reference)) < 1e-5, output
        assert max(np.abs(a - b).max() for a, b in zip(served, reference)) > 1e-5, output  # bfloat16 it is, served
        # Its float32 contract is float32's: same space, the fingerprint of float32's canaries; its own id.
        mine, theirs = bfloat16.output(output, float32=True), float32.outputs[output]
        assert mine.contract.dtype == "float32" and bfloat16.outputs[output].contract.dtype == "bfloat16"
        assert mine.contract.space.model_dump(exclude={"fingerprint"}) == theirs.contract.space.model_dump(exclude={"fingerprint"})
        assert np.allclose(mine.contract.space.fingerprint, theirs.contract.space.fingerprint, atol=1e-5)
        assert mine.id not in {o.id for o in bfloat16.outputs.values()}
    # A float32 encoder has no other contracts: float32 asked is float32 served.
    assert float32.float32_outputs == {} and float32.output("embedding", float32=True) == float32.outputs["embedding"]
    # The passes asked in float32 are the only ones: the served ones after them are bfloat16 still.
    assert all(np.array_equal(a, b) for a, b in zip(encode(bfloat16, TEXTS), encode(bfloat16, TEXTS)))


def test_a_float32_pass_that_the_canaries_refuse_refuses_the_model(tiny_bert, monkeypatch):
    real = prepack.Float32Weights.__call__
    monkeypatch.setattr(prepack.Float32Weights, "__call__", lambda self, x, gelu=None: real(self, x, gelu) * 1.01)
    with pytest.raises(ModelLoadError, match="float32 passes on request change"):
        _runtime(tiny_bert, precision="bfloat16")


def test_a_head_model_holds_its_encoder_once(tiny_classifier):
    runtime = _runtime(tiny_classifier)
    assert runtime._st[0].auto_model is runtime._head.base_model
    weights = {id(p) for p in runtime._st.parameters()} | {id(p) for p in runtime._head.parameters()}
    assert len(weights) == len({id(p) for p in runtime._head.parameters()})


def test_packing_that_changes_the_outputs_is_refused(tiny_bert, monkeypatch):
    real = prepack.ServedLinear.forward
    monkeypatch.setattr(prepack.ServedLinear, "forward", lambda self, x: real(self, x) * 1.01)
    with pytest.raises(ModelLoadError, match="ENCODER_PREPACK=false"):
        _runtime(tiny_bert, prepack=True)


_RESIDENT_AFTER_PACKING = """
import json, sys
from encoder_service.runtime import EncoderRuntime
from encoder_service.settings import EncoderSettings
from tests.support import mapping_rss
runtime = EncoderRuntime(EncoderSettings(model=sys.argv[1], prepack=True, precision=sys.argv[2]))
runtime.load()
runtime.submit(runtime.tokenize(["Where is my parcel?", "hi"]), ["embedding"]).result()
runtime.submit(runtime.tokenize(["Where is my parcel?", "hi"]), ["embedding"], True).result()
embeddings = runtime._st[0].auto_model.embeddings.word_embeddings.weight
packed = [m for m in runtime._st.modules() if type(m).__name__ == "ServedLinear" and m.packed]
print(json.dumps({"resident": mapping_rss(embeddings.data_ptr()),
                  "packed": sum(m.in_features * m.out_features * 4 for m in packed)}))
"""


@needs_pageout
@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_the_plain_weights_packing_replaced_are_not_left_resident(minilm_path, tmp_path, precision):
    """MiniLM's weights are a memory-mapped safetensors file; its Linear weights (~42 MB) are read once
    to pack them, then handed back: only the embedding rows and norms in use stay resident. In bfloat16
    a pass asked in float32 reads them again, and leaves them in the file after each layer. The kernel
    keeps pages another process also maps (this one, with an earlier test's model), so a fresh process
    loads its own copy of the model."""
    model = shutil.copytree(minilm_path, tmp_path / "minilm")
    done = subprocess.run([sys.executable, "-c", _RESIDENT_AFTER_PACKING, str(model), precision], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["packed"] > 40 * 2**20
    assert figures["resident"] < figures["packed"] / 4


def test_the_entry_point_bounds_onednn_caches_where_weights_are_packed_or_bfloat16():
    bounded = {"LRU_CACHE_CAPACITY": PACKED_CACHE_ENTRIES, "ONEDNN_PRIMITIVE_CACHE_CAPACITY": PACKED_CACHE_ENTRIES}
    assert EncoderSettings().packs_weights and library_env(EncoderSettings()) == bounded
    bf16 = {"LRU_CACHE_CAPACITY": BFLOAT16_CACHE_ENTRIES, "ONEDNN_PRIMITIVE_CACHE_CAPACITY": BFLOAT16_CACHE_ENTRIES}
    assert EncoderSettings(precision="bfloat16").packs_weights and library_env(EncoderSettings(precision="bfloat16")) == bf16
    for unpacked in (EncoderSettings(prepack=False), EncoderSettings(backend="onnxruntime")):
        assert not unpacked.packs_weights and library_env(unpacked) == {}
