import { describe, it, expect } from 'vitest';
import { spawnSync } from 'node:child_process';
import yaml from 'js-yaml';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AGENT_HISTOGRAMS, AGENT_METRICS, POD_METRICS, SCRAPE_METRICS } from '../../src/metrics/names.js';
import { HANDSHAKE_FAILURES } from '../../src/device/api.js';

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
      const out = promtool(['check', 'rules', file]);
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

/** promtool (netns-scripts/deps.sh installs it): missing, the test fails saying so, never skips. */
function promtool(args: string[]): string {
  const r = spawnSync('promtool', args, { encoding: 'utf8' });
  if (r.error) throw new Error(`promtool could not run (${r.error.message}): install it with netns-scripts/deps.sh`);
  if (r.status !== 0) throw new Error(`promtool ${args.join(' ')}: exit ${r.status}\n${r.stdout}${r.stderr}`);
  return r.stdout + r.stderr;
}

describe('deploy/monitoring alerting rules (tenc-rules.yaml)', () => {
  const monitoring = new URL('../../deploy/monitoring/', import.meta.url);
  const rule = yaml.load(readFileSync(new URL('tenc-rules.yaml', monitoring), 'utf8')) as {
    apiVersion: string;
    kind: string;
    spec: { groups: { name: string; rules: { alert: string; expr: string; for?: string; labels: Record<string, string>; annotations: Record<string, string> }[] }[] };
  };
  const rules = rule.spec.groups.flatMap((g) => g.rules);
  const alert = (name: string) => rules.find((r) => r.alert === name)!;

  it('is a PrometheusRule of the monitoring kustomization', () => {
    expect([rule.apiVersion, rule.kind]).toEqual(['monitoring.coreos.com/v1', 'PrometheusRule']);
    const k = yaml.load(readFileSync(new URL('kustomization.yaml', monitoring), 'utf8')) as { resources: string[] };
    expect(k.resources).toContain('tenc-rules.yaml');
  });

  it('promtool check rules accepts its groups (expressions, durations, templates)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tenc-rules-'));
    try {
      const file = join(dir, 'rules.yml');
      writeFileSync(file, yaml.dump({ groups: rule.spec.groups }));
      expect(promtool(['check', 'rules', file])).toContain(`SUCCESS: ${rules.length} rules found`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("uses only metric names tenc exports (and Prometheus's own up)", () => {
    const known = new Set([...Object.values(POD_METRICS), ...Object.values(SCRAPE_METRICS), ...Object.values(AGENT_METRICS)].map((m) => m.name));
    for (const h of Object.values(AGENT_HISTOGRAMS)) for (const s of ['_bucket', '_sum', '_count']) known.add(h.name + s);
    for (const r of rules) {
      const names = r.expr.match(/\btenc_[a-z_]+/g) ?? [];
      expect(names.length > 0 || /\bup\{/.test(r.expr), `${r.alert}: names a metric`).toBe(true);
      for (const n of names) expect(known.has(n), `${n} in ${r.alert}`).toBe(true);
      expect(['critical', 'warning']).toContain(r.labels.severity);
      expect(r.annotations.summary, r.alert).toBeTruthy();
    }
  });

  it('has the alerts for pods without tenc, a proxy down, tampering, CNI errors and an agent not scraped', () => {
    expect(alert('TencPodsUnprotected').expr).toContain(AGENT_METRICS.podsUnregistered.name);
    expect(alert('TencPodProxyDown').expr).toContain(POD_METRICS.up.name);
    expect(alert('TencHandshakeTampering').expr).toContain(POD_METRICS.handshakeFailures.name);
    expect(alert('TencPeerKeysRejected').expr).toContain(AGENT_METRICS.peersRejected.name);
    expect(alert('TencCniErrors').expr).toContain(`${AGENT_METRICS.cniRequests.name}{result!="ok"}`);
    expect(alert('TencAgentScrapeDown').expr).toMatch(/^up\{job=~/);
    // the reasons the tampering alert counts are the engine's (a renamed reason would silently never match)
    const reasons = /reason=~"([^"]+)"/.exec(alert('TencHandshakeTampering').expr)![1].split('|');
    for (const r of reasons) expect(HANDSHAKE_FAILURES as readonly string[]).toContain(r);
    expect(reasons).toContain('decrypt_response');
    expect(reasons).not.toContain('bad_mac1'); // junk and scans, not tampering
  });

  it('promtool test rules: each alert fires on the series it is for, and not on healthy ones', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tenc-rules-'));
    try {
      // annotations are checked by check rules above; here the expressions, labels and `for`
      const groups = rule.spec.groups.map((g) => ({ ...g, rules: g.rules.map(({ annotations: _, ...r }) => r) }));
      writeFileSync(join(dir, 'rules.yml'), yaml.dump({ groups }));
      const agentT = { namespace: 'tenc-system', pod: 'tenc-agent-x1', node: 'n1', job: 'tenc-system/tenc-agent' };
      const sel = (o: Record<string, string>) => `{${Object.entries(o).map(([k, v]) => `${k}="${v}"`).join(',')}}`;
      const series = (name: string, labels: Record<string, string>, values: string) => ({ series: name + sel(labels), values });
      const fires = (alertname: string, eval_time: string, labels: Record<string, string>[]) => ({
        eval_time,
        alertname,
        exp_alerts: labels.map((l) => ({ exp_labels: { ...l, severity: alert(alertname).labels.severity } })),
      });
      const web = { namespace: 'alpha', pod: 'web-1', node: 'n1', job: agentT.job };
      const tests = [
        {
          interval: '1m',
          input_series: [
            series('tenc_agent_pods_unregistered', agentT, '0 0 1 1 1 1'),
            series('tenc_agent_pods_unregistered', { ...agentT, pod: 'tenc-agent-x2', node: 'n2' }, '0x5'),
            series('tenc_handshake_failures_total', { ...web, reason: 'decrypt_response' }, '0 0 3 3 3 3'),
            series('tenc_handshake_failures_total', { ...web, reason: 'bad_mac1' }, '0 100 200 300 400 500'),
            series('tenc_handshake_failures_total', { ...web, reason: 'unknown_peer' }, '0 1 2 3 4 5'),
            series('tenc_agent_peers_rejected_total', agentT, '0 0 1 1 1 1'),
            series('tenc_plaintext_from_project_total', web, '0 0 0 5 5 5'),
            series('tenc_plaintext_from_project_total', { ...web, pod: 'web-2' }, '0x5'),
            series('tenc_pod_up', web, '1 0 0 0 0 0'),
            series('tenc_pod_up', { ...web, pod: 'web-2' }, '1x5'),
            series('tenc_agent_proxies_restarted_total', agentT, '0 2 4 6 8 8'),
            series('tenc_cni_requests_total', { ...agentT, command: 'ADD', result: 'ETIMEDOUT' }, '0 0 2 2 2 2'),
            series('tenc_cni_requests_total', { ...agentT, command: 'ADD', result: 'ok' }, '0 10 20 30 40 50'),
            series('up', agentT, '1 0 0 0 0 0 0 0'),
            series('up', { ...agentT, pod: 'tenc-agent-x2', node: 'n2' }, '1x7'),
            series('up', { job: 'kube-system/other', node: 'n1' }, '0x7'),
          ],
          alert_rule_test: [
            fires('TencPodsUnprotected', '1m', []),
            fires('TencPodsUnprotected', '2m', []), // pending (for: 1m)
            fires('TencPodsUnprotected', '4m', [agentT]),
            fires('TencHandshakeTampering', '4m', [{ namespace: 'alpha', pod: 'web-1', reason: 'decrypt_response' }]),
            fires('TencPeerKeysRejected', '4m', [agentT]),
            fires('TencPlaintextFromProject', '4m', [{ namespace: 'alpha', pod: 'web-1' }]),
            fires('TencPodProxyDown', '3m', []), // pending (for: 3m)
            fires('TencPodProxyDown', '5m', [web]),
            fires('TencProxiesRestarting', '4m', [agentT]),
            fires('TencCniErrors', '4m', [{ node: 'n1', command: 'ADD', result: 'ETIMEDOUT' }]),
            fires('TencAgentScrapeDown', '4m', []), // pending (for: 5m)
            fires('TencAgentScrapeDown', '7m', [agentT]),
            fires('TencAgentMetricsAbsent', '7m', []),
          ],
        },
        {
          // no agent target at all
          interval: '1m',
          input_series: [series('tenc_pod_up', web, '1x30')],
          alert_rule_test: [fires('TencAgentMetricsAbsent', '10m', []), fires('TencAgentMetricsAbsent', '20m', [{}]), fires('TencAgentScrapeDown', '20m', [])],
        },
      ];
      writeFileSync(join(dir, 'tests.yml'), yaml.dump({ rule_files: ['rules.yml'], evaluation_interval: '1m', tests }));
      expect(promtool(['test', 'rules', join(dir, 'tests.yml')])).toContain('SUCCESS');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
