/**
 * netns-scripts/cluster.sh's helper (src/agent/cluster-tool.ts), the parts that need no
 * namespace: its usage (a command without its arguments printed "undefined: (file):
 * cannot read (ERR_INVALID_ARG_TYPE)"; the usage line and the header disagreed), the
 * chain's UNDO (a DEL that goes on past a failing plugin, so a failed add-pod releases
 * the bridge's address while the agent is down), and the cluster file's defaults (a
 * null serviceCidr silently became the default).
 */
import { describe, it, expect, afterEach, vi } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClusterConfigError, validateCluster } from '../../src/agent/cluster-config.js';
import { COMMANDS, main, runChain } from '../../src/agent/cluster-tool.js';

const root = join(import.meta.dirname, '..', '..');

/** main(argv): its exit code and what it wrote on stderr and stdout. */
async function tool(...argv: string[]): Promise<{ code: number; stderr: string; stdout: string }> {
  let stderr = '';
  let stdout = '';
  const e = vi.spyOn(process.stderr, 'write').mockImplementation((t) => ((stderr += String(t)), true));
  const o = vi.spyOn(process.stdout, 'write').mockImplementation((t) => ((stdout += String(t)), true));
  try {
    return { code: await main(argv), stderr, stdout };
  } finally {
    e.mockRestore();
    o.mockRestore();
  }
}

describe('cluster-tool usage', () => {
  it.each([
    [[], 'cluster-tool: no command'],
    [['frobnicate'], 'cluster-tool: unknown command "frobnicate"'],
    [['plan'], 'cluster-tool: plan: missing argument (FILE STATE PREFIX)'],
    [['plan', 'f.json', ''], 'cluster-tool: plan: missing argument (FILE STATE PREFIX)'],
    [['sync', '/run/x'], 'cluster-tool: sync: missing argument (STATE PREFIX)'],
    [['delete-policy', '/run/x', 'alpha'], 'cluster-tool: delete-policy: missing argument (STATE PROJECT NAME)'],
    [['cni', 'ADD', '/run/x', 'tc'], 'cluster-tool: cni: missing argument (ADD|DEL|CHECK|UNDO STATE PREFIX POD [X])'],
  ])('%j: what is missing and the usage line, exit 2, nothing read', async (argv, message) => {
    const r = await tool(...argv);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`${message}\nusage: cluster-tool.js plan FILE STATE PREFIX | sync STATE PREFIX | `);
    expect(r.stderr).not.toContain('undefined');
    expect(r.stdout).toBe('');
  });

  it('the usage line lists every command of the header with the same arguments, and main runs each', () => {
    const src = readFileSync(join(root, 'src', 'agent', 'cluster-tool.ts'), 'utf8');
    const header = [...src.split('*/')[0]!.matchAll(/^ \* {3}cluster-tool\.js (\S+) (.*?)(?: {2,}|$)/gm)].map((m) => [m[1]!, m[2]!]);
    expect(header).toEqual(Object.entries(COMMANDS));
    for (const c of Object.keys(COMMANDS)) expect(src, c).toContain(`case '${c}': {`);
  });
});

describe('runChain UNDO: a DEL past a failing plugin', () => {
  let d: string;
  afterEach(() => rmSync(d, { recursive: true, force: true }));

  /** Plugins that log their name and command; "fails" exits 1 as tenc's DEL does with its agent down. */
  function plugins(): { list: { cniVersion: string; name: string; plugins: Record<string, unknown>[] }; ran: () => string[] } {
    d = mkdtempSync(join(tmpdir(), 'tenc-undo-'));
    const log = join(d, 'ran');
    writeFileSync(log, '');
    for (const [name, exit] of [['bridge', 0], ['loopback', 0], ['fails', 1]] as const) {
      writeFileSync(join(d, name), `#!/bin/sh\necho "${name} $CNI_COMMAND" >> ${log}\necho '{"code": 11, "msg": "${name} failed"}'\nexit ${exit}\n`, { mode: 0o700 });
    }
    return {
      list: { cniVersion: '1.0.0', name: 'x', plugins: [{ type: 'bridge' }, { type: 'loopback' }, { type: 'fails' }] },
      ran: () => readFileSync(log, 'utf8').trim().split('\n'),
    };
  }

  it('a DEL stops at the failing plugin, as libcni; with keepGoing the plugins before it in the list release theirs too, and the failure is returned', () => {
    const p = plugins();
    const del = runChain('DEL', p.list, {}, [d]);
    expect(del).toMatchObject({ ok: false, plugin: 'fails' });
    expect(p.ran()).toEqual(['fails DEL']);
    writeFileSync(join(d, 'ran'), '');
    const undo = runChain('DEL', p.list, {}, [d], undefined, {}, true);
    expect(undo).toMatchObject({ ok: false, plugin: 'fails' });
    expect((undo as { out: string }).out).toContain('fails failed');
    expect(p.ran()).toEqual(['fails DEL', 'loopback DEL', 'bridge DEL']);
  });
});

describe('cluster file: a field left out takes its default, a null one is an error', () => {
  const file = {
    dns: '10.96.0.10',
    nodes: [{ name: 'node1', podCidr: '10.128.1.0/24' }],
    projects: [{ name: 'alpha' }],
    pods: [],
    services: [],
  };

  it.each(['serviceCidr', 'underlay', 'overlay'])('%s: null is named, not the default', (field) => {
    expect(validateCluster(file, 'c.json')).toMatchObject({ serviceCidr: '10.96.0.0/16', underlay: '10.200.0.0/24', overlay: '10.201.0.0/24' });
    expect(() => validateCluster({ ...file, [field]: null }, 'c.json')).toThrow(ClusterConfigError);
    expect(() => validateCluster({ ...file, [field]: null }, 'c.json')).toThrow(`c.json: ${field}: null is not a CIDR string`);
  });

  it('serviceCidr6 (dual-stack): null is named, not the default', () => {
    const dual = { ...file, dns6: 'fd00:96::a', nodes: [{ name: 'node1', podCidr: '10.128.1.0/24', podCidr6: 'fd00:128:1::/64' }] };
    expect(validateCluster(dual, 'c.json').serviceCidr6).toBe('fd00:96::/108');
    expect(() => validateCluster({ ...dual, serviceCidr6: null }, 'c.json')).toThrow('c.json: serviceCidr6: null is not a CIDR string');
  });
});
