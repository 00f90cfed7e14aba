// Handshake flood for test/netns/flood.test.ts and `npm run bench -- flood`, run in an
// attacker namespace: `ip netns exec NS node flood-tool.mjs HOST PORT PUBKEY RATE SECONDS SOURCES`.
//
// Sends handshake initiations (148 bytes, random body) that carry a VALID mac1 for
// PUBKEY (base64: the victim's public key, which any peer on the network knows) and no
// mac2, RATE a second for SECONDS, round robin over the source addresses SOURCES
// (comma-separated, each already on an interface of the namespace), from one socket
// per source. Cookie replies that come back are counted, not used. Bounded: at most
// RATE * SECONDS datagrams. Prints one JSON line: {sent, errors, cookieReplies, seconds}.
import dgram from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

const root = fileURLToPath(new URL('../..', import.meta.url));
const { computeMac1, mac1KeyFor } = await import(join(root, 'dist', 'src', 'noise', 'cookie.js'));

const [host, portS, pubB64, rateS, secondsS, sourcesS] = process.argv.slice(2);
const port = Number(portS);
const rate = Number(rateS);
const seconds = Number(secondsS);
const sources = sourcesS.split(',').filter((s) => s);
if (!host || !port || !rate || !seconds || !sources.length || rate > 1e6 || seconds > 120) {
  process.stderr.write('usage: flood-tool.mjs HOST PORT PUBKEY RATE(<=1e6) SECONDS(<=120) SOURCES\n');
  process.exit(2);
}
const mac1Key = mac1KeyFor(Buffer.from(pubB64, 'base64'));

// 512 distinct initiations, each with its own sender index and a valid mac1.
const msgs = [];
for (let i = 0; i < 512; i++) {
  const m = new Uint8Array(148);
  m.set(randomBytes(112), 4);
  m[0] = 1;
  m.set(computeMac1(mac1Key, m), 116);
  msgs.push(m);
}

let cookieReplies = 0;
const socks = await Promise.all(
  sources.map(
    (addr) =>
      new Promise((res, rej) => {
        const s = dgram.createSocket({ type: addr.includes(':') ? 'udp6' : 'udp4' });
        s.on('message', (d) => {
          if (d.length === 64 && d[0] === 3) cookieReplies++;
        });
        s.once('error', rej);
        s.bind(0, addr, () => {
          s.removeAllListeners('error');
          s.on('error', () => {});
          res(s);
        });
      }),
  ),
);

let sent = 0;
let errors = 0;
let inflight = 0;
const total = Math.floor(rate * seconds);
const start = performance.now();
const tickMs = 5;
await new Promise((done) => {
  const tick = () => {
    const elapsed = performance.now() - start;
    const due = Math.min(total, Math.floor((elapsed / 1000) * rate));
    // never more than 4096 sends waiting in libuv: the tool must not balloon either
    while (sent < due && inflight < 4096) {
      const s = socks[sent % socks.length];
      inflight++;
      s.send(msgs[sent % msgs.length], port, host, (err) => {
        inflight--;
        if (err) errors++;
      });
      sent++;
    }
    if (sent >= total || elapsed > seconds * 1000 + 2000) done();
    else setTimeout(tick, tickMs);
  };
  tick();
});
const took = (performance.now() - start) / 1000;
await new Promise((r) => setTimeout(r, 300)); // last cookie replies
for (const s of socks) s.close();
process.stdout.write(JSON.stringify({ sent, errors, cookieReplies, seconds: Math.round(took * 100) / 100 }) + '\n');
