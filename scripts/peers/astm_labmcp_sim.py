"""Plays an analyzer against an ASTM receiver: labmcp-astm-lis's wire simulator over TCP.

It sends two messages (a CBC with 20 results and a chemistry panel); one frame of the first
goes out with a flipped bit, so a correct receiver must NAK it and get it again.
usage: astm_labmcp_sim.py PORT   prints: messages_sent=N naks_received=M, then the simulator log
"""
import socket
import sys
import time

from labmcp_astm_lis.simulator import ASTMAnalyzerSimulator

sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
sock.settimeout(0.2)
sim = ASTMAnalyzerSimulator(gap_s=0.2)
sim.attach(sock.sendall)
give_up = time.time() + 60
while not sim.done and time.time() < give_up:
    try:
        data = sock.recv(4096)
    except socket.timeout:
        continue
    if not data:
        break
    reply = sim.handle_bytes(data)
    if reply:
        sock.sendall(reply)
time.sleep(0.3)
sim.stop()
sock.close()
print(f"messages_sent={sim.messages_sent} naks_received={sim.naks_received}")
print("\n".join(sim.log))
