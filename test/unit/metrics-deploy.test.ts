import { describe, it, expect } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AGENT_HISTOGRAMS, AGENT_METRICS, POD_METRICS, SCRAPE_METRICS } from '../../src/metrics/names.js';

const dashboard = JSON.parse(readFileSync(new URL('../../deploy/monitoring/tenc-dashboard.json', import.meta.url), 'utf8')) as {
  panels: { title: string; targets: { expr: string }[] }[];
};

describe('deploy/monitoring Grafana dashboard', () => {
  const exprs = dashboard.panels.flatMap((p) => p.targets.map((t) => ({ title: p.title, expr: t.expr })));

  it('every query parses as PromQL (promtool check rules, Grafana variables filled in)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tenc-dash-'));
    try {
      const rules = exprs.map((e, i) => {
        const q = e.expr.replace(/\$__rate_interval/g, '1m').replace(/\$__range/g, '1h').replace(/\$namespace|\$pod/g, '.*');
        return `      - record: tenc:dashboard_${i}\n        expr: ${JSON.stringify(q)}`;
      });
      const file = join(dir, 'rules.yml');
      writeFileSync(file, `groups:\n  - name: dashboard\n    rules:\n${rules.join('\n')}\n`);
      const out = execFileSync('promtool', ['check', 'rules', file], { encoding: 'utf8' });
      expect(out).toContain(`${exprs.length} rules found`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('uses only metric names tenc exports', () => {
    const known = new Set([...Object.values(POD_METRICS), ...Object.values(SCRAPE_METRICS), ...Object.values(AGENT_METRICS)].map((m) => m.name));
    for (const h of Object.values(AGENT_HISTOGRAMS)) for (const s of ['_bucket', '_sum', '_count']) known.add(h.name + s);
    const used = new Set(exprs.flatMap((e) => e.expr.match(/\btenc_[a-z_]+/g) ?? []));
    expect(used.size).toBeGreaterThan(10);
    for (const n of used) expect(known.has(n), `${n} in the dashboard`).toBe(true);
  });

  it("has the panels the issue asks for: throughput per peer, handshake age, drops by reason, DNS, CNI latency", () => {
    const uses = (metric: string, by?: string) =>
      exprs.some((e) => e.expr.includes(metric) && (by === undefined || new RegExp(`by \\([^)]*\\b${by}\\b`).test(e.expr)));
    expect(uses('tenc_peer_sent_bytes_total', 'peer')).toBe(true);
    expect(uses('tenc_peer_received_bytes_total', 'peer')).toBe(true);
    expect(uses('tenc_peer_latest_handshake_seconds')).toBe(true);
    expect(uses('tenc_drops_total', 'reason')).toBe(true);
    expect(uses('tenc_dns_queries_total')).toBe(true);
    expect(uses('tenc_cni_request_duration_seconds_bucket', 'le')).toBe(true);
    expect(uses('tenc_agent_proxies', 'namespace')).toBe(true);
  });
});
