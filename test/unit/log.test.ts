/**
 * Logging: JSON lines, level filtering, the redaction net for secret-named fields,
 * and key fingerprints.
 */
import { describe, it, expect } from 'vitest';
import { PassThrough } from 'node:stream';
import { createLogger, keyFingerprint, isLogLevel } from '../../src/log.js';

function capture(level: 'info' | 'debug' = 'info') {
  const stream = new PassThrough();
  let text = '';
  stream.on('data', (d) => (text += d));
  const log = createLogger({ level, destination: stream, base: { ifname: 'tenc0' } });
  return { log, lines: () => text.split('\n').filter((l) => l).map((l) => JSON.parse(l)) };
}

const SECRET = 'c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlYw==';

describe('log', () => {
  it('writes JSON lines with level label, time, base fields; filters by level', () => {
    const { log, lines } = capture('info');
    log.debug({ a: 1 }, 'hidden');
    log.info({ peers: 2 }, 'pod running');
    const l = lines();
    expect(l).toHaveLength(1);
    expect(l[0]).toMatchObject({ level: 'info', msg: 'pod running', peers: 2, ifname: 'tenc0' });
    expect(typeof l[0].time).toBe('string');
  });

  it.each(['privateKey', 'psk', 'sendKey', 'recvKey', 'key', 'secret'])('redacts %s at the top level and nested', (field) => {
    const { log, lines } = capture();
    log.info({ [field]: SECRET, nested: { [field]: SECRET }, deeper: { x: { [field]: SECRET } } }, 'oops');
    const raw = JSON.stringify(lines());
    expect(raw).not.toContain(SECRET);
    expect(lines()[0][field]).toBe('[redacted]');
    expect(lines()[0].nested[field]).toBe('[redacted]');
  });

  it('keyFingerprint: 8 characters, stable, not a prefix of the key, typed errors', () => {
    const key = Buffer.alloc(32, 0x42);
    const b64 = key.toString('base64');
    const fp = keyFingerprint(key);
    expect(fp).toMatch(/^[A-Za-z0-9_-]{8}$/);
    expect(keyFingerprint(b64)).toBe(fp);
    expect(b64.startsWith(fp)).toBe(false);
    expect(keyFingerprint(Buffer.alloc(32, 0x43))).not.toBe(fp);
    expect(() => keyFingerprint(new Uint8Array(31))).toThrow(RangeError);
    expect(() => keyFingerprint(42 as unknown as string)).toThrow(TypeError);
  });

  it('isLogLevel', () => {
    expect(isLogLevel('debug')).toBe(true);
    expect(isLogLevel('verbose')).toBe(false);
  });
});
