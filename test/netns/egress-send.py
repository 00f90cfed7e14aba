#!/usr/bin/env python3
"""Sends one UDP datagram past the routing table, as test/netns/enforce.test.ts needs.

usage: egress-send.py MODE DST PORT IFNAME PAYLOAD
MODE: pktinfo      IP_PKTINFO / IPV6_PKTINFO with ipi_ifindex of IFNAME (sendmsg)
      dontroute    SO_DONTROUTE (no routing table: the on-link interface)
      bindtodevice SO_BINDTODEVICE IFNAME
Prints one JSON line: {"mode", "dst", "sent": bool, "errno": name or null}.
"""
import errno
import json
import socket
import struct
import sys

IP_PKTINFO = 8  # linux/in.h; Python's socket module lacks it

mode, dst, port, ifname, payload = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5].encode()
v6 = ':' in dst
s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
err = None
try:
    if mode == 'pktinfo':
        idx = socket.if_nametoindex(ifname)
        if v6:
            anc = [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, struct.pack('16sI', b'\0' * 16, idx))]
        else:
            anc = [(socket.IPPROTO_IP, IP_PKTINFO, struct.pack('I4s4s', idx, b'\0' * 4, b'\0' * 4))]
        s.sendmsg([payload], anc, 0, (dst, port))
    elif mode == 'dontroute':
        s.setsockopt(socket.SOL_SOCKET, socket.SO_DONTROUTE, 1)
        s.sendto(payload, (dst, port))
    elif mode == 'bindtodevice':
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        s.sendto(payload, (dst, port))
    else:
        raise SystemExit('unknown mode ' + mode)
except OSError as e:
    err = errno.errorcode.get(e.errno, str(e.errno))
print(json.dumps({'mode': mode, 'dst': dst, 'sent': err is None, 'errno': err}))
