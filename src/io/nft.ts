/**
 * Running `nft`: one error class and one runner for tenc's nftables users (the
 * enforcement's table, routing/enforce.ts, and the DNS interception's, dns/intercept.ts).
 * An error names the command as run and what it printed on stderr (or how it ended).
 */
import { netnsName, runOk } from './run.js';
import type { NetnsScope } from './netns.js';

export class NftError extends Error {
  readonly code = 'ERR_TENC_NFT';
  constructor(message: string) {
    super(message);
    this.name = 'NftError';
  }
}

/**
 * Runs `file args` (nft, or nft through `ip netns exec`) with `stdin` (e.g. a script for
 * `nft -f -`: one transaction), in network namespace `netns` (a path) when given;
 * resolves its stdout, rejects with an NftError.
 */
export function runNft(file: string, args: string[], stdin?: string, netns?: string | NetnsScope): Promise<string> {
  const where = netns !== undefined ? ` (in ${netnsName(netns)})` : '';
  return runOk(file, args, { stdin, netns }, (detail, r) => new NftError(r ? `${[file, ...args].join(' ')}${where}: ${detail}` : `${file}${where}: ${detail}`));
}
