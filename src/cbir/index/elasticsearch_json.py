"""The Elasticsearch client's JSON on orjson: what a batch of searches spends on the client.

A batch of searches is NDJSON out (a query vector each) and one large JSON answer back
(every hit's sort values). With the standard library's json, 1,000 knn searches of 100 hits
cost the client 0.61 s to encode and 1.04 s to decode; with orjson, 0.03 s and 0.67 s, on the
same 2 cores the server searches on. Numbers round-trip exactly either way (both write a
float's shortest repr). Large answers are decoded with the cyclic garbage collector paused:
their tens of thousands of new dicts and lists otherwise set it off again and again, which
took half of the decoding time of 256 searches' answer (1.3 MB: 29 -> 17 ms).
"""

from __future__ import annotations

import gc
from typing import Any

import orjson
from elasticsearch.serializer import (
    CompatibilityModeJsonSerializer,
    CompatibilityModeNdjsonSerializer,
    JsonSerializer,
    NdjsonSerializer,
)

LARGE = 64 * 1024  # bytes of JSON from which decoding pauses the garbage collector


class _Orjson:
    """json_dumps and json_loads of a client serializer, on orjson."""

    default: Any

    def json_dumps(self, data: Any) -> bytes:
        return orjson.dumps(data, default=self.default, option=orjson.OPT_SERIALIZE_NUMPY)

    def json_loads(self, data: bytes) -> Any:
        if len(data) < LARGE or not gc.isenabled():
            return orjson.loads(data)
        gc.disable()  # JSON makes no reference cycles: nothing for the collector to find
        try:
            return orjson.loads(data)
        finally:
            gc.enable()


class _Json(_Orjson, CompatibilityModeJsonSerializer):
    pass


class _Ndjson(_Orjson, CompatibilityModeNdjsonSerializer):
    pass


def serializers() -> dict[str, Any]:
    """`serializers=` for elasticsearch.Elasticsearch: every JSON and NDJSON mimetype the
    client speaks (plain, and the compatibility mode the 8.x client sends)."""
    return {
        JsonSerializer.mimetype: _Json(),
        NdjsonSerializer.mimetype: _Ndjson(),
        CompatibilityModeJsonSerializer.mimetype: _Json(),
        CompatibilityModeNdjsonSerializer.mimetype: _Ndjson(),
    }
