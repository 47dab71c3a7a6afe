"""Reading back a W&B offline run file (``run-ID.wandb``) in the tests.

wandb (0.2x and newer) no longer ships a Python reader for its transaction log, so this reads
the framing itself: a 7-byte header (``:W&B``, two version bytes), then LevelDB's log format
(32 KiB blocks of records, each ``crc32c:u32 length:u16 type:u8`` then the bytes; type 1 a whole
record, 2/3/4 the first/middle/last piece of one), each record a ``wandb_internal_pb2.Record``.
"""
from __future__ import annotations

import struct
from pathlib import Path

BLOCK = 32768
HEADER = 7


def records(path: Path):
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a W&B run file"
    pos, pieces = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # a block's tail too short for a record header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if kind == 0 and length == 0:
            pos += left
            continue
        chunk = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind in (1, 2):
            pieces = chunk
        else:
            pieces += chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pieces)
            yield record


def history(path: Path) -> list[dict]:
    """The logged rows (``run.log``) of a W&B run file, values parsed from their JSON."""
    import json

    rows = []
    for record in records(path):
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item})
    return rows
