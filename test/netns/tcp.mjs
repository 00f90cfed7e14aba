// TCP transfer with a checksum for the netns tests (engine, interop), run inside a namespace
// with plain node.
//   node tcp.mjs server ADDR PORT                 prints {"listening":true}; after one
//                                                 connection ends, {"bytes":N,"sha256":H}
//   node tcp.mjs client ADDR PORT BYTES MS [MARKER]
//                                                 sends BYTES bytes (random; with MARKER, the
//                                                 first half is MARKER repeated, to find in a
//                                                 capture), prints {"bytes":N,"sha256":H};
//                                                 exits 1 when the transfer does not finish
//                                                 in MS ms (0: no limit)
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';

const [mode, addr, portStr, bytesStr, msStr, marker] = process.argv.slice(2);
const port = Number(portStr);
if (mode === 'server') {
  const srv = net.createServer((sock) => {
    const h = createHash('sha256');
    let n = 0;
    sock.on('data', (d) => {
      h.update(d);
      n += d.length;
    });
    sock.on('error', (e) => {
      console.error(String(e));
      process.exit(1);
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
  const half = marker ? Buffer.alloc(Math.floor(total / 2), marker) : Buffer.alloc(0);
  const data = Buffer.concat([half, randomBytes(total - half.length)]);
  const timer =
    Number(msStr) > 0
      ? setTimeout(() => {
          console.error(`transfer to ${addr}:${port} did not finish within ${msStr} ms`);
          process.exit(1);
        }, Number(msStr))
      : undefined;
  const sock = net.connect(port, addr, () => sock.end(data));
  sock.on('error', (e) => {
    console.error(String(e));
    process.exit(1);
  });
  sock.on('close', () => {
    clearTimeout(timer);
    console.log(JSON.stringify({ bytes: data.length, sha256: createHash('sha256').update(data).digest('hex') }));
  });
  sock.resume();
} else {
  console.error('usage: tcp.mjs server ADDR PORT | client ADDR PORT BYTES TIMEOUT_MS [MARKER]');
  process.exit(2);
}
