/** `tenc cni`: the entry the launcher (CNI_PATH/tenc) execs. */
import { tencPlugin } from './plugin.js';
import { readStdin, runPlugin } from './skeleton.js';

export function cniMain(): Promise<number> {
  return runPlugin(tencPlugin, { env: process.env, stdin: readStdin, stdout: (s) => process.stdout.write(s) });
}
