"""An ASTM receiver with python-astm 0.5.0 (needs pyshim on PYTHONPATH). Prints
`RECORD <record>` for every record of every message, flushing as it goes.
usage: astm_pyastm_recv.py PORT
"""
import sys

import astm.asynclib
from astm.codec import decode_message
from astm.server import BaseRecordsDispatcher, Server

# python-astm resets its input buffer to a str when a read ends mid-frame and then fails on the
# next bytes; keep partial data buffered instead.
astm.asynclib.AsyncChat._lookup_none_terminator = lambda self, terminator: None


class Printer(BaseRecordsDispatcher):
    def __call__(self, message):
        _seq, records, _cs = decode_message(message, self.encoding)
        for r in records:
            print("RECORD", r, flush=True)


print("listening", flush=True)
Server(host="127.0.0.1", port=int(sys.argv[1]), dispatcher=Printer, timeout=30).serve_forever()
