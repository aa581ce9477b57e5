"""ENCODER_PRECISION=auto (the default): bfloat16 where the CPU computes it natively, float32 elsewhere;
the contracts say which, the log says why."""

from __future__ import annotations

import logging

import pytest

from encoder_service.__main__ import BFLOAT16_CACHE_ENTRIES, PACKED_CACHE_ENTRIES, library_env
from encoder_service.precision import choose_precision, cpu_flags, read_cpu_flags
from encoder_service.settings import EncoderSettings
from tests.support import encoder_client

ZEN5 = frozenset({"fpu", "sse2", "avx2", "avx512f", "avx512bw", "avx512vl", "avx512_bf16"})
SAPPHIRE_RAPIDS = frozenset({"avx512f", "avx512bw", "amx_tile", "amx_bf16", "amx_int8", "avx512_bf16"})
SKYLAKE_X = frozenset({"avx2", "avx512f", "avx512bw", "avx512vl", "avx512dq"})  # emulated bfloat16 only
GRAVITON = frozenset()  # a file without x86 flags


@pytest.mark.parametrize("flags", [ZEN5, SAPPHIRE_RAPIDS, frozenset({"amx_bf16"})])
def test_auto_is_bfloat16_where_the_cpu_computes_it_natively(flags):
    choice = choose_precision("auto", "torch", flags)
    assert choice.precision == "bfloat16"
    assert "natively" in choice.reason and "ENCODER_PRECISION=float32" in choice.reason


@pytest.mark.parametrize("flags", [SKYLAKE_X, GRAVITON, None])
def test_auto_is_float32_elsewhere_and_says_why(flags):
    choice = choose_precision("auto", "torch", flags)
    assert choice.precision == "float32"
    assert ("cannot be read" if flags is None else "no native bfloat16") in choice.reason


def test_auto_on_onnxruntime_is_float32_whatever_the_cpu():
    choice = choose_precision("auto", "onnxruntime", ZEN5)
    assert choice.precision == "float32" and "onnxruntime" in choice.reason


@pytest.mark.parametrize("requested", ["float32", "bfloat16"])
@pytest.mark.parametrize("flags", [ZEN5, SKYLAKE_X, None])
def test_an_explicit_precision_is_kept(requested, flags):
    assert choose_precision(requested, "torch", flags).precision == requested


def test_cpu_flags_are_read_from_the_first_processor(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx512f avx512_bf16\n\n"
                    "processor\t: 1\nflags\t\t: fpu\n")
    assert read_cpu_flags(info) == frozenset({"fpu", "avx512f", "avx512_bf16"})
    info.write_text("processor\t: 0\nFeatures\t: fp asimd\n")  # aarch64 names them otherwise
    assert read_cpu_flags(info) == frozenset()
    assert read_cpu_flags(tmp_path / "absent") is None


def test_auto_is_the_default_and_resolves_on_this_machine(monkeypatch):
    monkeypatch.delenv("ENCODER_PRECISION", raising=False)  # the suite pins float32 (tests/conftest.py)
    settings = EncoderSettings()
    assert settings.precision == "auto"
    assert settings.compute_precision == choose_precision("auto", "torch", cpu_flags()).precision
    # Weights are packed whatever auto chose; the oneDNN caches' bounds follow the choice.
    assert settings.packs_weights
    entries = BFLOAT16_CACHE_ENTRIES if settings.compute_precision == "bfloat16" else PACKED_CACHE_ENTRIES
    assert library_env(settings)["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == entries


async def test_the_contracts_declare_what_auto_chose_and_the_log_says_why(tiny_bert, caplog):
    expected = choose_precision("auto", "torch", cpu_flags())
    with caplog.at_level(logging.INFO, logger="seam.encoder"):
        async with encoder_client(model=str(tiny_bert), precision="auto") as client:
            body = (await client.get("/v1/outputs")).json()
    assert {o["contract"]["dtype"] for o in body["outputs"].values()} == {expected.precision}
    assert f"computing in {expected.precision}: {expected.reason}" in caplog.text
