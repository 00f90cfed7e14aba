/** tenc's version, from package.json (found from dist/src/cli, dist/bundle or src/cli). */
import { readFileSync } from 'node:fs';

export function version(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8'));
    if (pkg.name === 'tenc') return pkg.version;
  } catch {
    // running from src/ or dist/bundle/: one level less
  }
  try {
    return JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')).version;
  } catch {
    return 'unknown';
  }
}
