/**
 * Picks a registry backend from `tenc agent --registry SPEC`:
 *
 *   dir:PATH          the directory registry (dir.ts); a bare PATH means the same
 *   etcd:ENDPOINTS[?ca=FILE&cert=FILE&key=FILE&prefix=/tenc/&user=NAME&password-file=FILE&ttl=S]
 *                     the etcd registry (etcd.ts); ENDPOINTS comma-separated http(s)://HOST:PORT
 *   kubernetes[:KUBECONFIG]  the Kubernetes API (kubernetes.ts): KUBECONFIG, or
 *                     $KUBECONFIG / ~/.kube/config / the in-cluster service account
 *
 * Each backend adds its scheme here and nowhere else; everything above sees only
 * the Registry interface.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { DirectoryRegistry } from './dir.js';
import { EtcdRegistry } from './etcd.js';
import { EtcdSpecError, etcdClient, parseEtcdSpec } from './etcd-client.js';
import { KubernetesRegistry, loadKubeConfig } from './kubernetes.js';
import type { Registry } from './registry.js';

export interface OpenRegistryOptions {
  /** A registry object that was skipped (unreadable, malformed): where and why. */
  onProblem?: (where: string, why: string) => void;
  /** Connection events of a network backend (snapshot read, watch error, lease lost). */
  onEvent?: (what: string, detail: Record<string, unknown>) => void;
  /** The agent's run directory (etcd, kubernetes: the psk files go to RUN_DIR/psk, mode 0600 in a 0700 directory; kubernetes without it: /run/tenc/psk). */
  runDir?: string;
}

export class RegistrySpecError extends Error {
  override name = 'RegistrySpecError';
}

export const REGISTRY_SCHEMES = ['dir', 'etcd', 'kubernetes'] as const;

/** Opens the backend SPEC names; throws RegistrySpecError naming what is wrong with SPEC. */
export async function openRegistry(spec: string, o: OpenRegistryOptions = {}): Promise<Registry> {
  // `kubernetes` alone (no kubeconfig path) names the backend, not a directory
  const m = spec === 'kubernetes' ? ['', 'kubernetes', ''] : /^([a-z]+):(.*)$/s.exec(spec);
  const scheme = m ? m[1] : 'dir';
  const rest = m ? m[2] : spec;
  switch (scheme) {
    case 'dir': {
      if (rest === '') throw new RegistrySpecError(`--registry ${spec}: dir: needs a directory`);
      if (!existsSync(rest)) throw new RegistrySpecError(`--registry ${spec}: registry directory ${rest} does not exist`);
      return new DirectoryRegistry(rest, { onProblem: o.onProblem });
    }
    case 'etcd': {
      try {
        const c = parseEtcdSpec(rest);
        etcdClient(c).close(); // the TLS and password files are readable
        return new EtcdRegistry(c, { onProblem: o.onProblem, onEvent: o.onEvent, secretDir: o.runDir ? join(o.runDir, 'psk') : undefined });
      } catch (e) {
        if (e instanceof EtcdSpecError) throw new RegistrySpecError(`--registry ${spec}: ${e.message}`);
        throw e;
      }
    }
    case 'kubernetes': {
      if (rest !== '' && !existsSync(rest)) throw new RegistrySpecError(`--registry ${spec}: kubeconfig ${rest} does not exist`);
      let kc;
      try {
        kc = loadKubeConfig(rest || undefined);
      } catch (e) {
        throw new RegistrySpecError(`--registry ${spec}: ${(e as Error).message}`);
      }
      const problem = o.onProblem ?? (() => {});
      return new KubernetesRegistry(kc, {
        pskDir: o.runDir ? join(o.runDir, 'psk') : undefined,
        // read by deploy/daemonset.yaml's probes
        healthFile: process.env.TENC_HEALTH_FILE || undefined,
        // deploy/daemonset.yaml sets NODE_NAME (spec.nodeName): named in the Events the agent records
        node: process.env.NODE_NAME || undefined,
        log: { warn: (f, m) => problem(String(f.resource ?? f.project ?? 'kubernetes'), m), info: () => {} },
      });
    }
    default:
      throw new RegistrySpecError(`--registry ${spec}: unknown backend "${scheme}" (known: ${REGISTRY_SCHEMES.join(', ')})`);
  }
}
