/**
 * The local cluster (netns-scripts/cluster.sh) as seen through the in-test API server:
 * a kubeconfig file per agent, and the Pods and EndpointSlices brought in line with
 * the cluster file after cluster.sh add-pod / remove-pod (what the scheduler, the
 * kubelet and the EndpointSlice controller would write).
 */
import { writeFileSync } from 'node:fs';
import { serviceEndpoints, type ClusterConfig } from '../../src/agent/cluster-config.js';
import type { FakeApiServer } from './fake-apiserver.js';

/** A kubeconfig (mode 0600) for TOKEN on the in-test server: what `--registry kubernetes:FILE` reads. */
export function writeKubeconfig(file: string, api: FakeApiServer, token: string): void {
  const cfg = {
    apiVersion: 'v1',
    kind: 'Config',
    // plain HTTP on loopback: the client refuses http:// unless TLS checks are declared off
    clusters: [{ name: 'fake', cluster: { server: `http://127.0.0.1:${api.port}`, 'insecure-skip-tls-verify': true } }],
    users: [{ name: 'agent', user: { token } }],
    contexts: [{ name: 'fake', context: { cluster: 'fake', user: 'agent' } }],
    'current-context': 'fake',
  };
  writeFileSync(file, JSON.stringify(cfg, null, 2) + '\n', { mode: 0o600 });
}

/**
 * Pods of the file's projects: put when missing or different (Running, the file's
 * address), deleted when the file no longer has them; each Service's EndpointSlice
 * rewritten when its endpoints changed. Objects only the API has are deleted too.
 */
export function syncApiFromCluster(api: FakeApiServer, c: ClusterConfig): void {
  for (const pr of c.projects) {
    const want = new Map(c.pods.filter((p) => p.project === pr.name).map((p) => [p.name, p]));
    for (const o of api.list('pods', pr.name)) if (!want.has(o.metadata.name)) api.remove('pods', pr.name, o.metadata.name);
    for (const p of want.values()) {
      const cur = api.get('pods', pr.name, p.name);
      const same = cur && cur.spec?.nodeName === p.node && cur.status?.podIP === p.address && JSON.stringify(cur.metadata.labels ?? {}) === JSON.stringify(p.labels);
      if (!same) api.putPod(pr.name, p.name, p.node, p.address, p.labels);
    }
    for (const s of c.services.filter((x) => x.project === pr.name)) {
      const eps = serviceEndpoints(c, s).map((p) => ({ name: p.name, address: p.address, node: p.node }));
      const cur = api.get('endpointslices', pr.name, `${s.name}-abcde`);
      const had = (cur?.endpoints ?? []).map((e: any) => ({ name: e.targetRef?.name, address: e.addresses?.[0], node: e.nodeName }));
      if (JSON.stringify(had) !== JSON.stringify(eps)) api.syncSlice(pr.name, s.name, eps);
    }
  }
}
