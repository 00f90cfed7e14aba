// The command line a pod's proxy is started with (src/agent/pod-exec.ts): the agent
// and bench/density.ts share it; TENC_POD_NODE_FLAGS switches the node flags.
import { describe, it, expect } from 'vitest';
import { POD_NODE_FLAGS, podNodeFlags, podSpawnArgs } from '../../src/agent/pod-exec.js';
import { variantsOf } from '../../bench/density.js';

describe('pod-exec: the proxy command line', () => {
  it('default flags, the switch (unset, "", "0", a list) and a bad list', () => {
    expect(podNodeFlags({})).toEqual([...POD_NODE_FLAGS]);
    expect(podNodeFlags({ TENC_POD_NODE_FLAGS: '' })).toEqual([]);
    expect(podNodeFlags({ TENC_POD_NODE_FLAGS: '0' })).toEqual([]);
    expect(podNodeFlags({ TENC_POD_NODE_FLAGS: ' --max-semi-space-size=1   --v8-pool-size=0 ' })).toEqual(['--max-semi-space-size=1', '--v8-pool-size=0']);
    expect(() => podNodeFlags({ TENC_POD_NODE_FLAGS: '--jitless rm' })).toThrow(/TENC_POD_NODE_FLAGS: "rm" is not a node flag/);
  });

  it('nsenter argv: the netns, node, its flags before main.js, then pod --config', () => {
    expect(podSpawnArgs('/proc/7/ns/net', '/app/main.js', '/run/tenc/p.json', ['--jitless'], '/usr/bin/node')).toEqual([
      '--net=/proc/7/ns/net',
      '--',
      '/usr/bin/node',
      '--jitless',
      '/app/main.js',
      'pod',
      '--config',
      '/run/tenc/p.json',
    ]);
  });

  it('bench density variants: the agent first, --ab lists ("none"), --ab-env lists, a bad --ab or --ab-env and a missing --ab-main', () => {
    const v = variantsOf('none; --max-semi-space-size=1 --v8-pool-size=0', undefined, '/m.js', []);
    expect(v.map((x) => [x.name, x.flags])).toEqual([
      ['process per pod (no flags)', []],
      ['no flags', []],
      ['--max-semi-space-size=1 --v8-pool-size=0', ['--max-semi-space-size=1', '--v8-pool-size=0']],
    ]);
    expect(() => variantsOf('jitless', undefined, '/m.js', [])).toThrow(/--ab: "jitless" is not a node flag/);
    const e = variantsOf(undefined, undefined, '/m.js', [], 'TENC_IDLE_SETTLE=0; TENC_V8_LEAN=0,TENC_IDLE_SETTLE=0');
    expect(e.map((x) => [x.name, x.env])).toEqual([
      ['process per pod (no flags)', undefined],
      ['no flags, TENC_IDLE_SETTLE=0', { TENC_IDLE_SETTLE: '0' }],
      ['no flags, TENC_V8_LEAN=0,TENC_IDLE_SETTLE=0', { TENC_V8_LEAN: '0', TENC_IDLE_SETTLE: '0' }],
    ]);
    expect(() => variantsOf(undefined, undefined, '/m.js', [], 'settle')).toThrow(/--ab-env: "settle" is not NAME=VALUE/);
    expect(() => variantsOf(undefined, '/nonexistent/main.js', '/m.js', [])).toThrow(/--ab-main: \/nonexistent\/main.js does not exist/);
  });
});
