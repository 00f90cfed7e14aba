// TCP transfer helper for engine.test.ts, run inside a namespace with plain node.
//   node engine-tcp.mjs server ADDR PORT        prints {"listening":true}, then after one
//                                               connection ends {"bytes":N,"sha256":H}
//   node engine-tcp.mjs client ADDR PORT BYTES MARKER
//                                               sends BYTES bytes (MARKER repeated, then
//                                               random), prints {"bytes":N,"sha256":H}
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';

const [mode, addr, portStr, bytesStr, marker] = process.argv.slice(2);
const port = Number(portStr);
if (mode === 'server') {
  const srv = net.createServer((sock) => {
    const h = createHash('sha256');
    let n = 0;
    sock.on('data', (d) => {
      h.update(d);
      n += d.length;
    });
    sock.on('end', () => {
      console.log(JSON.stringify({ bytes: n, sha256: h.digest('hex') }));
      sock.end();
      srv.close();
    });
  });
  srv.listen(port, addr, () => console.log(JSON.stringify({ listening: true })));
} else if (mode === 'client') {
  const total = Number(bytesStr);
  const half = Buffer.alloc(Math.floor(total / 2), marker);
  const data = Buffer.concat([half, randomBytes(total - half.length)]);
  const sock = net.connect(port, addr, () => {
    sock.end(data);
  });
  sock.on('error', (e) => {
    console.error(String(e));
    process.exit(1);
  });
  sock.on('close', () => {
    console.log(JSON.stringify({ bytes: data.length, sha256: createHash('sha256').update(data).digest('hex') }));
  });
  sock.resume();
} else {
  console.error('usage: engine-tcp.mjs server|client ...');
  process.exit(2);
}
