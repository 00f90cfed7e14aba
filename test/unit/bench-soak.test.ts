/**
 * Helpers of the soak bench (bench/soak.ts: RSS slope and per-phase summary) and of
 * the iperf bench's tenc variants (bench/iperf.ts --tenc-env, bench/lib/tunnels.ts
 * dummy peers for --peers). Pure functions on made-up samples.
 */
import { describe, it, expect } from 'vitest';
import { slope, summarize, type Sample } from '../../bench/soak.js';
import { parseEnvFlag } from '../../bench/iperf.js';
import { dummyPeers } from '../../bench/lib/tunnels.js';

const MIB = 2 ** 20;

describe('soak slope and summary', () => {
  it('slope is the least-squares gradient', () => {
    expect(slope([[0, 1], [1, 3], [2, 5]])).toBeCloseTo(2, 10);
    expect(slope([[0, 4], [10, 4], [20, 4]])).toBe(0);
    expect(slope([[5, 1]])).toBeUndefined();
    expect(slope([[5, 1], [5, 2]])).toBeUndefined();
  });

  it('summarize: idle median, max and slope under load (warm-up minute left out), after', () => {
    const samples: Sample[] = [];
    for (let t = 0; t < 30; t += 5) samples.push({ t, phase: 'idle', rss: [60 * MIB, 61 * MIB] });
    // load: a 50 MiB jump in the first minute (warm-up), then +1 MiB per minute on pod 0
    for (let t = 30; t <= 330; t += 5) {
      const grow = t < 90 ? 50 : 100 + ((t - 90) / 60) * 1;
      samples.push({ t, phase: 'load', rss: [grow * MIB, 70 * MIB] });
    }
    samples.push({ t: 340, phase: 'after', rss: [90 * MIB, undefined] });
    const a = summarize(samples, 0);
    expect(a.idleMiB).toBe(60);
    expect(a.loadMaxMiB).toBeCloseTo(104, 6);
    expect(a.slopeMiBPerMin).toBeCloseTo(1, 6);
    expect(a.afterMiB).toBe(90);
    const b = summarize(samples, 1);
    expect(b.idleMiB).toBe(61);
    expect(b.slopeMiBPerMin).toBeCloseTo(0, 10);
    expect(b.afterMiB).toBeUndefined();
  });
});

describe('iperf tenc variants', () => {
  it('--tenc-env takes TENC_* variables only', () => {
    expect(parseEnvFlag('TENC_TX_BATCH_KB=512,TENC_RX_BATCH=16')).toEqual({ TENC_TX_BATCH_KB: '512', TENC_RX_BATCH: '16' });
    expect(() => parseEnvFlag('LD_PRELOAD=/x.so')).toThrow(RangeError);
    expect(() => parseEnvFlag('TENC_X=a b')).toThrow(RangeError);
    expect(() => parseEnvFlag('')).toThrow(RangeError);
  });

  it('dummy peers: distinct 32-byte keys, distinct /32s in 10.100.0.0/16', () => {
    const peers = dummyPeers(999);
    expect(peers).toHaveLength(999);
    expect(new Set(peers.map((p) => p.publicKey)).size).toBe(999);
    expect(peers.every((p) => Buffer.from(p.publicKey, 'base64').length === 32)).toBe(true);
    const ips = peers.map((p) => p.allowedIps[0]);
    expect(new Set(ips).size).toBe(999);
    expect(ips.every((ip) => /^10\.100\.\d{1,3}\.\d{1,3}\/32$/.test(ip))).toBe(true);
    expect(ips[0]).toBe('10.100.0.1/32');
    expect(ips[998]).toBe('10.100.3.231/32');
    expect(() => dummyPeers(-1)).toThrow(RangeError);
  });
});
