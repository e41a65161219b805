"""Hypothesis strategies for malformed and extreme GuardRequests (shared by the scripted and real fuzzers)."""

from __future__ import annotations

import struct
import zlib

import grpc
from hypothesis import strategies as st

from server.pb import guard_pb2 as pb

# Statuses a client can act on; INTERNAL or UNKNOWN for a bad input would be a bug.
CLEAR_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNAVAILABLE,
}
# INVALID_ARGUMENT details start with one of these (request fields, or "request" for undecodable bytes).
FIELD_NAMES = set(pb.GuardRequest.DESCRIPTOR.fields_by_name) | {"request"}

INT32 = (-(2**31), 2**31 - 1)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int, height: int, idat: bytes | None = None) -> bytes:
    """A PNG; with a header claiming any size (a decompression bomb when the size is huge)."""
    if idat is None:
        idat = zlib.compress(b"".join(b"\x00" + b"\x10\x20\x30" * width for _ in range(height)))
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + _chunk(b"IDAT", idat)
        + _chunk(b"IEND", b"")
    )


# Unicode edge cases: NUL, controls, combining marks, bidi overrides, zero-width, astral emoji, BOM.
_EDGE_CHARS = "\x00\x01\x7f\u0301\u202e\u200b\ufeff\U0001f600\u00e9\u4e2d\n\t "
text = st.text(
    alphabet=st.one_of(st.characters(blacklist_categories=("Cs",)), st.sampled_from(_EDGE_CHARS)), max_size=40
)
long_text = st.builds(lambda n, c: c * n, st.sampled_from([500, 4001, 8001, 20000]), st.sampled_from(["a", "7 ", "\u4e2d"]))
maybe_long = st.one_of(text, text, text, long_text)


@st.composite
def images(draw) -> pb.Image:
    kind = draw(st.sampled_from(["valid", "corrupt", "bomb", "random", "empty", "truncated"]))
    if kind == "valid":
        data = png(draw(st.integers(1, 8)), draw(st.integers(1, 8)))
    elif kind == "corrupt":
        good = bytearray(png(4, 4))
        for _ in range(draw(st.integers(1, 8))):
            good[draw(st.integers(8, len(good) - 1))] = draw(st.integers(0, 255))
        data = bytes(good)
    elif kind == "bomb":
        data = png(draw(st.sampled_from([5000, 65535, 100000])), draw(st.sampled_from([5000, 65535])),
                   idat=zlib.compress(b"\x00" * 1024))
    elif kind == "truncated":
        good = png(4, 4)
        data = good[: draw(st.integers(1, len(good) - 1))]
    elif kind == "empty":
        data = b""
    else:
        data = draw(st.binary(max_size=256))
    mime = draw(st.one_of(st.sampled_from(["image/png", "image/jpeg", "image/webp", "image/gif", "", "text/html"]),
                          text))
    return pb.Image(data=data, mime_type=mime)


def _int(low: int, high: int):
    return st.one_of(st.integers(low, high), st.sampled_from([INT32[0], -1, 0, INT32[1]]))


_printable = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2FF, blacklist_categories=("Cs",)),
                     min_size=1, max_size=30)
_question = _printable.filter(lambda q: q.strip())
_any_float = st.floats(width=32, allow_nan=True, allow_infinity=True)
_BREAKABLE = ["question", "system_prompt", "sub_questions", "images", "num_paths", "max_tokens", "temperature",
              "top_p", "seed", "latency_budget_ms", "mode", "request_id", "scorer"]


@st.composite
def guard_requests(draw, bounded: bool = False) -> pb.GuardRequest:
    """Any GuardRequest, biased to the edges: half are valid (extreme values within the limits),
    the other half break one to three fields. bounded: keep the engine work small when the request
    is valid (a real engine behind the server): few paths and tokens."""
    broken = draw(st.one_of(st.just(frozenset()), st.frozensets(st.sampled_from(_BREAKABLE), min_size=1, max_size=3)))

    def pick(name, valid, invalid):
        return draw(invalid if name in broken else valid)

    req = pb.GuardRequest()
    req.question = pick("question", _question, st.one_of(maybe_long, st.sampled_from(["", " ", "\x00", "a\x00b"])))
    req.system_prompt = pick("system_prompt", st.one_of(st.just(""), _printable), long_text)
    req.sub_questions.extend(pick(
        "sub_questions", st.lists(_question, max_size=3, unique_by=lambda q: " ".join(q.lower().split()).rstrip("?.! ")),
        st.lists(st.one_of(text, st.just(req.question)), min_size=1, max_size=10),
    ))
    if "images" in broken:
        req.images.extend(draw(st.lists(images(), min_size=1, max_size=5)))
    if bounded:
        req.num_paths = pick("num_paths", st.integers(1, 3), st.sampled_from([INT32[0], -1, 0, 65, INT32[1]]))
        req.max_tokens = pick("max_tokens", st.integers(1, 6), st.sampled_from([INT32[0], -1, 0, 4097, INT32[1]]))
    else:
        if draw(st.booleans()) or "num_paths" in broken:
            req.num_paths = pick("num_paths", st.integers(1, 64), st.sampled_from([INT32[0], -1, 0, 65, INT32[1]]))
        if draw(st.booleans()) or "max_tokens" in broken:
            req.max_tokens = pick("max_tokens", st.integers(1, 2048), st.sampled_from([INT32[0], -1, 0, 2049, INT32[1]]))
    if draw(st.booleans()) or "temperature" in broken:
        req.temperature = pick("temperature", st.floats(0, 2, width=32), _any_float)
    if draw(st.booleans()) or "top_p" in broken:
        req.top_p = pick("top_p", st.floats(0, 1, exclude_min=True, width=32), _any_float)
    if draw(st.booleans()) or "seed" in broken:
        req.seed = pick("seed", st.integers(0, 2**63 - 1), st.integers(-(2**63), -1))
    if draw(st.booleans()) or "latency_budget_ms" in broken:
        req.latency_budget_ms = pick("latency_budget_ms", st.integers(1, 5000), _int(-3, 0))
    req.mode = pick("mode", st.integers(0, 2), st.integers(-2, 5))
    req.request_id = pick("request_id", st.one_of(st.just(""), _printable), st.one_of(text, long_text))
    req.scorer = pick("scorer", st.sampled_from(["", "majority", "deepconf", "trace"]), text)
    req.return_paths_text = draw(st.booleans())
    return req
