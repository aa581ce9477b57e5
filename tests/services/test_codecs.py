"""Tensor codecs: JSON and binary round trips, the wire bytes, and corrupt input refused."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from services.codecs import (
    BINARY_CONTENT_TYPE,
    CodecError,
    Frame,
    Ragged,
    decode_binary,
    encode_binary,
    from_json,
)

RNG = np.random.default_rng(0)


def to_json(tensor) -> list:
    """Nested lists, as a caller writes a tensor: (rows, dim); one (length, dim) list per ragged row."""
    return [row.tolist() for row in tensor.rows()] if isinstance(tensor, Ragged) else tensor.tolist()


def dense(rows: int, dim: int = 8) -> np.ndarray:
    return RNG.standard_normal((rows, dim)).astype(np.float32)


def ragged(lengths: list[int], dim: int = 8) -> Ragged:
    return Ragged(RNG.standard_normal((sum(lengths), dim)).astype(np.float32), lengths)


def frame(header: dict | bytes, tail: bytes = b"") -> bytes:
    """A hand-made frame, to say exactly what is corrupt about it."""
    head = header if isinstance(header, bytes) else json.dumps(header).encode()
    return b"SEAM" + struct.pack("<I", len(head)) + head + tail


def split(body: bytes) -> tuple[dict, bytes]:
    assert body[:4] == b"SEAM"
    (n,) = struct.unpack("<I", body[4:8])
    return json.loads(body[8 : 8 + n]), body[8 + n :]


def assert_same_ragged(a: Ragged, b: Ragged) -> None:
    assert isinstance(b, Ragged)
    assert a.values.shape == b.values.shape
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.lengths, b.lengths)
    assert b.values.dtype == np.float32 and b.lengths.dtype == np.int64


# ---- Ragged -----------------------------------------------------------------------------------


def test_ragged_rows_offsets_and_dim() -> None:
    r = ragged([2, 0, 3, 1], dim=4)
    assert len(r) == 4 and r.dim == 4
    assert r.offsets.tolist() == [0, 2, 2, 5, 6]
    rows = r.rows()
    assert [row.shape for row in rows] == [(2, 4), (0, 4), (3, 4), (1, 4)]
    np.testing.assert_array_equal(np.concatenate(rows), r.values)
    assert all(np.shares_memory(row, r.values) for row in rows if len(row))  # views, no copies


def test_ragged_from_rows_round_trips_rows() -> None:
    rows = [dense(3, 4), dense(1, 4), dense(2, 4)]
    r = Ragged.from_rows(rows)
    assert r.lengths.tolist() == [3, 1, 2]
    for got, want in zip(r.rows(), rows):
        np.testing.assert_array_equal(got, want)


def test_ragged_from_rows_with_empty_sequences_among_others() -> None:
    rows = [np.zeros((0, 4), np.float32), dense(2, 4), np.zeros((0, 4), np.float32), dense(1, 4)]
    r = Ragged.from_rows(rows)
    assert r.lengths.tolist() == [0, 2, 0, 1]
    assert r.values.shape == (3, 4)
    for got, want in zip(r.rows(), rows):
        np.testing.assert_array_equal(got, want)


def test_ragged_from_rows_all_empty_keeps_the_declared_dim() -> None:
    r = Ragged.from_rows([np.zeros((0, 4)), np.zeros((0, 4))], dim=4)
    assert r.values.shape == (0, 4) and r.lengths.tolist() == [0, 0]
    none = Ragged.from_rows([], dim=4)
    assert len(none) == 0 and none.values.shape == (0, 4)


@pytest.mark.parametrize(
    ("values", "lengths", "message"),
    [
        (np.zeros(6), [6], "2-D"),
        (np.zeros((2, 3, 1)), [2], "2-D"),
        (np.zeros((3, 2)), [4, -1], "non-negative"),
        (np.zeros((3, 2)), [[3]], "1-D"),
        (np.zeros((3, 2)), [1, 1], "sum to 2 but there are 3"),
        (np.zeros((3, 2)), [4], "sum to 4 but there are 3"),
    ],
)
def test_ragged_refuses_inconsistent_parts(values, lengths, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        Ragged(values, lengths)


# ---- binary round trips -------------------------------------------------------------------------


def test_content_type() -> None:
    assert BINARY_CONTENT_TYPE == "application/vnd.seam.tensor"


@pytest.mark.parametrize("rows", [0, 1, 5])
def test_dense_binary_round_trip(rows: int) -> None:
    x = dense(rows, 384)
    got = decode_binary(encode_binary(x))
    assert isinstance(got, Frame)
    assert isinstance(got.tensor, np.ndarray)
    assert got.tensor.dtype == np.float32 and got.tensor.shape == (rows, 384)
    np.testing.assert_array_equal(got.tensor, x)
    assert got.meta == {}


@pytest.mark.parametrize(
    "lengths",
    [[3, 1, 4], [1], [1, 1, 1], [0], [0, 0], [0, 2, 0], [2, 0], []],
    ids=["mixed", "one-token", "one-token-each", "one-empty", "all-empty", "empty-around", "empty-last", "no-rows"],
)
def test_ragged_binary_round_trip(lengths: list[int]) -> None:
    r = ragged(lengths, dim=16)
    got = decode_binary(encode_binary(r)).tensor
    assert_same_ragged(r, got)
    assert got.dim == 16
    assert [len(row) for row in got.rows()] == lengths


def test_meta_is_preserved() -> None:
    meta = {"model": "all-MiniLM-L6-v2", "truncated": [False, True], "token_counts": [3, 256], "n": None,
            "nested": {"classes": ["b", "a"], "version": 3}, "text": "naïve ☃"}
    assert decode_binary(encode_binary(dense(2), meta)).meta == meta
    assert decode_binary(encode_binary(ragged([1, 2]), meta)).meta == meta


def test_wider_input_dtypes_travel_as_float32() -> None:
    x = np.array([[1.0, -2.5], [0.1, 1e-3]], dtype=np.float64)
    got = decode_binary(encode_binary(x)).tensor
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, x.astype(np.float32))
    ints = decode_binary(encode_binary(np.arange(6).reshape(2, 3))).tensor
    assert ints.dtype == np.float32 and ints.tolist() == [[0, 1, 2], [3, 4, 5]]


def test_big_endian_input_is_written_little_endian() -> None:
    x = np.array([[1.0, 2.0]], dtype=">f4")
    _, tail = split(encode_binary(x))
    assert tail == struct.pack("<2f", 1.0, 2.0)


def test_non_contiguous_input_is_encoded_by_value() -> None:
    x = dense(4, 6)[:, ::2]
    assert not x.flags.c_contiguous
    np.testing.assert_array_equal(decode_binary(encode_binary(x)).tensor, x)


# ---- the wire bytes -----------------------------------------------------------------------------


def test_dense_frame_is_magic_header_and_float32_little_endian() -> None:
    body = encode_binary(np.array([[1.0, -2.0, 0.5]], dtype=np.float32), {"k": 1})
    header, tail = split(body)
    assert header == {"meta": {"k": 1}, "layout": "dense", "shape": [1, 3]}
    assert tail == b"\x00\x00\x80\x3f" + b"\x00\x00\x00\xc0" + b"\x00\x00\x00\x3f"
    assert tail == struct.pack("<3f", 1.0, -2.0, 0.5)


def test_ragged_frame_is_flat_values_then_int32_lengths() -> None:
    r = Ragged(np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], dtype=np.float32), [2, 0, 1])
    header, tail = split(encode_binary(r))
    assert header == {"meta": {}, "layout": "ragged", "shape": [3, 2], "rows": 3}
    assert tail == struct.pack("<6f", 1, 2, 3, 4, 5, 6) + struct.pack("<3i", 2, 0, 1)
    assert len(tail) == 6 * 4 + 3 * 4  # no padding crosses the wire


def test_decoded_values_are_native_float32() -> None:
    got = decode_binary(encode_binary(dense(3))).tensor
    assert got.dtype == np.dtype(np.float32)
    assert got.dtype.isnative


# ---- corrupt frames -----------------------------------------------------------------------------

GOOD_DENSE = encode_binary(np.ones((2, 3), np.float32))
GOOD_RAGGED = encode_binary(Ragged(np.ones((3, 2), np.float32), [1, 2]))
VALUES_2x3 = struct.pack("<6f", *range(6))


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"SEA", id="shorter-than-magic"),
        pytest.param(b"SEAM\x00\x00", id="no-header-length"),
        pytest.param(b"MAES" + GOOD_DENSE[4:], id="bad-magic"),
        pytest.param(b"seam" + GOOD_DENSE[4:], id="lowercase-magic"),
        pytest.param(b'{"layout": "dense"}', id="json-not-a-frame"),
        pytest.param(b"SEAM" + struct.pack("<I", 10_000) + b"{}", id="header-length-past-end"),
        pytest.param(frame(b"{not json", VALUES_2x3), id="header-not-json"),
        pytest.param(frame(b"\xff\xfe\x00", VALUES_2x3), id="header-not-utf8"),
        pytest.param(frame([1, 2], VALUES_2x3), id="header-not-an-object"),
        pytest.param(frame({"shape": [2, 3]}, VALUES_2x3), id="no-layout"),
        pytest.param(frame({"layout": "dense"}, VALUES_2x3), id="no-shape"),
        pytest.param(frame({"layout": "dense", "shape": 6}, VALUES_2x3), id="shape-not-a-list"),
        pytest.param(frame({"layout": "dense", "shape": ["two", 3]}, VALUES_2x3), id="shape-not-ints"),
        pytest.param(frame({"layout": "dense", "shape": [6]}, VALUES_2x3), id="shape-1d"),
        pytest.param(frame({"layout": "dense", "shape": [1, 2, 3]}, VALUES_2x3), id="shape-3d"),
        pytest.param(frame({"layout": "dense", "shape": [-2, -3]}, VALUES_2x3), id="shape-negative"),
        pytest.param(frame({"layout": "dense", "shape": [3, 3]}, VALUES_2x3), id="shape-claims-more"),
        pytest.param(frame({"layout": "dense", "shape": [1, 3]}, VALUES_2x3), id="shape-claims-fewer"),
        pytest.param(frame({"layout": "dense", "shape": [2, 3]}, VALUES_2x3[:-1]), id="truncated-value"),
        pytest.param(GOOD_DENSE[:-4], id="truncated-dense"),
        pytest.param(GOOD_DENSE + b"\x00", id="trailing-byte"),
        pytest.param(GOOD_RAGGED[:-1], id="truncated-ragged"),
        pytest.param(GOOD_RAGGED[:-8], id="ragged-missing-a-length"),
        pytest.param(frame({"layout": "ragged", "shape": [3, 2]}, VALUES_2x3), id="ragged-no-rows"),
        pytest.param(frame({"layout": "ragged", "shape": [3, 2], "rows": "x"}, VALUES_2x3 + b"\0" * 8),
                     id="ragged-rows-not-int"),
        pytest.param(frame({"layout": "ragged", "shape": [3, 2], "rows": 2},
                           VALUES_2x3 + struct.pack("<2i", 1, 1)), id="ragged-lengths-lie"),
        pytest.param(frame({"layout": "ragged", "shape": [3, 2], "rows": 2},
                           VALUES_2x3 + struct.pack("<2i", 4, -1)), id="ragged-negative-length"),
        pytest.param(frame({"layout": "ragged", "shape": [3, 2], "rows": 3},
                           VALUES_2x3 + struct.pack("<2i", 1, 2)), id="ragged-rows-lie"),
        pytest.param(frame({"layout": "sparse", "shape": [2, 3]}, VALUES_2x3), id="unknown-layout"),
        pytest.param(frame({"layout": None, "shape": [2, 3]}, VALUES_2x3), id="null-layout"),
        pytest.param(frame({"layout": "dense", "shape": [2, 3], "meta": [1]}, VALUES_2x3), id="meta-not-object"),
    ],
)
def test_corrupt_frames_raise_codec_error(body: bytes) -> None:
    with pytest.raises(CodecError):
        decode_binary(body)


def test_corrupt_frame_messages_say_what_is_wrong() -> None:
    with pytest.raises(CodecError, match="magic"):
        decode_binary(b"XXXX" + GOOD_DENSE[4:])
    with pytest.raises(CodecError, match="past the end"):
        decode_binary(b"SEAM" + struct.pack("<I", 99) + b"{}")
    with pytest.raises(CodecError, match=r"shape \[3, 3\] needs 36"):
        decode_binary(frame({"layout": "dense", "shape": [3, 3]}, VALUES_2x3))
    with pytest.raises(CodecError, match="unknown frame layout 'sparse'"):
        decode_binary(frame({"layout": "sparse", "shape": [2, 3]}, VALUES_2x3))


def test_codec_error_is_a_value_error() -> None:
    assert issubclass(CodecError, ValueError)


@pytest.mark.parametrize("x", [np.zeros(3), np.zeros((2, 2, 2)), np.float32(1.0)], ids=["1d", "3d", "scalar"])
def test_encode_refuses_non_matrix_dense_tensors(x) -> None:
    with pytest.raises(CodecError, match="2-D"):
        encode_binary(x)


# ---- JSON ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("rows", [1, 4])
def test_dense_json_round_trip(rows: int) -> None:
    x = dense(rows, 384)
    data = to_json(x)
    assert isinstance(data, list) and all(isinstance(v, float) for v in data[0])
    got = from_json(json.loads(json.dumps(data)), ragged=False)
    assert got.dtype == np.float32 and got.shape == (rows, 384)
    np.testing.assert_array_equal(got, x)  # float32 -> float64 text -> float32 is exact


def test_dense_json_empty_batch_round_trip() -> None:
    data = to_json(np.zeros((0, 384), np.float32))
    assert data == []
    got = from_json(json.loads(json.dumps(data)), ragged=False, dim=384)
    assert got.shape == (0, 384) and got.dtype == np.float32
    # Without a declared width an empty batch is still a (0, d) matrix, not an error.
    unknown = from_json([], ragged=False)
    assert unknown.ndim == 2 and unknown.shape[0] == 0


@pytest.mark.parametrize(
    "lengths",
    [[3, 1, 4], [1], [1, 1], [0], [0, 0], [0, 2, 0], [2, 0], [0, 1]],
    ids=["mixed", "one-token", "one-token-each", "one-empty", "all-empty", "empty-around", "empty-last", "empty-first"],
)
def test_ragged_json_round_trip(lengths: list[int]) -> None:
    r = ragged(lengths, dim=16)
    data = to_json(r)
    assert [len(row) for row in data] == lengths
    got = from_json(json.loads(json.dumps(data)), ragged=True, dim=16)
    assert_same_ragged(r, got)


def test_ragged_json_widths_come_from_the_data() -> None:
    got = from_json([[[1.0, 2.0, 3.0]], [], [[4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]], ragged=True)
    assert got.dim == 3 and got.lengths.tolist() == [1, 0, 2]


def test_ragged_json_empty_batch_round_trip() -> None:
    r = ragged([], dim=16)
    assert to_json(r) == []
    got = from_json([], ragged=True, dim=16)
    assert len(got) == 0 and got.values.shape == (0, 16)
    assert len(from_json([], ragged=True)) == 0


def test_to_json_gives_plain_python_numbers() -> None:
    data = to_json(ragged([2, 1], dim=3))
    json.dumps(data)  # no numpy scalars
    assert type(data[0][0][0]) is float


def test_from_json_accepts_integers_as_numbers() -> None:
    got = from_json([[1, 2], [3, 4]], ragged=False)
    assert got.dtype == np.float32 and got.tolist() == [[1.0, 2.0], [3.0, 4.0]]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param({"values": [[1.0]]}, id="object"),
        pytest.param("[[1.0]]", id="string"),
        pytest.param(1.0, id="number"),
        pytest.param(None, id="null"),
        pytest.param([[1.0, 2.0], [3.0]], id="ragged-rows"),
        pytest.param([[[1.0, 2.0]], [[3.0, 4.0], [5.0, 6.0]]], id="token-sequences"),
        pytest.param([1.0, 2.0], id="flat-vector"),
        pytest.param([[1.0, "a"]], id="word"),
        pytest.param([["1.0", "2.0"]], id="numeric-strings"),
        pytest.param([[1.0, None]], id="null-value"),
        pytest.param([[True, False]], id="booleans"),
        pytest.param([[{"x": 1}]], id="object-value"),
    ],
)
def test_from_json_dense_refuses(data) -> None:
    with pytest.raises(CodecError):
        from_json(data, ragged=False)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param({"values": []}, id="object"),
        pytest.param([[1.0, 2.0]], id="flat-rows"),
        pytest.param([[[1.0, 2.0]], [[1.0, 2.0, 3.0]]], id="different-widths"),
        pytest.param([[[1.0, 2.0], [1.0]]], id="inner-ragged"),
        pytest.param([[[[1.0]]]], id="too-deep"),
        pytest.param([[["a", "b"]]], id="words"),
        pytest.param([[["1", "2"]]], id="numeric-strings"),
        pytest.param([[[None, 1.0]]], id="null-value"),
        pytest.param([[[True]]], id="booleans"),
        pytest.param(["abc"], id="string-row"),
        pytest.param([5], id="number-row"),
    ],
)
def test_from_json_ragged_refuses(data) -> None:
    with pytest.raises(CodecError):
        from_json(data, ragged=True)


def test_from_json_dense_error_names_the_problem() -> None:
    with pytest.raises(CodecError, match="a tensor must be a JSON list"):
        from_json({"a": 1}, ragged=False)
    with pytest.raises(CodecError, match="3-D"):
        from_json([[[1.0]]], ragged=False)
