/**
 * Free loopback TCP ports for servers a test starts itself (etcd, Prometheus, agents).
 *
 * A port the kernel picks with listen(0) is an ephemeral one: once closed, any outgoing
 * connection of the busy suite may take it as its local port before the server binds it
 * (a port collision that fails a run now and then). These ports are picked below the
 * kernel's ephemeral range instead, where only explicit listens land, and are checked
 * free before they are handed out.
 */
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';

function ephemeralLow(): number {
  try {
    const [low] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    return Number.isInteger(low) && low > 2048 ? low : 32768;
  } catch {
    return 32768;
  }
}

function listenable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/** `count` consecutive free ports below the ephemeral range (the first is returned). */
export async function freePortRun(count: number): Promise<number> {
  const high = ephemeralLow() - count;
  const low = Math.max(1024, high - 12000);
  for (let attempt = 0; attempt < 200; attempt++) {
    const p = low + Math.floor(Math.random() * (high - low));
    let ok = true;
    for (let i = 0; i < count && ok; i++) ok = await listenable(p + i);
    if (ok) return p;
  }
  throw new Error(`no ${count} consecutive free loopback ports below ${high + count}`);
}

/** One free port below the ephemeral range. */
export function freePort(): Promise<number> {
  return freePortRun(1);
}
