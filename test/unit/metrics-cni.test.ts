/**
 * The node agent's CNI requests as metrics: a real NodeAgent (node socket in a temp
 * directory, an empty directory registry, so no project is protected and nothing
 * is started) with AgentMetrics as its hooks; requests sent as the CNI plugin sends
 * them. Each is counted by command and by result (ok or the error code answered),
 * and timed in the latency histogram. Also the per-project proxies gauge.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NodeAgent } from '../../src/agent/node.js';
import { DirectoryRegistry } from '../../src/registry/dir.js';
import { AgentMetrics, MAX_PROJECTS } from '../../src/metrics/agent.js';
import { nodeRequest } from './agent-fakes.js';

let dir: string;
let agent: NodeAgent;
const metrics = new AgentMetrics({ processMetrics: false });
const socket = () => join(dir, 'agent.sock');

const request = (m: Record<string, unknown>) => nodeRequest(socket(), m);

function value(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(series + ' '));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tenc-metrics-cni-'));
  mkdirSync(join(dir, 'registry'));
  agent = new NodeAgent({ registry: new DirectoryRegistry(join(dir, 'registry')), node: 'n1', socket: socket(), runDir: join(dir, 'run'), hooks: metrics });
  await agent.start();
});

afterAll(async () => {
  await agent?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('CNI requests on the node socket as metrics', () => {
  it('counts ADD, DEL, CHECK by result: ok, or the error code answered; times every request', async () => {
    const pod = { containerId: 'c0ffee', netns: `/proc/${process.pid}/ns/net`, ifname: 'eth0', podNamespace: 'plain', podName: 'web-1', addresses: ['10.128.1.10'] };
    // a namespace no one protects: passed through, ok
    expect(await request({ op: 'cni-add', ...pod })).toMatchObject({ ok: true });
    // a namespace that is not a name, or none: EINVAL (anything else of a pod in an
    // unprotected namespace is not looked at: agent-node-cni.test.ts)
    expect(await request({ op: 'cni-add', ...pod, podNamespace: 'Not_A_Namespace' })).toMatchObject({ ok: false, error: { code: 'EINVAL' } });
    expect(await request({ op: 'cni-add', ...pod, podNamespace: undefined })).toMatchObject({ ok: false, error: { code: 'EINVAL' } });
    // DEL of what is not registered: ok (the spec wants DEL idempotent)
    expect(await request({ op: 'cni-del', containerId: 'c0ffee' })).toMatchObject({ ok: true });
    // CHECK of an unregistered container: ok for an unprotected namespace, ENOENT without one
    expect(await request({ op: 'cni-check', containerId: 'c0ffee', podNamespace: 'plain' })).toMatchObject({ ok: true });
    expect(await request({ op: 'cni-check', containerId: 'c0ffee' })).toMatchObject({ ok: false, error: { code: 'ENOENT' } });
    // an op no plugin sends: EINVAL under command "other"; a non-CNI op is not counted
    expect(await request({ op: 'cni-frobnicate' })).toMatchObject({ ok: false, error: { code: 'EINVAL' } });
    expect(await request({ op: 'status' })).toMatchObject({ ok: false, error: { code: 'EINVAL' } });

    const text = await metrics.registry.metrics();
    expect(value(text, 'tenc_cni_requests_total{command="ADD",result="ok"}')).toBe(1);
    expect(value(text, 'tenc_cni_requests_total{command="ADD",result="EINVAL"}')).toBe(2);
    expect(value(text, 'tenc_cni_requests_total{command="DEL",result="ok"}')).toBe(1);
    expect(value(text, 'tenc_cni_requests_total{command="CHECK",result="ok"}')).toBe(1);
    expect(value(text, 'tenc_cni_requests_total{command="CHECK",result="ENOENT"}')).toBe(1);
    expect(value(text, 'tenc_cni_requests_total{command="other",result="EINVAL"}')).toBe(1);
    expect(text.split('\n').filter((l) => l.startsWith('tenc_cni_requests_total{')).length).toBe(6);
    // latency: every ADD in the histogram, each well under its largest bucket
    expect(value(text, 'tenc_cni_request_duration_seconds_count{command="ADD"}')).toBe(3);
    expect(value(text, 'tenc_cni_request_duration_seconds_bucket{le="5",command="ADD"}')).toBe(3);
    expect(value(text, 'tenc_cni_request_duration_seconds_count{command="CHECK"}')).toBe(2);
    expect(value(text, 'tenc_cni_request_duration_seconds_sum{command="ADD"}')).toBeGreaterThan(0);
  });

  it('an error code outside the known list is result="other" (bounded labels)', async () => {
    const m = new AgentMetrics({ processMetrics: false });
    m.cniRequest('ADD', 'EWEIRD', 0.1);
    m.cniRequest('add; drop table', 'ok', 0.1);
    const text = await m.registry.metrics();
    expect(value(text, 'tenc_cni_requests_total{command="ADD",result="other"}')).toBe(1);
    expect(value(text, 'tenc_cni_requests_total{command="other",result="ok"}')).toBe(1);
  });
});

describe('tenc_agent_proxies with one reconciler per project', () => {
  it('keeps one series per project: reports of one project do not overwrite another', async () => {
    const m = new AgentMetrics({ processMetrics: false });
    m.proxies(3, 'alpha');
    m.proxies(2, 'beta');
    m.proxies(4, 'alpha');
    const text = await m.registry.metrics();
    expect(value(text, 'tenc_agent_proxies{namespace="alpha"}')).toBe(4);
    expect(value(text, 'tenc_agent_proxies{namespace="beta"}')).toBe(2);
  });

  it(`caps the series at ${MAX_PROJECTS}: the rest are summed into namespace="_other"`, async () => {
    const m = new AgentMetrics({ processMetrics: false });
    const n = MAX_PROJECTS + 10;
    for (let i = 0; i < n; i++) m.proxies(1, `p${String(i).padStart(4, '0')}`);
    const lines = (await m.registry.metrics()).split('\n').filter((l) => l.startsWith('tenc_agent_proxies{'));
    expect(lines.length).toBe(MAX_PROJECTS);
    expect(lines.reduce((s, l) => s + Number(l.split(' ')[1]), 0)).toBe(n);
    expect(value(lines.join('\n'), 'tenc_agent_proxies{namespace="_other"}')).toBe(11);
  });
});
