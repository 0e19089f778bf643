"""An ASTM receiver with python-astm 0.5.0 for the `astm` bench (needs pyshim on PYTHONPATH):
like astm_pyastm_recv.py, but prints one line per message, `MESSAGE <records>`, so that
printing does not weigh on the peer's time.
usage: astm_pyastm_count.py   binds a free port on 127.0.0.1 and prints `listening PORT`
"""
import astm.asynclib
from astm.codec import decode_message
from astm.server import BaseRecordsDispatcher, Server

# python-astm resets its input buffer to a str when a read ends mid-frame and then fails on the
# next bytes; keep partial data buffered instead (as astm_pyastm_recv.py does).
astm.asynclib.AsyncChat._lookup_none_terminator = lambda self, terminator: None


class Counter(BaseRecordsDispatcher):
    # python-astm hands over one frame at a time (its "message"); an ASTM message ends with
    # its terminator (L) record.
    records = 0

    def __call__(self, message):
        _seq, records, _cs = decode_message(message, self.encoding)
        for r in records:
            self.records += 1
            if r[0] == "L":
                print("MESSAGE", self.records, flush=True)
                self.records = 0


server = Server(host="127.0.0.1", port=0, dispatcher=Counter, timeout=60)
print("listening", server.socket.getsockname()[1], flush=True)
server.serve_forever()
