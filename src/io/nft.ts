/**
 * Running `nft`: one error class and one runner for tenc's nftables users (the
 * enforcement's table, routing/enforce.ts, and the DNS interception's, dns/intercept.ts).
 * An error names the command as run and what it printed on stderr (or how it ended).
 */
import { runOk } from './run.js';

export class NftError extends Error {
  readonly code = 'ERR_TENC_NFT';
  constructor(message: string) {
    super(message);
    this.name = 'NftError';
  }
}

/**
 * Runs `file args` (nft, or nft through `ip netns exec`) with `stdin` (e.g. a script for
 * `nft -f -`: one transaction); resolves its stdout, rejects with an NftError.
 */
export function runNft(file: string, args: string[], stdin?: string): Promise<string> {
  return runOk(file, args, { stdin }, (detail, r) => new NftError(r ? `${[file, ...args].join(' ')}: ${detail}` : `${file}: ${detail}`));
}
