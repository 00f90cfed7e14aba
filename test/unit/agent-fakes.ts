/**
 * Fakes for the agent's unit tests: a registry with nothing in it but what a test
 * gives, and a pod proxy's control socket that answers every request ok.
 */
import { mkdirSync, rmSync } from 'node:fs';
import { connect, createServer, type Server } from 'node:net';
import { dirname } from 'node:path';
import { podSocket } from '../../src/agent/netns.js';
import type { Registry } from '../../src/registry/registry.js';

/** A registry of project alpha with no objects; `over` replaces any method. */
export function stubRegistry(over: Partial<Registry> = {}): Registry {
  return {
    projects: async () => ['alpha'],
    pods: async () => [],
    services: async () => [],
    endpoints: async () => [],
    peers: async () => [],
    pskFile: async () => {
      throw new Error('no psk in this test');
    },
    publishPeer: async () => {},
    withdrawPeer: async () => {},
    watch: () => ({ close() {} }),
    ...over,
  };
}

export interface FakeRequest {
  id: number;
  op: string;
  peer?: { publicKey: string };
  /** rekey's key */
  publicKey?: string;
}

/**
 * A fake proxy at `path`: answers every control request ok (status names `publicKey`, no
 * peers) and keeps the requests in `requests`; a request `refuse` returns a message for
 * is answered with that error instead (EINVAL, as the pod refuses a value).
 */
export function fakeProxy(path: string, publicKey: string, requests: FakeRequest[] = [], refuse: (req: FakeRequest) => string | null = () => null): Promise<Server> {
  const server = createServer((c) => {
    let buf = '';
    c.setEncoding('utf8').on('data', (d: string) => {
      buf += d;
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const req = JSON.parse(buf.slice(0, nl)) as FakeRequest;
        buf = buf.slice(nl + 1);
        requests.push(req);
        const no = refuse(req);
        if (no !== null) {
          c.write(JSON.stringify({ id: req.id, ok: false, error: { code: 'EINVAL', message: no } }) + '\n');
          continue;
        }
        const result = req.op === 'status' ? { publicKey, peers: [] } : req.op === 'rekey' ? { peers: [] } : {};
        c.write(JSON.stringify({ id: req.id, ok: true, result }) + '\n');
      }
    });
    c.on('error', () => {});
  });
  return new Promise((resolve) => server.listen(path, () => resolve(server)));
}

/**
 * A fakeProxy on the control socket of the pod whose network namespace is `netns`, where
 * the agent looks for it (podSocket): adopted as that pod's running proxy. Its close and
 * the socket's removal go on `cleanup`.
 */
export async function fakePodProxy(netns: string, publicKey: string, requests: FakeRequest[], cleanup: (() => void | Promise<void>)[], refuse?: (req: FakeRequest) => string | null): Promise<void> {
  const socket = podSocket(netns);
  mkdirSync(dirname(socket), { recursive: true });
  rmSync(socket, { force: true });
  const server = await fakeProxy(socket, publicKey, requests, refuse);
  cleanup.push(() => new Promise<void>((r) => server.close(() => r())));
  cleanup.push(() => rmSync(socket, { force: true }));
}

/** An answer line of the node agent's socket. */
export interface NodeAnswer {
  id?: unknown;
  ok: boolean;
  result?: Record<string, unknown>;
  error?: { code: string; message: string };
}

/** One raw request line on the node agent's socket at `path` (newline added); the first answer line, parsed. */
export function nodeLine(path: string, line: string): Promise<NodeAnswer> {
  return new Promise((resolve, reject) => {
    const c = connect(path);
    let buf = '';
    c.setEncoding('utf8');
    c.on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl >= 0) {
        c.destroy();
        resolve(JSON.parse(buf.slice(0, nl)) as NodeAnswer);
      }
    });
    c.on('error', reject);
    c.write(line + '\n');
  });
}

/** One request on the node agent's socket, as the CNI plugin sends it (id 1). */
export const nodeRequest = (path: string, m: Record<string, unknown>): Promise<NodeAnswer> => nodeLine(path, JSON.stringify({ id: 1, ...m }));
