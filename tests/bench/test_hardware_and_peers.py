"""The benchmark's hardware column (FLOPs per text from a config) and its peer (Infinity) runner."""

from __future__ import annotations

import subprocess
from types import SimpleNamespace

import pytest

from bench.hardware import config_flops_per_text, flops_per_text
from bench.peers import InfinityPeer, PeerUnavailable


def test_flops_per_text_against_a_hand_count():
    # A tiny encoder: hidden 4, feed-forward 8, 2 layers, a text of 3 tokens.
    # Per layer: Q, K, V, O: 4 x (3 tokens x 4 x 4 multiply-adds) = 192; up and down: 2 x (3 x 4 x 8) = 192;
    # scores 3 x 3 x 4 = 36 and their product with V 36. (192 + 192 + 72) x 2 FLOPs x 2 layers = 1,824.
    assert flops_per_text(3, hidden=4, intermediate=8, layers=2) == 1824
    config = SimpleNamespace(hidden_size=4, intermediate_size=8, num_hidden_layers=2)
    assert config_flops_per_text(config, 3) == 1824


def test_minilm_costs_about_21_mflop_per_token_in_its_linear_layers():
    per_token = flops_per_text(1, hidden=384, intermediate=1536, layers=6) - 4 * 384 * 6
    assert per_token == 2 * 6 * (4 * 384 * 384 + 2 * 384 * 1536) == 21_233_664


def test_the_peer_refuses_clearly_without_its_environment(tmp_path):
    peer = InfinityPeer("unused-model", "bfloat16", 1, venv=tmp_path / "absent")
    with pytest.raises(PeerUnavailable, match=r"make bench-peers"):
        peer.start()
    assert peer.proc is None  # nothing was started


def test_a_half_installed_environment_is_refused_too(tmp_path):
    executable = tmp_path / "venv" / "bin" / "infinity_emb"
    executable.parent.mkdir(parents=True)
    executable.write_text("#!/bin/sh\nexit 0\n")
    with pytest.raises(PeerUnavailable, match="did not finish"):
        InfinityPeer("unused-model", "float32", 1, venv=tmp_path / "venv").check()


def test_make_bench_peers_is_a_target_that_builds_the_peers_environment():
    dry = subprocess.run(["make", "-n", "bench-peers", "INFINITY=/nonexistent/infinity"], capture_output=True, text=True, check=True)
    assert "infinity-emb[torch,server]==0.0.78" in dry.stdout
    assert "torch==2.13.0" in dry.stdout  # the CPU build first, pinned, as seam's own venv
