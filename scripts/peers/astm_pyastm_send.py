"""Sends one message with python-astm 0.5.0 (needs pyshim on PYTHONPATH).

Records: H, P, O, R, a 300-character C, L. With CHUNK 247 python-astm splits records into
247-byte frames, so the receiver must join ETB frames.
usage: astm_pyastm_send.py PORT [CHUNK]
"""
import sys

from astm.client import Client

port = int(sys.argv[1])
chunk = int(sys.argv[2]) if len(sys.argv) > 2 else None


def records():
    # python-astm's record classes drop most fields; plain lists are sent as they are.
    ok = yield ["H", [[], [None, "&"]], None, None, ["PyASTM", "0.5"], None, None, None, None, "LIS", None, "P", "1", "20240101120000"]
    assert ok
    ok = yield ["P", "1", "PID777", None, None, ["Roe", "Jane"], None, "19750505", "F"]
    assert ok
    ok = yield ["O", "1", "SAMPLE9", None, [None, None, None, "GLU"], "R"]
    assert ok
    ok = yield ["R", "1", [None, None, None, "GLU"], "5.4", "mmol/L", "3.9-6.1", "N", None, "F"]
    assert ok
    ok = yield ["C", "1", "I", "Z" * 300, "G"]
    assert ok
    yield ["L", "1", "N"]


Client(records, host="127.0.0.1", port=port, timeout=20, chunk_size=chunk).run(timeout=1.0)
print("python-astm client done")
