#!/usr/bin/env python3
"""UDP helper for engine.test.ts, run inside a namespace.

  engine-udp.py server ADDR PORT COUNT
      prints {"listening": true}; then, after COUNT datagrams or 5 s of silence,
      {"count": n, "bytes": b, "digest": sha256 over the sorted datagrams}
  engine-udp.py client ADDR PORT SEG SIZE REPEAT
      sends REPEAT buffers of SIZE bytes; SEG > 0 uses UDP_SEGMENT (UDP GSO), so
      the kernel hands the TUN device one USO super-packet per buffer. Prints the
      same digest computed over the datagrams it meant to send.
"""
import hashlib
import json
import os
import socket
import sys
import time

SOL_UDP = 17
UDP_SEGMENT = 103


def digest(dgrams):
    h = hashlib.sha256()
    for d in sorted(dgrams):
        h.update(len(d).to_bytes(4, "big") + d)
    return {"count": len(dgrams), "bytes": sum(len(d) for d in dgrams), "digest": h.hexdigest()}


def family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def main():
    mode, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    s = socket.socket(family(addr), socket.SOCK_DGRAM)
    if mode == "server":
        count = int(sys.argv[4])
        s.bind((addr, port))
        s.settimeout(5)
        print(json.dumps({"listening": True}), flush=True)
        got = []
        try:
            while len(got) < count:
                got.append(s.recv(65535))
        except socket.timeout:
            pass
        print(json.dumps(digest(got)), flush=True)
    else:
        seg, size, repeat = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
        if seg > 0:
            s.setsockopt(SOL_UDP, UDP_SEGMENT, seg)
        sent = []
        for _ in range(repeat):
            buf = os.urandom(size)
            s.sendto(buf, (addr, port))
            step = seg if seg > 0 else size
            sent += [buf[i : i + step] for i in range(0, size, step)]
            time.sleep(0.01)
        print(json.dumps(digest(sent)), flush=True)


main()
