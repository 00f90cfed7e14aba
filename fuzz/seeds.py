#!/usr/bin/env python3
"""seeds.py OUTDIR: writes a seed corpus per harness (OUTDIR/<name>/) of well-formed
packets in each harness's input format: IPv4/IPv6 TCP and UDP with correct
checksums, IPv4 options, IPv4 and IPv6 fragments, an IPv6 extension header,
ICMP/ICMPv6 errors quoting an inner header, TSO/USO super-packets behind a
virtio_net_hdr, runs of TCP segments GRO can merge, packets to and from the NAT
harness's VIPs, WireGuard-shaped messages for the receive path. Built here (not
captured): every field is the one the kernel writes for such a packet."""
import os, struct, sys

def csum(b):
    if len(b) % 2: b += b'\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff

def a4(s): return bytes(int(x) for x in s.split('.'))
def a6(last): return b'\xfd' + bytes(13) + struct.pack('!H', last)  # fd00::last

def ip4(src, dst, proto, payload, ident=1, frag=0x4000, opts=b''):
    ihl = (20 + len(opts)) // 4
    h = struct.pack('!BBHHHBBH4s4s', 0x40 | ihl, 0, 20 + len(opts) + len(payload), ident, frag, 64, proto, 0, src, dst) + opts
    h = h[:10] + struct.pack('!H', csum(h)) + h[12:]
    return h + payload

def ip6(src, dst, nh, payload):
    return struct.pack('!IHBB16s16s', 0x60000000, len(payload), nh, 64, src, dst) + payload

def pseudo(v6, src, dst, proto, l4):
    if v6: return src + dst + struct.pack('!IxxxB', len(l4), proto)
    return src + dst + struct.pack('!xBH', proto, len(l4))

def tcp(v6, src, dst, sp, dp, seq, payload, flags=0x10, opts=b''):
    off = (20 + len(opts)) // 4
    t = struct.pack('!HHIIBBHHH', sp, dp, seq, 1000, off << 4, flags, 65535, 0, 0) + opts + payload
    c = csum(pseudo(v6, src, dst, 6, t) + t)
    return t[:16] + struct.pack('!H', c) + t[18:]

def udp(v6, src, dst, sp, dp, payload):
    u = struct.pack('!HHHH', sp, dp, 8 + len(payload), 0) + payload
    c = csum(pseudo(v6, src, dst, 17, u) + u) or 0xffff
    return u[:6] + struct.pack('!H', c) + u[8:]

S4, D4, VIP4, L4 = a4('10.0.0.2'), a4('10.0.0.1'), a4('10.96.0.10'), a4('10.0.0.1')
S6, D6 = a6(2), a6(1)
VIP6 = b'\xfd\0\0\x96' + bytes(11) + b'\x10'
TS = bytes([1, 1, 8, 10]) + struct.pack('!II', 12345, 678)

def tcp4(src, dst, sp, dp, seq, pl, flags=0x10, ident=1):
    return ip4(src, dst, 6, tcp(False, src, dst, sp, dp, seq, pl, flags, TS), ident)
def tcp6(src, dst, sp, dp, seq, pl, flags=0x10):
    return ip6(src, dst, 6, tcp(True, src, dst, sp, dp, seq, pl, flags, TS))
def udp4(src, dst, sp, dp, pl): return ip4(src, dst, 17, udp(False, src, dst, sp, dp, pl))
def udp6(src, dst, sp, dp, pl): return ip6(src, dst, 17, udp(True, src, dst, sp, dp, pl))

def icmp4_echo(src, dst, n=56):
    m = struct.pack('!BBHHH', 8, 0, 0, 7, 1) + bytes(range(n % 256)) [:n]
    m = m[:2] + struct.pack('!H', csum(m)) + m[4:]
    return ip4(src, dst, 1, m)
def icmp4_unreach(src, dst, quoted):
    m = struct.pack('!BBHI', 3, 3, 0, 0) + quoted[:28 + 0]
    m = m[:2] + struct.pack('!H', csum(m)) + m[4:]
    return ip4(src, dst, 1, m)
def icmp6_unreach(src, dst, quoted):
    m = struct.pack('!BBHI', 1, 4, 0, 0) + quoted[:1232]
    c = csum(pseudo(True, src, dst, 58, m) + m)
    return ip6(src, dst, 58, m[:2] + struct.pack('!H', c) + m[4:])
def frag4(pkt):
    ihl = (pkt[0] & 15) * 4
    body = pkt[ihl:]
    a = ip4(pkt[12:16], pkt[16:20], pkt[9], body[:64], 77, 0x2000)
    b = ip4(pkt[12:16], pkt[16:20], pkt[9], body[64:], 77, 8)
    return [a, b]
def frag6(src, dst, payload):
    fh = struct.pack('!BBHI', 17, 0, 0x0001, 0xabcd)  # next UDP, offset 0, M=1
    return ip6(src, dst, 44, fh + payload[:64])
