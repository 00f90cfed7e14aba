/**
 * Picks a registry backend from `tenc agent --registry SPEC`:
 *
 *   dir:PATH          the directory registry (dir.ts); a bare PATH means the same
 *   kubernetes[:KUBECONFIG]  the Kubernetes API (kubernetes.ts): KUBECONFIG, or
 *                     $KUBECONFIG / ~/.kube/config / the in-cluster service account
 *
 * Each backend adds its scheme here and nowhere else; everything above sees only
 * the Registry interface.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { DirectoryRegistry } from './dir.js';
import { KubernetesRegistry, loadKubeConfig } from './kubernetes.js';
import type { Registry } from './registry.js';

export interface OpenRegistryOptions {
  /** A registry object that was skipped (unreadable, malformed): where and why. */
  onProblem?: (where: string, why: string) => void;
  /** The agent's run directory (kubernetes: the psk files go to RUN_DIR/psk, default /run/tenc/psk). */
  runDir?: string;
}

export class RegistrySpecError extends Error {
  override name = 'RegistrySpecError';
}

export const REGISTRY_SCHEMES = ['dir', 'kubernetes'] as const;

/** Opens the backend SPEC names; throws RegistrySpecError naming what is wrong with SPEC. */
export async function openRegistry(spec: string, o: OpenRegistryOptions = {}): Promise<Registry> {
  const m = /^([a-z]+):(.*)$/s.exec(spec);
  const scheme = m ? m[1] : 'dir';
  const rest = m ? m[2] : spec;
  switch (scheme) {
    case 'dir': {
      if (rest === '') throw new RegistrySpecError(`--registry ${spec}: dir: needs a directory`);
      if (!existsSync(rest)) throw new RegistrySpecError(`--registry ${spec}: registry directory ${rest} does not exist`);
      return new DirectoryRegistry(rest, { onProblem: o.onProblem });
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
        log: { warn: (f, m) => problem(String(f.resource ?? f.project ?? 'kubernetes'), m), info: () => {} },
      });
    }
    default:
      throw new RegistrySpecError(`--registry ${spec}: unknown backend "${scheme}" (known: ${REGISTRY_SCHEMES.join(', ')})`);
  }
}
