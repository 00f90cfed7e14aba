/**
 * Control socket: newline-delimited JSON over a unix socket, against a fake handler.
 */
import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { mkdtempSync, rmSync, statSync, existsSync, lstatSync, mkdirSync, chmodSync } from 'node:fs';
import { createConnection } from 'node:net';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ControlServer, controlRequest, defaultSocketPath, ControlClientError, type ControlHandler, type PeerChange } from '../../src/control/socket.js';
import type { PeerConfig, ServiceConfig } from '../../src/control/config.js';
import type { StatusReport } from '../../src/control/status.js';

const KEY_A = 'hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo='; // RFC 7748 §6.1 Alice's public key
const ADDRS = { v4: '10.77.0.1', v6: null };

class FakeHandler implements ControlHandler {
  peers = new Map<string, PeerConfig>();
  services: ServiceConfig[] = [];
  calls: string[] = [];
  failNext = false;
  status(): StatusReport {
    this.calls.push('status');
    return {
      interface: 'tenc0',
      publicKey: KEY_A,
      listenPort: 51820,
      fwmark: 0xcb84,
      mtu: 1420,
      addresses: ['10.77.0.1'],
      dataPlane: 'fake',
      peers: [...this.peers.values()].map((p) => ({
        publicKey: p.publicKey,
        endpoint: null,
        allowedIps: p.allowedIps,
        latestHandshake: null,
        rxBytes: 0,
        txBytes: 0,
        persistentKeepalive: 0,
        drops: {},
      })),
      services: [],
      drops: {},
      handshakeFailures: {},
    };
  }
  changes: PeerChange[] = [];
  setPeer(change: PeerChange): void {
    this.calls.push('set-peer');
    if (this.failNext) throw new Error('engine refused');
    this.changes.push(change);
    this.peers.set(change.publicKey, { endpoint: null, allowedIps: [], persistentKeepalive: 0, ...change });
  }
  removePeer(publicKey: string): boolean {
    this.calls.push('remove-peer');
    return this.peers.delete(publicKey);
  }
  setServices(services: ServiceConfig[]): void {
    this.calls.push('set-services');
    this.services = services;
  }
}

let dir: string;
let path: string;
let handler: FakeHandler;
let server: ControlServer;

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tenc-sock-'));
  path = join(dir, 'run', 'tenc0-1.sock');
  handler = new FakeHandler();
  server = await ControlServer.start({ path, handler, addresses: ADDRS });
});

