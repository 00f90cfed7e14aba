/**
 * The native engine's tables, without namespaces or root: the replay window
 * (native/replay.h) against the shared numbered table of src/noise/replay.ts, the
 * back-off of the optional tries after a small batch (native/engine_internal.h), the
 * allowed-IPs longest-prefix match (native/allowedips.c) at 2000 peers, and the
 * control calls' argument and lookup errors (native/engine_js.c).
 *
 * The engine needs a "TUN" fd: a second UDP socket stands in for it (never
 * readable, so the send thread just waits). Traffic is tested in
 * test/netns/engine.test.ts.
 */
import { createSocket } from 'node:dgram';
import { readdirSync, readlinkSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backoffRun, closeFd, NativePlane, openUdp, replayRun } from '../../src/dataplane/native.js';
import { REPLAY_TABLE } from '../../src/noise/replay.js';
import type { PlaneEvent } from '../../src/device/plane.js';
import { REJECT_AFTER_MESSAGES, REKEY_AFTER_MESSAGES, REPLAY_WINDOW_SIZE } from '../../src/wire/constants.js';

describe('native back-off of the busy poll and the inline replies', () => {
  const tried = (limit: number, caught: number[]): number[] => Array.from(backoffRun(limit, caught));

  it('tries every chance while its tries catch something', () => {
    expect(tried(4, Array(40).fill(1))).toEqual(Array(40).fill(1));
  });

  it('after `limit` misses in a row, tries only every 16th chance', () => {
    const got = tried(4, Array(70).fill(0));
    expect(got.slice(0, 4)).toEqual([1, 1, 1, 1]);
    // chances 4.. count skip 1, 2, ...: the 16th of them (index 19), then every 16th
    expect(got.flatMap((t, i) => (t && i >= 4 ? [i] : []))).toEqual([19, 35, 51, 67]);
    expect(tried(8, Array(30).fill(0)).filter((t) => t === 1)).toHaveLength(9); // 8, then index 23
  });

  it('a catch after backing off tries every chance again', () => {
    const caught = Array(40).fill(0);
    caught[19] = 1; // the first try after backing off catches
    const got = tried(4, caught);
    expect(got.slice(19, 24)).toEqual([1, 1, 1, 1, 1]);
    expect(got.slice(24, 30)).toEqual([0, 0, 0, 0, 0, 0]);
  });

  it('limit 0 tries only every 16th chance from the start', () => {
    expect(tried(0, Array(32).fill(1)).flatMap((t, i) => (t ? [i] : []))).toEqual([15, 31]);
  });

  it('refuses arguments it cannot run', () => {
    expect(() => backoffRun(-1, [1])).toThrow(/limit/);
    expect(() => backoffRun(1.5, [1])).toThrow(/limit/);
  });
});

describe('native replay window: the shared numbered table', () => {
  const got = replayRun(REPLAY_TABLE.map((s) => BigInt(s.counter)));
  REPLAY_TABLE.forEach((step, i) => {
    it(`#${step.n} ${step.counter} -> ${step.accept ? 'accept' : 'reject'} (${step.why})`, () => {
      expect(got[i]).toBe(step.accept ? 1 : 0);
    });
  });

  it('window edge: greatest - size is accepted once, greatest - size - 1 never', () => {
    const size = BigInt(REPLAY_WINDOW_SIZE);
    for (const top of [100_000n, 100_032n, 100_063n, 100_064n]) {
      expect(Array.from(replayRun([top, top - size, top - size, top - size - 1n]))).toEqual([1, 1, 0, 0]);
    }
  });

  it('REJECT_AFTER_MESSAGES and above are refused, the one below accepted', () => {
    const r = REJECT_AFTER_MESSAGES;
    expect(Array.from(replayRun([r - 1n, r, r + 1n, (1n << 64n) - 1n]))).toEqual([1, 0, 0, 0]);
  });

  it('a jump far ahead clears the whole window', () => {
    expect(Array.from(replayRun([1n, 2n, 1_000_000n, 2n, 999_999n, 1_000_000n]))).toEqual([1, 1, 1, 0, 1, 0]);
  });
});

/** The data-path switches engine_js.c reads from the environment when an engine is made. */
const SWITCHES = ['TENC_SCATTER_SEAL', 'TENC_GRO_IOV', 'TENC_INLINE_TX', 'TENC_SIBLING_POLL', 'TENC_DATA_EPOLL', 'TENC_BUSY_POLL_US', 'TENC_TSO_ALIGN', 'TENC_TSO_MAX', 'TENC_TX_BATCH_KB'];

/**
 * An engine with a second UDP socket standing in for its TUN device (never readable),
 * made with only `env` of the switches set: the runner's own values are put back
 * right after.
 */
