/**
 * The standby handoff line (control/handoff.ts) and its reading from stdin
 * (cli/standby.ts readHandoffLine): every bad line is a HandoffError naming the
 * field; end of input before a byte is null (the agent went away).
 */
import { describe, it, expect } from 'vitest';
import { PassThrough } from 'node:stream';
import { HandoffError, formatHandoff, parseHandoff } from '../../src/control/handoff.js';
import { readHandoffLine } from '../../src/cli/standby.js';

describe('parseHandoff', () => {
  it('reads what formatHandoff writes, with and without a log', () => {
    for (const h of [{ netns: '/run/netns/p1', config: '/run/tenc/p1.json', log: '/run/tenc/p1.log' }, { netns: '/proc/42/ns/net', config: '/c.json' }]) {
      const line = formatHandoff(h);
      expect(line.endsWith('\n')).toBe(true);
      expect(line.slice(0, -1)).not.toContain('\n');
      expect(parseHandoff(line.slice(0, -1))).toEqual(h);
    }
  });

  it('names what is wrong', () => {
    const cases: [string, RegExp][] = [
      ['', /not JSON/],
      ['[1]', /not a JSON object/],
      ['null', /not a JSON object/],
      ['{"config":"/c"}', /"netns" must be a non-empty path/],
      ['{"netns":"/n"}', /"config" must be a non-empty path/],
      ['{"netns":"/n","config":""}', /"config" must be a non-empty path/],
      ['{"netns":"/n","config":"c.json"}', /"config" must be an absolute path, not "c.json"/],
      ['{"netns":"/n","config":"/c","log":7}', /"log" must be a non-empty path/],
      ['{"netns":"/n","config":"/c","log":"/l\\u0000x"}', /"log" contains a NUL byte/],
      ['{"netns":"/n","config":"/c","psk":"x"}', /unknown field "psk"/],
    ];
    for (const [line, want] of cases) {
      expect(() => parseHandoff(line), line).toThrow(HandoffError);
      expect(() => parseHandoff(line), line).toThrow(want);
    }
  });
});

describe('readHandoffLine', () => {
  it('the first line, in pieces; what follows it is left alone', async () => {
    const s = new PassThrough();
    const p = readHandoffLine(s);
    s.write('{"netns":');
    s.write('"/n"}\nmore');
    expect(await p).toBe('{"netns":"/n"}');
  });

  it('end of input before any byte: null; inside the line: an error', async () => {
    const s = new PassThrough();
    const p = readHandoffLine(s);
    s.end();
    expect(await p).toBeNull();
    const t = new PassThrough();
    const q = readHandoffLine(t);
    t.end('{"netns"');
    await expect(q).rejects.toThrow(/input ended inside the line/);
  });

  it('no newline within the limit: an error, without reading on', async () => {
    const s = new PassThrough();
    const p = readHandoffLine(s, 64);
    s.write('x'.repeat(65));
    await expect(p).rejects.toThrow(/no newline in the first 64 bytes/);
  });
});
