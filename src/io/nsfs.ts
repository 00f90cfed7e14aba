/**
 * Whether a file is a namespace file (nsfs: /run/netns/NAME bind mounts, /proc/PID/ns/*):
 * every namespace file has the device of /proc/self/ns/net, a file someone put in
 * their place does not. The agent checks a CNI registration's netns with it
 * (agent/node.ts), a standby its handoff's (cli/standby.ts).
 */
import { statSync, type Stats } from 'node:fs';

export function isNamespaceFile(st: Pick<Stats, 'dev'>): boolean {
  return st.dev === statSync('/proc/self/ns/net').dev;
}