function planeWith(env: Record<string, string> = {}, vnetHdr = false): NativePlane {
  const saved = Object.fromEntries(SWITCHES.map((k) => [k, process.env[k]]));
  for (const k of SWITCHES) delete process.env[k];
  Object.assign(process.env, env);
  try {
    const fake = openUdp(0, { gro: false });
    const udp = openUdp(0, { gro: false });
    return new NativePlane({ tun: { fd: fake.fd, name: 'none', ifindex: 0, vnetHdr, offloads: 0 }, udp, mode: 'tun' });
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

describe('TENC_DATA_EPOLL: where the data threads wait', () => {
  const epollFds = (): number =>
    readdirSync('/proc/self/fd').filter((f) => {
      try {
        return readlinkSync(`/proc/self/fd/${f}`) === 'anon_inode:[eventpoll]';
      } catch {
        return false; // the directory's own fd, closed by now
      }
    }).length;
  /** The epoll sets an engine made with TENC_DATA_EPOLL=value (unset: undefined) added, all closed with it. */
  const epollSetsWith = async (value: string | undefined): Promise<number> => {
    const before = epollFds();
    const plane = planeWith(value === undefined ? {} : { TENC_DATA_EPOLL: value });
    const added = epollFds() - before;
    await plane.close();
    expect(epollFds()).toBe(before); // the sets are closed with the engine
    return added;
  };

  /** The switches of an engine made with only `env` of them set, read after it closed. */
  const switchesWith = async (env: Record<string, string>, vnetHdr = true): Promise<Record<string, number>> => {
    const plane = planeWith(env, vnetHdr);
    await plane.close();
    const sw = plane.switches(); // read at create: still there after close
    expect(sw).toBeDefined();
    return sw!;
  };

  it('the engine reports its switches as it runs them: defaults, values, maximums, refused values', async () => {
    expect(await switchesWith({})).toEqual({
      scatterSeal: 1, groIov: 1, inlineTx: 1, siblingPoll: 1, dataEpoll: 1, busyPollUs: 150, tsoAlign: 64, tsoMax: 0, txBatchKb: 0,
    });
    const off = await switchesWith({ TENC_SCATTER_SEAL: '0', TENC_GRO_IOV: '0', TENC_INLINE_TX: '0', TENC_DATA_EPOLL: '0', TENC_BUSY_POLL_US: '300', TENC_TSO_ALIGN: '0', TENC_TSO_MAX: '9000', TENC_TX_BATCH_KB: '256' });
    expect(off).toEqual({ scatterSeal: 0, groIov: 0, inlineTx: 0, siblingPoll: 0, dataEpoll: 0, busyPollUs: 300, tsoAlign: 0, tsoMax: 9000, txBatchKb: 256 });
    expect((await switchesWith({ TENC_SIBLING_POLL: '0' })).siblingPoll).toBe(0);
    // merged TCP runs need the TUN offloads (virtio_net_hdr): without them groIov is not in effect
    expect((await switchesWith({}, false)).groIov).toBe(0);
    // above the maximum: the maximum
    expect((await switchesWith({ TENC_BUSY_POLL_US: '5000', TENC_TX_BATCH_KB: '99999999999999999999' })).busyPollUs).toBe(2000);
    expect((await switchesWith({ TENC_TX_BATCH_KB: '99999999999999999999' })).txBatchKb).toBe(4096);
    // not a decimal number (strtoul would take a sign or a leading space): the default
    for (const v of ['-1', '+300', ' 300', '300us', 'abc', '']) expect((await switchesWith({ TENC_BUSY_POLL_US: v })).busyPollUs, v).toBe(150);
  });

  it('by default in two epoll sets (TX and RX); with TENC_DATA_EPOLL=0 in poll(), no set made', async () => {
    expect(await epollSetsWith(undefined)).toBe(2);
    expect(await epollSetsWith('0')).toBe(0);
    expect(await epollSetsWith('1')).toBe(2);
  });
});

describe('native engine: a TUN frame too short for its virtio header', () => {
  it('is counted as bad_inner (regression: it was skipped uncounted); a blocking device fd handed in does not hang close', async () => {
    // the stand-in TUN is a UDP socket (a blocking one: the engine makes it non-blocking,
    // before which its TX thread stayed in read() and close() never returned): each
    // datagram is one frame the TX thread reads
    const fake = openUdp(0, { gro: false });
    const plane = new NativePlane({ tun: { fd: fake.fd, name: 'none', ifindex: 0, vnetHdr: true, offloads: 0 }, udp: openUdp(0, { gro: false }), mode: 'tun' });
    const s = createSocket('udp6');
    try {
      for (const n of [1, 5, 10]) await new Promise<void>((r, j) => s.send(Buffer.alloc(n), fake.port, '::1', (e) => (e ? j(e) : r())));
      for (let i = 0; i < 200 && plane.drops().bad_inner < 3; i++) await new Promise((r) => setTimeout(r, 10));
      expect(plane.drops().bad_inner).toBe(3);
    } finally {
      s.close();
      await plane.close();
    }
  });
});

describe('native engine control plane calls', () => {
  let plane: NativePlane;

  beforeAll(() => {
    plane = planeWith();
  });

  afterAll(async () => {
    await plane.close();
  });

  it('longest prefix wins across peers, IPv4 and IPv6', () => {
    plane.addPeer(1, null);
    plane.addPeer(2, null);
    plane.addPeer(3, null);
    plane.addPeer(4, null);
    plane.addAllowedIp(1, '10.0.0.0/8');
    plane.addAllowedIp(2, '10.1.0.0/16');
    plane.addAllowedIp(3, '10.1.2.0/24');
    plane.addAllowedIp(4, '10.1.2.3/32');
    plane.addAllowedIp(1, 'fd00::/8');
    plane.addAllowedIp(2, 'fd00:1::/32');
    plane.addAllowedIp(3, 'fd00:1:2::/48');
    plane.addAllowedIp(4, 'fd00:1:2::3/128');
    expect(['10.9.9.9', '10.1.9.9', '10.1.2.9', '10.1.2.3', '11.0.0.1'].map((a) => plane.route(a))).toEqual([1, 2, 3, 4, null]);
    expect(['fd99::1', 'fd00:1::9', 'fd00:1:2::9', 'fd00:1:2::3', 'fe80::1'].map((a) => plane.route(a))).toEqual([1, 2, 3, 4, null]);
    // An IPv4 prefix never matches an IPv6 address and back.
    expect(plane.route('::ffff:10.1.2.3')).toBe(null);
  });

  it('removing a prefix falls back to the next shorter one; only its owner can remove it', () => {
    plane.removeAllowedIp(3, '10.1.2.3/32'); // owned by 4: no effect
    expect(plane.route('10.1.2.3')).toBe(4);
    plane.removeAllowedIp(4, '10.1.2.3/32');
    expect(plane.route('10.1.2.3')).toBe(3);
    plane.removePeer(3);
    expect(plane.route('10.1.2.3')).toBe(2);
    expect(plane.route('fd00:1:2::9')).toBe(2);
  });

  it('host bits are masked, and re-adding a prefix moves it to the new peer', () => {
    plane.addAllowedIp(4, '10.200.7.7/16');
    expect(plane.route('10.200.0.1')).toBe(4);
    plane.addAllowedIp(2, '10.200.0.0/16');
    expect(plane.route('10.200.0.1')).toBe(2);
  });

  it('2000 peers with a /32 and a /128 each: every address routes to its own peer', () => {
    const n = 2000;
    for (let p = 100; p < 100 + n; p++) {
      plane.addPeer(p, { address: '10.99.0.1', port: 51820 });
      plane.addAllowedIp(p, `10.50.${p >> 8}.${p & 255}/32`);
      plane.addAllowedIp(p, `fd50::${p.toString(16)}/128`);
    }
    let ok = 0;
    for (let p = 100; p < 100 + n; p++) {
      if (plane.route(`10.50.${p >> 8}.${p & 255}`) === p && plane.route(`fd50::${p.toString(16)}`) === p) ok++;
    }
    expect(ok).toBe(n);
    for (let p = 100; p < 100 + n; p++) plane.removePeer(p);
    expect(plane.route('10.50.0.100')).toBe(1); // back to 10.0.0.0/8
  });

  it('argument errors are typed and early', () => {
    const key = new Uint8Array(32);
    expect(() => plane.addPeer(70000, null)).toThrow(RangeError);
    expect(() => plane.addPeer('1' as unknown as number, null)).toThrow(TypeError);
    expect(() => plane.addKeypair(1, { localIndex: 1, remoteIndex: 2, sendKey: new Uint8Array(31), recvKey: key })).toThrow(RangeError);
    expect(() => plane.addKeypair(1, { localIndex: 1, remoteIndex: 2, sendKey: 'x' as unknown as Uint8Array, recvKey: key })).toThrow(TypeError);
    expect(() => plane.addAllowedIp(1, '10.0.0.1')).toThrow(TypeError);
    expect(() => plane.addAllowedIp(1, '10.0.0.1/33')).toThrow(RangeError);
    expect(() => plane.addAllowedIp(1, 'fd00::/129')).toThrow(RangeError);
    expect(() => plane.setEndpoint(1, { address: 'not-an-ip', port: 1 })).toThrow(TypeError);
    expect(() => plane.setEndpoint(1, { address: '10.0.0.1', port: 0 })).toThrow(RangeError);
    expect(() => plane.setLocalServices([{ vip: '10.0.0.1', localAddress: 'fd00::1', ports: [] }])).toThrow(TypeError);
  });

  it('lookup failures carry errno names', () => {
    const key = new Uint8Array(32).fill(7);
    const code = (f: () => void): string | undefined => {
      try {
        f();
      } catch (err) {
        return (err as { code?: string }).code;
      }
      return undefined;
    };
    expect(code(() => plane.setEndpoint(9999, { address: '10.0.0.1', port: 1 }))).toBe('ENOENT');
    expect(code(() => plane.addKeypair(9999, { localIndex: 5, remoteIndex: 6, sendKey: key, recvKey: key }))).toBe('ENOENT');
    plane.addKeypair(1, { localIndex: 5, remoteIndex: 6, sendKey: key, recvKey: key });
    expect(code(() => plane.addKeypair(2, { localIndex: 5, remoteIndex: 6, sendKey: key, recvKey: key }))).toBe('EEXIST');
    expect(code(() => plane.setSendKeypair(2, 5))).toBe('ENOKEY'); // peer 1's keypair
    expect(code(() => plane.removeKeypair(12345))).toBe('ENOENT');
    plane.removeKeypair(5);
    expect(code(() => plane.removeKeypair(5))).toBe('ENOENT');
  });

  it('keepalive without a send keypair sends nothing', () => {
    expect(plane.sendKeepalive(1)).toBe(false);
    expect(plane.peerCounters(1).txPackets).toBe(0);
  });

  it('drops start at zero for every reason', () => {
    expect(Object.values(plane.drops()).every((v) => v === 0)).toBe(true);
  });

  it('send counter: rekey_needed once past REKEY_AFTER_MESSAGES, counter_exhausted at REJECT_AFTER_MESSAGES', async () => {
    const events: PlaneEvent[] = [];
    plane.onEvents((e) => events.push(...e));
    const sink = openUdp(0, { gro: false }); // keepalives go here, on loopback
    const key = new Uint8Array(32).fill(9);
    plane.addPeer(50, { address: '127.0.0.1', port: sink.port });
    plane.addKeypair(50, { localIndex: 500, remoteIndex: 501, sendKey: key, recvKey: key });
    plane.setSendKeypair(50, 500);
    expect(plane.sendKeepalive(50)).toBe(true); // counter 0
    plane.testSetSendCounter(500, BigInt(REKEY_AFTER_MESSAGES) - 1n);
    expect(plane.sendKeepalive(50)).toBe(true);
    expect(plane.sendKeepalive(50)).toBe(true); // REKEY_AFTER_MESSAGES: event
    expect(plane.sendKeepalive(50)).toBe(true); // no second event
    plane.testSetSendCounter(500, BigInt(REJECT_AFTER_MESSAGES) - 1n);
    expect(plane.sendKeepalive(50)).toBe(true); // the last usable counter
    expect(plane.sendKeepalive(50)).toBe(false); // exhausted
    expect(plane.sendKeepalive(50)).toBe(false);
    // the hook never sets a counter back (a nonce used again under the same key; from a review)
    expect(() => plane.testSetSendCounter(500, 0n)).toThrow(/only moves forward/);
    expect(plane.sendKeepalive(50)).toBe(false);
    expect(plane.peerCounters(50).txPackets).toBe(5);
    expect(plane.peerDrops(50).counter_exhausted).toBe(3);
    expect(plane.drops().counter_exhausted).toBe(3);
    for (let i = 0; i < 50 && !events.some((e) => e.type === 'rekey_needed'); i++) await new Promise((r) => setTimeout(r, 10));
    expect(events.filter((e) => e.type === 'rekey_needed')).toEqual([{ type: 'rekey_needed', peer: 50, localIndex: 500 }]);
    closeFd(sink.fd);
  });

  it('a failed send is counted as io and reported as false, never thrown (regression: it threw into Device.tick)', () => {
    // The limited broadcast address without SO_BROADCAST fails locally with EACCES:
    // nothing leaves the machine.
    const io = plane.drops().io;
    expect(plane.sendHandshake({ address: '255.255.255.255', port: 51820 }, new Uint8Array(148))).toBe(false);
    expect(plane.drops().io).toBe(io + 1);
    plane.addPeer(60, { address: '255.255.255.255', port: 51820 });
    const key = new Uint8Array(32).fill(3);
    plane.addKeypair(60, { localIndex: 600, remoteIndex: 601, sendKey: key, recvKey: key });
    plane.setSendKeypair(60, 600);
    expect(plane.sendKeepalive(60)).toBe(false);
    expect(plane.peerDrops(60).io).toBe(1);
    // argument errors still throw
    expect(() => plane.sendHandshake({ address: 'not-an-ip', port: 1 }, new Uint8Array(148))).toThrow(TypeError);
  });

  it('calls after close throw', async () => {
    const p = planeWith();
    await p.close();
    await p.close(); // idempotent
    expect(() => p.addPeer(1, null)).toThrow(/closed/);
  });
});
