/**
 * Picks a registry backend from `tenc agent --registry SPEC`:
 *
 *   dir:PATH          the directory registry (dir.ts); a bare PATH means the same
 *   etcd:ENDPOINTS[?ca=FILE&cert=FILE&key=FILE&prefix=/tenc/&user=NAME&password-file=FILE&ttl=S]
 *                     the etcd registry (etcd.ts); ENDPOINTS comma-separated http(s)://HOST:PORT
 *
 * Each backend adds its scheme here and nowhere else; everything above sees only
 * the Registry interface.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { DirectoryRegistry } from './dir.js';
import { EtcdRegistry, EtcdSpecError, etcdClient, parseEtcdSpec } from './etcd.js';
import type { Registry } from './registry.js';

export interface OpenRegistryOptions {
  /** A registry object that was skipped (unreadable, malformed): where and why. */
  onProblem?: (where: string, why: string) => void;
  /** Connection events of a network backend (snapshot read, watch error, lease lost). */
  onEvent?: (what: string, detail: Record<string, unknown>) => void;
  /** The agent's run directory (etcd: the psk files go to RUN_DIR/psk, mode 0600 in a 0700 directory). */
  runDir?: string;
}

export class RegistrySpecError extends Error {
  override name = 'RegistrySpecError';
}

export const REGISTRY_SCHEMES = ['dir', 'etcd'] as const;

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
    default:
      throw new RegistrySpecError(`--registry ${spec}: unknown backend "${scheme}" (known: ${REGISTRY_SCHEMES.join(', ')})`);
  }
}
