// Small network programs for the acceptance netns tests, run inside a namespace
// with `ip netns exec NS node accept-tools.mjs MODE ...`. Plain Node, no build.
// Each prints JSON lines on stdout; the last line is the result.
//
//   serve ADDR PORT FILE MARKER   HTTP on ADDR:PORT (GET /blob -> FILE; POST /echo -> {bytes, sha256, marker})
//                                 and a UDP echo on ADDR:PORT; prints {"listening":true}, runs until killed
//   udp ADDR PORT MARKER COUNT    sends COUNT datagrams "MARKER <i>" to the echo, prints {sent, echoed, intact,
//                                 missing: the indices not echoed}
//   send HOST PORT                stdin: JSON array of hex datagrams; sends them 20 ms apart from one socket
//   flood HOST PORT COUNT SECONDS SEED
//                                 stdin: JSON {seeds: [hex...]} (captured genuine messages); sends COUNT
//                                 random and mutated datagrams spread over SECONDS; prints {sent, errors,
//                                 empty (zero-length ones), kinds}
import { createHash } from 'node:crypto';
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { isIPv6 } from 'node:net';

const [mode, ...args] = process.argv.slice(2);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const udpType = (addr) => (isIPv6(addr) ? 'udp6' : 'udp4');

async function readStdin() {
  let s = '';
  for await (const d of process.stdin) s += d;
  return s;
}

async function serve([addr, port, file, marker]) {
  const blob = readFileSync(file);
  const server = http.createServer((req, res) => {
    if (req.method === 'GET' && req.url === '/blob') {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': blob.length });
      res.end(blob);
      return;
    }
    if (req.method === 'POST' && req.url === '/echo') {
      const chunks = [];
      req.on('data', (c) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks);
        const r = { bytes: body.length, sha256: createHash('sha256').update(body).digest('hex'), marker: body.includes(marker) };
        out({ post: r });
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify(r));
      });
      return;
    }
    res.writeHead(404);
    res.end();
  });
  const sock = dgram.createSocket(udpType(addr));
  sock.on('message', (msg, rinfo) => sock.send(msg, rinfo.port, rinfo.address));
  await new Promise((r) => sock.bind(Number(port), addr, r));
  await new Promise((r) => server.listen(Number(port), addr, r));
  out({ listening: true });
}

async function udpClient([addr, port, marker, count]) {
  const n = Number(count);
  const sock = dgram.createSocket(udpType(addr));
  const seen = new Set();
  let intact = 0;
  sock.on('message', (msg) => {
    const s = msg.toString();
    const m = /^(\S+) (\d+)$/.exec(s);
    if (m && m[1] === marker && !seen.has(m[2])) {
      seen.add(m[2]);
      intact++;
    }
  });
  await new Promise((r) => sock.bind(0, r));
  for (let i = 0; i < n; i++) {
    sock.send(`${marker} ${i}`, Number(port), addr);
    await sleep(5);
  }
  const deadline = Date.now() + 3000;
  while (seen.size < n && Date.now() < deadline) await sleep(50);
  sock.close();
  const missing = [];
  for (let i = 0; i < n; i++) if (!seen.has(String(i))) missing.push(i);
  out({ sent: n, echoed: seen.size, intact, missing });
}

async function send([host, port]) {
  const list = JSON.parse(await readStdin());
  const sock = dgram.createSocket(udpType(host));
  await new Promise((r) => sock.bind(0, r));
  for (const hex of list) {
    await new Promise((r, j) => sock.send(Buffer.from(hex, 'hex'), Number(port), host, (e) => (e ? j(e) : r())));
    await sleep(20);
  }
  sock.close();
  out({ sent: list.length });
}

/** xorshift128+ so a failing run can be replayed from its seed. */
function prng(seed) {
  let a = BigInt(seed) | 1n;
  let b = (BigInt(seed) * 0x9e3779b97f4a7c15n) & 0xffffffffffffffffn | 2n;
  const M = 0xffffffffffffffffn;
  return () => {
    let x = a;
    const y = b;
    a = y;
    x ^= (x << 23n) & M;
    b = x ^ y ^ (x >> 17n) ^ (y >> 26n);
    return Number(((b + y) & M) >> 11n) / 2 ** 53;
  };
}

async function flood([host, port, count, seconds, seed]) {
  const { seeds: hexSeeds } = JSON.parse(await readStdin());
  const seeds = hexSeeds.map((h) => Buffer.from(h, 'hex'));
  const rnd = prng(Number(seed));
  const int = (n) => Math.floor(rnd() * n);
  const bytes = (n) => {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = int(256);
    return b;
  };
  const kinds = { random: 0, typed: 0, handshake_len: 0, mutated: 0, truncated: 0, extended: 0, retyped: 0 };
  let empty = 0; // zero-length datagrams among them (any kind)
  const make = () => {
    const m = make1();
    if (m.length === 0) empty++;
    return m;
  };
  const make1 = () => {
    const k = int(10);
    if (k < 3 || seeds.length === 0) {
      kinds.random++;
      return bytes(int(2001)); // 0..2000 bytes of noise
    }
    if (k < 5) {
      // a valid-looking header: type 1..4, zero reserved bytes, random rest
      kinds.typed++;
      const b = bytes(int(2001 - 4) + 4);
      b[0] = 1 + int(4);
      b[1] = b[2] = b[3] = 0;
      return b;
    }
    if (k < 6) {
      // the exact length of a handshake message: reaches the control plane
      kinds.handshake_len++;
      const t = 1 + int(3);
      const b = bytes(t === 1 ? 148 : t === 2 ? 92 : 64);
      b[0] = t;
      b[1] = b[2] = b[3] = 0;
      return b;
    }
    const s = Buffer.from(seeds[int(seeds.length)]);
    if (k < 8) {
      kinds.mutated++;
      const flips = 1 + int(8);
      for (let i = 0; i < flips; i++) s[int(s.length)] ^= 1 + int(255);
      return s;
    }
    if (k < 9) {
      if (rnd() < 0.5) {
        kinds.truncated++;
        return s.subarray(0, int(s.length));
      }
      kinds.extended++;
      return Buffer.concat([s, bytes(1 + int(64))]);
    }
    kinds.retyped++;
    s[0] = rnd() < 0.8 ? 1 + int(4) : int(256);
    return s;
  };
  const n = Number(count);
  const total = Number(seconds) * 1000;
  const sock = dgram.createSocket(udpType(host));
  await new Promise((r) => sock.bind(0, r));
  const start = Date.now();
  let sent = 0;
  let errors = 0;
  const batch = 50;
  while (sent < n) {
    const m = Math.min(batch, n - sent);
    await Promise.all(
      Array.from({ length: m }, () => new Promise((r) => sock.send(make(), Number(port), host, (e) => (e && errors++, r())))),
    );
    sent += m;
    const due = start + (sent / n) * total; // bounded rate: n over `seconds`
    const wait = due - Date.now();
    if (wait > 0) await sleep(wait);
  }
  sock.close();
  out({ sent, errors, empty, kinds, ms: Date.now() - start });
}

const modes = { serve, udp: udpClient, send, flood };
if (!modes[mode]) {
  process.stderr.write(`accept-tools: unknown mode ${mode}\n`);
  process.exit(2);
}
modes[mode](args).catch((e) => {
  process.stderr.write(`accept-tools ${mode}: ${e.stack ?? e}\n`);
  process.exit(1);
});