afterEach(async () => {
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Sends raw lines on one connection and collects `count` response lines. */
function rawExchange(p: string, text: string, count: number): Promise<any[]> {
  return new Promise((resolve, reject) => {
    const s = createConnection(p);
    let buf = '';
    s.setEncoding('utf8');
    s.on('connect', () => s.write(text));
    s.on('data', (d: string) => {
      buf += d;
      const lines = buf.split('\n').filter((l) => l);
      if (lines.length >= count) {
        s.end();
        resolve(lines.map((l) => JSON.parse(l)));
      }
    });
    s.on('error', reject);
  });
}

describe('control socket', () => {
  it('answers status', async () => {
    const r = (await controlRequest(path, { op: 'status' })) as StatusReport;
    expect(r.interface).toBe('tenc0');
    expect(r.publicKey).toBe(KEY_A);
  });

  it('set-peer passes the canonical peer; status then shows it; remove-peer removes it', async () => {
    await controlRequest(path, { op: 'set-peer', peer: { publicKey: KEY_A, endpoint: '[fd00::0002]:51820', allowedIps: ['10.1.0.0/16'] } });
    expect(handler.peers.get(KEY_A)).toEqual({
      publicKey: KEY_A,
      endpoint: { address: 'fd00::2', port: 51820 },
      allowedIps: ['10.1.0.0/16'],
      persistentKeepalive: 0,
    });
    const st = (await controlRequest(path, { op: 'status' })) as StatusReport;
    expect(st.peers.map((p) => p.publicKey)).toEqual([KEY_A]);
    await controlRequest(path, { op: 'remove-peer', publicKey: KEY_A });
    expect(handler.peers.size).toBe(0);
  });

  it('set-peer passes only the fields the request gave', async () => {
    await controlRequest(path, { op: 'set-peer', peer: { publicKey: KEY_A, persistentKeepalive: 5 } });
    await controlRequest(path, { op: 'set-peer', peer: { publicKey: KEY_A, endpoint: null, allowedIps: [] } });
    expect(handler.changes).toEqual([
      { publicKey: KEY_A, persistentKeepalive: 5 },
      { publicKey: KEY_A, endpoint: null, allowedIps: [] },
    ]);
  });

  it('an oversized request is refused and the connection closed', async () => {
    const rs = await rawExchange(path, 'x'.repeat((1 << 20) + 10), 1);
    expect(rs[0]).toMatchObject({ ok: false, error: { code: 'EINVAL', message: 'request longer than 1048576 bytes' } });
    expect(((await controlRequest(path, { op: 'status' })) as StatusReport).interface).toBe('tenc0');
  });

  it('an oversized line that came with its newline is refused too', async () => {
    const rs = await rawExchange(path, `{"op":"status","pad":"${'x'.repeat(1 << 20)}"}\n`, 1);
    expect(rs[0]).toMatchObject({ ok: false, error: { code: 'EINVAL', message: 'request longer than 1048576 bytes' } });
  });

  it('an id that is not a plain value is refused, and the pod lives on (regression: a deeply nested id parsed, then threw writing the answer: an unhandled rejection ended the process)', async () => {
    const deep = '['.repeat(200_000) + ']'.repeat(200_000);
    const rs = await rawExchange(path, `{"op":"status","id":${deep}}\n{"op":"status","id":{"a":1}}\n{"op":"status","id":"x"}\n`, 3);
    expect(rs[0]).toEqual({ ok: false, error: { code: 'EINVAL', message: 'id: must be a number, a string (at most 256 characters) or null' } });
    expect(rs[1]).toMatchObject({ ok: false, error: { code: 'EINVAL' } });
    expect(rs[2]).toMatchObject({ id: 'x', ok: true });
    expect(((await controlRequest(path, { op: 'status' })) as StatusReport).interface).toBe('tenc0');
  });

  it('a client that pipelines without reading past 256 requests is cut off; the socket serves the next', async () => {
    const s = createConnection(path);
    await new Promise<void>((r) => s.on('connect', () => r()));
    const closed = new Promise<void>((r) => s.on('close', () => r()));
    s.on('error', () => {});
    s.pause(); // never reads
    const before = handler.changes.length;
    s.write(`${JSON.stringify({ op: 'set-peer', peer: { publicKey: KEY_A, persistentKeepalive: 7 } })}\n`.repeat(2000));
    await closed;
    expect(((await controlRequest(path, { op: 'status' })) as StatusReport).interface).toBe('tenc0');
    // what was still queued when it was cut off did not run (at most the 256 before the cut)
    await new Promise((r) => setTimeout(r, 200));
    expect(handler.changes.length - before).toBeLessThan(256); // (without the cut: all 256 queued ones ran)
  });

  it.each([
    [{ op: 'set-peer', peer: { publicKey: KEY_A, privateKey: KEY_A } }, 'EINVAL', 'peer.privateKey: unknown field'],
    [{ op: 'set-peer', peer: { publicKey: KEY_A, endpoint: '10.0.0.300:1' } }, 'EINVAL', 'peer.endpoint: "10.0.0.300:1" is not an IPv4/IPv6 address'],
    [{ op: 'set-peer' }, 'EINVAL', 'peer: must be an object'],
    [{ op: 'set-peer', peer: { publicKey: KEY_A }, psk: 'x' }, 'EINVAL', 'psk: unknown field'],
    [{ op: 'remove-peer', publicKey: 'nope' }, 'EINVAL', 'publicKey: is not a base64 32-byte key'],
    [{ op: 'remove-peer', publicKey: KEY_A }, 'ENOENT', 'no such peer'],
    [{ op: 'set-services', services: [{ vip: 'fd00::10', ports: [] }] }, 'EINVAL', 'no IPv6 address'],
    [{ op: 'set-services', services: 'x' }, 'EINVAL', 'services: must be an array'],
    [{ op: 'reboot' }, 'EINVAL', 'op: "reboot" is not one of status, set-peer, remove-peer, set-services'],
  ])('rejects %j with %s', async (req, code, fragment) => {
    const err: any = await controlRequest(path, req).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ControlClientError);
    expect(err.code).toBe(code);
    expect(err.message).toContain(fragment);
    expect(handler.calls.filter((c) => c !== 'remove-peer')).toEqual([]);
  });

  it('set-services fills the local address from the pod addresses', async () => {
    await controlRequest(path, { op: 'set-services', services: [{ vip: '10.96.0.10', ports: [{ protocol: 'udp', port: 53 }] }] });
    expect(handler.services).toEqual([{ vip: '10.96.0.10', localAddress: '10.77.0.1', ports: [{ protocol: 'udp', port: 53 }] }]);
  });

  it('a handler failure is EIO and the server keeps serving', async () => {
    handler.failNext = true;
    const err: any = await controlRequest(path, { op: 'set-peer', peer: { publicKey: KEY_A } }).catch((e: unknown) => e);
    expect(err.code).toBe('EIO');
    expect(err.message).toBe('engine refused');
    expect(((await controlRequest(path, { op: 'status' })) as StatusReport).listenPort).toBe(51820);
  });

  it('answers several requests on one connection in order, bad JSON included', async () => {
    const text = '{"id":"a","op":"status"}\nnot json\n\n{"id":7,"op":"remove-peer","publicKey":"' + KEY_A + '"}\n';
    const rs = await rawExchange(path, text, 3);
    expect(rs[0]).toMatchObject({ id: 'a', ok: true });
    expect(rs[1]).toMatchObject({ ok: false, error: { code: 'EINVAL', message: 'request is not valid JSON' } });
    expect(rs[2]).toMatchObject({ id: 7, ok: false, error: { code: 'ENOENT' } });
  });

  it('creates the directory 0700 and the socket 0600; close removes the socket file', async () => {
    expect(statSync(join(dir, 'run')).mode & 0o777).toBe(0o700);
    expect(lstatSync(path).isSocket()).toBe(true);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    await server.close();
    expect(existsSync(path)).toBe(false);
  });

  it('leaves the mode of an existing directory alone (a socket under a shared /tmp-like directory); makes missing parents 0700', async () => {
    const shared = join(dir, 'shared');
    mkdirSync(shared);
    chmodSync(shared, 0o1777);
    const s2 = await ControlServer.start({ path: join(shared, 'pod.sock'), handler, addresses: ADDRS });
    try {
      expect(statSync(shared).mode & 0o7777).toBe(0o1777);
      expect(statSync(join(shared, 'pod.sock')).mode & 0o777).toBe(0o600);
    } finally {
      await s2.close();
    }
    const s3 = await ControlServer.start({ path: join(shared, 'x', 'y', 'pod.sock'), handler, addresses: ADDRS });
    try {
      expect(statSync(join(shared, 'x')).mode & 0o777).toBe(0o700);
      expect(statSync(join(shared, 'x', 'y')).mode & 0o777).toBe(0o700);
      expect(statSync(shared).mode & 0o7777).toBe(0o1777);
    } finally {
      await s3.close();
    }
  });

  it('replaces a stale socket file but refuses a live one', async () => {
    // live: the running server
    await expect(ControlServer.start({ path, handler, addresses: ADDRS })).rejects.toThrow(/in use by a running tenc pod/);
    // stale: the socket file of a process killed with SIGKILL (nobody unlinked it)
    const stalePath = join(dir, 'run', 'stale.sock');
    const r = spawnSync(process.execPath, [
      '-e',
      `require('node:net').createServer().listen(${JSON.stringify(stalePath)}, () => process.kill(process.pid, 'SIGKILL'))`,
    ]);
    expect(r.signal).toBe('SIGKILL');
    expect(lstatSync(stalePath).isSocket()).toBe(true);
    const second = await ControlServer.start({ path: stalePath, handler, addresses: ADDRS });
    expect(((await controlRequest(stalePath, { op: 'status' })) as StatusReport).interface).toBe('tenc0');
    await second.close();
  });

  it('a client without a server gets a hint', async () => {
    const err: any = await controlRequest(join(dir, 'none.sock'), { op: 'status' }).catch((e: unknown) => e);
    expect(err.code).toBe('ENOENT');
    expect(err.message).toContain('is `tenc pod` running in this network namespace?');
  });

  it('the default path names the interface and the network namespace inode', () => {
    const ino = statSync('/proc/self/ns/net').ino;
    expect(defaultSocketPath('tenc0')).toBe(`/run/tenc/tenc0-${ino}.sock`);
  });
});