def hopopt6(src, dst, inner_l4, nh):
    hbh = struct.pack('!BB', nh, 0) + bytes([1, 4, 0, 0, 0, 0])
    return ip6(src, dst, 0, hbh + inner_l4)

def inner_set():
    pl = bytes((i * 7) & 0xff for i in range(300))
    u4 = udp4(S4, D4, 5353, 53, b'\x12\x34\x01\x00\x00\x01' + bytes(6) + b'\x03www\x07example\x03com\x00\x00\x01\x00\x01')
    pk = [
        tcp4(S4, D4, 40000, 80, 1, b'', 0x02), tcp4(S4, D4, 40000, 80, 1000, pl), tcp4(S4, VIP4, 40001, 80, 5, pl[:100], 0x18),
        tcp6(S6, D6, 40002, 443, 9, pl[:200]), tcp6(S6, VIP6, 40003, 80, 9, pl[:60], 0x18),
        u4, udp4(S4, VIP4, 40004, 53, pl[:40]), udp6(S6, D6, 40005, 53, pl[:40]), udp6(S6, VIP6, 40006, 80, pl[:9]),
        ip4(S4, D4, 6, tcp(False, S4, D4, 1, 2, 3, pl[:50]), opts=bytes([1, 1, 1, 0])),
        icmp4_echo(S4, D4), icmp4_unreach(D4, S4, u4), icmp6_unreach(D6, S6, udp6(S6, D6, 1, 2, pl[:20])),
        frag6(S6, D6, pl), hopopt6(S6, D6, udp(True, S6, D6, 7, 53, pl[:30]), 17),
        ip4(L4, S4, 6, tcp(False, L4, S4, 80, 40001, 77, pl[:30])),  # a reply from the local service
    ] + frag4(udp4(S4, D4, 1000, 2000, pl[:150]))
    return pk

