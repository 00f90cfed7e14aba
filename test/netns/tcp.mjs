// TCP transfer with a checksum for interop.test.ts, run inside a namespace with plain node.
//   node interop-tcp.mjs server ADDR PORT            prints {"listening":true}; after one
//                                                    connection ends, {"bytes":N,"sha256":H}
//   node interop-tcp.mjs client ADDR PORT BYTES MS   sends BYTES random bytes, prints
//                                                    {"bytes":N,"sha256":H}; exits 1 when
//                                                    the transfer does not finish in MS ms
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';

const [mode, addr, portStr, bytesStr, msStr] = process.argv.slice(2);
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
  const data = randomBytes(Number(bytesStr));
  const timer = setTimeout(() => {
    console.error(`transfer to ${addr}:${port} did not finish within ${msStr} ms`);
    process.exit(1);
  }, Number(msStr));
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
  console.error('usage: interop-tcp.mjs server ADDR PORT | client ADDR PORT BYTES TIMEOUT_MS');
  process.exit(2);
}
