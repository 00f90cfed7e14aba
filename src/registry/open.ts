/**
 * Picks a registry backend from `tenc agent --registry SPEC`:
 *
 *   dir:PATH          the directory registry (dir.ts); a bare PATH means the same
 *
 * Each backend adds its scheme here and nowhere else; everything above sees only
 * the Registry interface.
 */
import { existsSync } from 'node:fs';
import { DirectoryRegistry } from './dir.js';
import type { Registry } from './registry.js';

export interface OpenRegistryOptions {
  /** A registry object that was skipped (unreadable, malformed): where and why. */
  onProblem?: (where: string, why: string) => void;
}

export class RegistrySpecError extends Error {
  override name = 'RegistrySpecError';
}

export const REGISTRY_SCHEMES = ['dir'] as const;

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
    default:
      throw new RegistrySpecError(`--registry ${spec}: unknown backend "${scheme}" (known: ${REGISTRY_SCHEMES.join(', ')})`);
  }
}