def tcp_run(v6, n, size, psh_last=True):
    src, dst = (S6, D6) if v6 else (S4, D4)
    out = []
    for i in range(n):
        fl = 0x18 if (psh_last and i == n - 1) else 0x10
        pl = bytes(((i + j) * 13) & 0xff for j in range(size if i < n - 1 else size // 2))
        out.append(tcp6(src, dst, 5201, 40000, 1 + i * size, pl, fl) if v6 else tcp4(src, dst, 5201, 40000, 1 + i * size, pl, fl, ident=100 + i))
    return out

def vnet(flags, gso_type, hdr_len, gso_size, cstart, coff):
    return struct.pack('<BBHHHH', flags, gso_type, hdr_len, gso_size, cstart, coff)

def rec(b): return struct.pack('<H', len(b)) + b

def main(out):
    def put(name, i, data):
        d = os.path.join(out, name); os.makedirs(d, exist_ok=True)
        open(os.path.join(d, 'seed%03d' % i), 'wb').write(data)
    inner = inner_set()
    # nat: one packet per seed and some sequences (request then reply)
    for i, p in enumerate(inner):
        put('nat', i, rec(p))
    # (a record's length parity is its direction: even = receive/dnat, odd = send/unsnat)
    put('nat', 100, rec(tcp4(S4, VIP4, 40001, 80, 5, b'x' * 8)) + rec(tcp4(L4, S4, 80, 40001, 9, b'y' * 9)))
    put('nat', 101, rec(tcp6(S6, VIP6, 40003, 80, 5, b'x' * 8)) + rec(tcp6(D6, S6, 80, 40003, 9, b'y' * 9)))
    # a clash: the same client socket to a second VIP of the same local address (refused), then the reply
    put('nat', 102, rec(tcp4(S4, VIP4, 40007, 80, 5, b'x' * 8)) + rec(tcp4(S4, a4('10.96.0.11'), 40007, 80, 5, b'x' * 8)) +
        rec(tcp4(L4, S4, 80, 40007, 9, b'y' * 9)))
    # gro: runs of segments (v4, v6, with the odd one out)
    runs = [tcp_run(False, 8, 1000), tcp_run(True, 5, 1200), tcp_run(False, 64, 100), tcp_run(False, 3, 1448)[:2] + [inner[0]]]
    for i, r in enumerate(runs):
        put('gro', i, b'\x01' + b''.join(rec(p) for p in r))
        put('gro', 10 + i, b'\x10' + b''.join(rec(p) for p in r))
    # offload: TSO v4/v6 and USO super-packets, NEEDS_CSUM single packets
    big = bytes((j * 31) & 0xff for j in range(6000))
    t4 = tcp4(S4, D4, 40000, 80, 1, big, 0x19); t6 = tcp6(S6, D6, 40000, 80, 1, big, 0x99)
    u4 = udp4(S4, D4, 4000, 5000, big[:3000]); u6 = udp6(S6, D6, 4000, 5000, big[:3000])
    seeds = [
        vnet(1, 1, 52, 1448, 20, 16) + b'\0' + t4, vnet(1, 4, 72, 1428, 40, 16) + b'\x01' + t6,
        vnet(1, 1 | 0x80, 52, 1000, 20, 16) + b'\x06' + t4, vnet(1, 5, 28, 1472, 20, 6) + b'\x01' + u4,
        vnet(1, 5, 48, 1200, 40, 6) + b'\x00' + u6, vnet(1, 0, 0, 0, 20, 16) + b'\0' + tcp4(S4, D4, 1, 2, 3, big[:500]),
        vnet(1, 0, 0, 0, 40, 6) + b'\0' + udp6(S6, D6, 1, 2, big[:99]),
    ]
    for i, s in enumerate(seeds): put('offload', i, s)
    # rx: sealed records carrying the inner packets, GSO groups, raw handshake/junk
    def sealed(p, kp=0, step=257, gso=False):
        ctl = 1 | (2 if gso else 0) | (kp << 2)
        return bytes([ctl]) + struct.pack('<HH', len(p), step) + p
    def raw(b, gso=False): return bytes([2 if gso else 0]) + struct.pack('<H', len(b)) + b
    hs1 = b'\x01\0\0\0' + bytes(144)
    n = 0
    for eng in range(4):
        put('rx', n, bytes([eng]) + b''.join(sealed(p) for p in inner)); n += 1
        run = tcp_run(False, 10, 1000)
        put('rx', n, bytes([eng]) + b''.join(sealed(p, gso=i > 0) for i, p in enumerate(run))); n += 1
        put('rx', n, bytes([eng]) + sealed(b'') + sealed(inner[1], kp=1) + sealed(inner[1], step=0) + raw(hs1) + raw(b'\x04\0\0\0' + bytes(28))); n += 1
    put('rx', n, b'\0' + b''.join(sealed(p, gso=i > 0) for i, p in enumerate(tcp_run(True, 6, 1100)))); n += 1
    # more messages in one receive batch than its list holds (RX_BATCH * 64): 34
    # datagrams of 128 small segments each (a local sender's UDP GSO), every one
    # opened and injected, none lost
    echo = icmp4_echo(S4, D4, 8)
    for eng in (0, 2):
        put('rx', n, bytes([eng]) + b''.join(sealed(echo, gso=i % 128 > 0) for i in range(128 * 34))); n += 1
    # replaywin (the replay window): in order, reordered, replays, jumps past the window
    put('replaywin', 0, b''.join(bytes([0]) + struct.pack('<Q', 1) for _ in range(50)))
    put('replaywin', 1, b''.join(bytes([k]) + struct.pack('<Q', v) for k, v in [(0, 8200), (1, 8128), (1, 8129), (1, 8127), (0, 64), (1, 3), (1, 3), (3, 0), (3, 1), (2, 2**64 - 8193)]))
    # allowedips: /32, /24, /0, /128, /64, overlap and removal
    ops = [(0, 32, a4('10.0.0.2'), 1), (0, 24, a4('10.0.0.0'), 2), (0, 0, a4('0.0.0.0'), 3), (3, 32, a4('10.0.0.9'), 0),
           (1, 24, a4('10.0.0.0'), 2), (4, 128, S6, 4), (4, 64, S6, 5), (7, 128, D6, 0), (6, 0, S6, 5), (2, 0, S4, 1)]
    put('allowedips', 0, b''.join(bytes([k, l]) + a + bytes([p]) for k, l, a, p in ops))
    dnsio_seeds(put)

def dnsio_seeds(put):
    import struct as st
    # mode, slot u16, slots u8, metaless u8, txlen u16, txn u8, then datagrams (count, u16 lens),
    # tx entries (offset u32, length u32, family u8, port-choice u8), count u8
    def one(mode, slot, slots, txlen, txn, lens, entries, count):
        b = bytes([mode]) + st.pack('<H', slot) + bytes([slots, 0]) + st.pack('<H', txlen) + bytes([txn])
        if (mode & 0x1c) == 0x1c: b += b'\0'
        b += bytes([len(lens)]) + b''.join(st.pack('<H', l) for l in lens)
        for off, ln, fam in entries: b += st.pack('<II', off, ln) + bytes([fam, 1])
        return b + bytes([count])
    q = [40, 29, 512, 1400]  # DNS-sized queries, one longer than a 512-byte slot (truncated)
    put('dnsio', 0, one(0, 0, 4, 1024, 2, q, [(0, 40, 4), (40, 100, 4)], 2))
    put('dnsio', 1, one(1, 988, 8, 2048, 3, q * 3, [(0, 40, 6), (40, 100, 6), (0, 0, 6)], 3))
    put('dnsio', 2, one(2, 3584, 2, 512, 1, [0xffff, 3], [(0, 64, 0)], 1))
    put('dnsio', 3, one(0x60, 0, 1, 64, 1, [10, 20, 30], [(0, 10, 4)], 1))
    put('dnsio', 4, one(0x80 | 1, 100, 64, 100, 4, [], [(90, 20, 4), (0, 1, 9), (0, 1, 4), (0, 1, 4)], 4))
    put('dnsio', 5, one(0x1c, 100, 1, 0, 0, [1], [], 0))

if __name__ == '__main__':
    main(sys.argv[1])
