"""labmcp-astm-lis's ASTM receiver (its E1381 link and message store, as its MCP server builds
them for `--option listen_port=N`) for the `astm` bench, without the MCP stdio front end: binds
a free port on 127.0.0.1, prints `listening PORT`, then `MESSAGE <records>` for every message
stored. Runs until stdin closes. The store is in memory (no `store_path`), so the disk is not
measured.
usage: astm_labmcp_count.py
"""
import sys

from labmcp_astm_lis.driver import ASTMReceiver, ListenTransport, ResultStore


class CountingStore(ResultStore):
    def add(self, records, *, source, complete):
        msg = super().add(records, source=source, complete=complete)
        print("MESSAGE", len(records), "complete" if complete else "incomplete", flush=True)
        return msg


link = ListenTransport("127.0.0.1", 0)
receiver = ASTMReceiver(
    lambda: link,
    mode="tcp-listen",
    where=link.description,
    store=CountingStore(redacted=False),
    redact=False,
    encoding="latin-1",
)
print("listening", link.port, flush=True)
sys.stdin.read()
receiver.close()
