/**
 * The CNI plugin skeleton (CNI spec 1.0.0, STATUS and GC of 1.1.0): reads CNI_* from
 * the environment and the network configuration from stdin, validates both, dispatches
 * ADD/DEL/CHECK/VERSION/STATUS/GC to a plugin, and writes the plugin's result or the
 * spec's error JSON ({cniVersion, code, msg, details}) to stdout. The plugin code
 * never reads CNI_* itself: it gets a checked CniRequest.
 *
 * cniVersion 0.3.0 and 0.3.1 (what kindnet, flannel and Calico write), 0.4.0, 1.0.0 and
 * 1.1.0. What the versions change for tenc: CHECK came with 0.4.0 (an older
 * configuration asking for it is refused with code 1, as the spec's skeleton pkg/skel
 * does; libcni never sends it); GC with 1.1.0 (likewise refused before it); before
 * 0.4.0 DEL gets no prevResult (tenc's DEL reads none); a 0.3.x or 0.4.0 prevResult's
 * ips[] carry "version" (tenc reads ips[].address only). 0.1.0 and 0.2.0 are refused:
 * they have no chained plugins (no prevResult) and their results have another form
 * (ip4/ip6), also the empty one an unchained ADD prints (plugin.ts). Results and errors
 * carry the request's cniVersion (1.0.0 for a request whose version is not supported).
 *
 * Exit code: 0 on success, 1 with the error JSON on stdout otherwise.
 */

/** Oldest first, as cni/tenc-cni.c VERSIONS (and deploy/cni-install.sh's list). */
export const SUPPORTED_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] as const;
type Version = (typeof SUPPORTED_VERSIONS)[number];
/** v (supported) is older than w. */
const before = (v: string, w: Version): boolean => SUPPORTED_VERSIONS.indexOf(v as Version) < SUPPORTED_VERSIONS.indexOf(w);

/** The unsupported-version error's details tail for 0.1.0 and 0.2.0 (as the C plugin's PRE_CHAINING). */
const PRE_CHAINING = '; 0.1.0 and 0.2.0 have no chained plugins (no prevResult) and results of another form (ip4, ip6)';

/** Largest network configuration read from stdin, in bytes (as cni/tenc-cni.c's MAX_STDIN). */
export const MAX_STDIN = 1 << 20;

/** Error codes of the CNI spec (section "Error"). */
export const CniCode = {
  incompatibleVersion: 1,
  unsupportedField: 2,
  unknownContainer: 3,
  invalidEnv: 4,
  ioFailure: 5,
  decodeFailure: 6,
  invalidNetworkConfig: 7,
  tryAgainLater: 11,
  pluginNotAvailable: 50,
  limitedConnectivity: 51,
} as const;

export class CniError extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly details = '',
  ) {
    super(message);
    this.name = 'CniError';
  }
}

export type CniCommand = 'ADD' | 'DEL' | 'CHECK' | 'VERSION' | 'STATUS' | 'GC';
const COMMANDS: readonly CniCommand[] = ['ADD', 'DEL', 'CHECK', 'VERSION', 'STATUS', 'GC'];

export interface CniRequest {
  command: Exclude<CniCommand, 'VERSION'>;
  containerId: string;
  /** Empty for DEL when missing or not an absolute path (the spec lets the runtime leave it out), and for STATUS and GC. */
  netns: string;
  /** Empty for DEL when missing or not an interface name (DEL reads it best effort), and for STATUS and GC. */
  ifname: string;
  /** CNI_ARGS as key/value pairs (K8S_POD_NAMESPACE, K8S_POD_NAME, K8S_POD_UID, IP, ...); for DEL, its parts that are not KEY=VALUE left out. */
  args: Record<string, string>;
  path: string[];
  /** The parsed network configuration (stdin). */
  config: Record<string, unknown>;
  cniVersion: string;
}

export interface CniPlugin {
  /** Validates the plugin-specific part of the configuration; throws CniError(7) naming the field. */
  add(req: CniRequest): Promise<unknown>;
  del(req: CniRequest): Promise<void>;
  check(req: CniRequest): Promise<void>;
  status?(req: CniRequest): Promise<void>;
  gc?(req: CniRequest): Promise<void>;
}

const CONTAINER_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
const IFNAME_BAD = /[/:\s]/;

function need(env: NodeJS.ProcessEnv, name: string): string {
  const v = env[name];
  if (v === undefined || v === '') throw new CniError(CniCode.invalidEnv, `${name} is not set`, `the runtime must set ${name} for this command`);
  return v;
}

/** CNI_ARGS: "K1=V1;K2=V2". A part that is not KEY=VALUE is code 4 naming it (strict) or skipped. */
export function parseCniArgs(s: string | undefined, strict = true): Record<string, string> {
  const out: Record<string, string> = {};
  if (!s) return out;
  for (const part of s.split(';')) {
    if (part === '') continue;
    const i = part.indexOf('=');
    if (i <= 0 && !strict) continue;
    if (i <= 0) throw new CniError(CniCode.invalidEnv, `CNI_ARGS: ${JSON.stringify(part)} is not KEY=VALUE`);
    out[part.slice(0, i)] = part.slice(i + 1);
  }
  return out;
}

/**
 * The checked request (everything but VERSION), or a CniError. `onVersion` gets the
 * configuration's cniVersion as soon as it is known to be a supported one, before the
 * rest is checked: the errors of the checks after it are printed in that version (as
 * the C plugin does).
 */
export function parseRequest(env: NodeJS.ProcessEnv, stdin: string, onVersion: (v: string) => void = () => {}): CniRequest | { command: 'VERSION'; cniVersion: string | null } {
  const command = need(env, 'CNI_COMMAND');
  if (!(COMMANDS as readonly string[]).includes(command)) {
    throw new CniError(CniCode.invalidEnv, `CNI_COMMAND: ${JSON.stringify(command)} is not one of ${COMMANDS.join(', ')}`);
  }
  let config: unknown;
  try {
    config = JSON.parse(stdin);
  } catch (e) {
    if (command === 'VERSION') return { command, cniVersion: null };
    throw new CniError(CniCode.decodeFailure, 'stdin: the network configuration is not JSON', (e as Error).message);
  }
  if (typeof config !== 'object' || config === null || Array.isArray(config)) {
    throw new CniError(CniCode.decodeFailure, 'stdin: the network configuration is not a JSON object');
  }
  const c = config as Record<string, unknown>;
  const cniVersion = c.cniVersion;
  if (typeof cniVersion !== 'string') throw new CniError(CniCode.invalidNetworkConfig, 'cniVersion: missing or not a string');
  if ((SUPPORTED_VERSIONS as readonly string[]).includes(cniVersion)) onVersion(cniVersion);
  if (command === 'VERSION') return { command, cniVersion };
  if (!(SUPPORTED_VERSIONS as readonly string[]).includes(cniVersion)) {
    const why = cniVersion === '0.1.0' || cniVersion === '0.2.0' ? PRE_CHAINING : '';
    throw new CniError(CniCode.incompatibleVersion, `cniVersion: ${cniVersion} is not supported`, `supported: ${SUPPORTED_VERSIONS.join(', ')}${why}`);
  }
  if (command === 'CHECK' && before(cniVersion, '0.4.0')) {
    // CHECK came with 0.4.0: refused as pkg/skel does (libcni does not send it for such a network)
    throw new CniError(CniCode.incompatibleVersion, `cniVersion: ${cniVersion} does not allow CHECK`, 'CHECK needs cniVersion 0.4.0 or later');
  }
  const path = (env.CNI_PATH ?? '').split(':').filter((x) => x !== '');
  if (command === 'STATUS') return { command, containerId: '', netns: '', ifname: '', args: {}, path, config: c, cniVersion };
  if (command === 'GC') {
    // a 1.1.0 command: an older configuration cannot ask for it (SUPPORTED_VERSIONS is in order)
    if (before(cniVersion, '1.1.0')) {
      throw new CniError(CniCode.incompatibleVersion, `cniVersion: ${cniVersion} does not allow GC`, 'GC needs cniVersion 1.1.0 or later');
    }
    return { command, containerId: '', netns: '', ifname: '', args: {}, path, config: c, cniVersion };
  }
  const containerId = need(env, 'CNI_CONTAINERID');
  if (!CONTAINER_ID.test(containerId) || containerId.length > 256) throw new CniError(CniCode.invalidEnv, `CNI_CONTAINERID: ${JSON.stringify(containerId)} is not a container id`);
  const ifnameOk = (v: string) => Buffer.byteLength(v) <= 15 && !IFNAME_BAD.test(v); // bytes, as the kernel (IFNAMSIZ) and the C plugin count
  const netnsOk = (v: string) => v === '' || v.startsWith('/');
  if (command === 'DEL') {
    // DEL, best effort (CNI spec, DEL): it needs the container id and nothing else of the
    // environment. An ADD refused for a bad CNI_IFNAME, CNI_NETNS or CNI_ARGS is followed by
    // the runtime's DEL with the same environment: were it refused too, the sandbox would
    // never be removed. So CNI_IFNAME and CNI_NETNS may be missing or bad ('' then: tenc's DEL
    // reads neither; the netns is gone already, often) and CNI_ARGS' bad parts are skipped.
    const ifname = env.CNI_IFNAME ?? '';
    const netns = env.CNI_NETNS ?? '';
    const args = parseCniArgs(env.CNI_ARGS, false);
    return { command, containerId, netns: netnsOk(netns) ? netns : '', ifname: ifnameOk(ifname) ? ifname : '', args, path, config: c, cniVersion };
  }
  const ifname = need(env, 'CNI_IFNAME');
  if (!ifnameOk(ifname)) throw new CniError(CniCode.invalidEnv, `CNI_IFNAME: ${JSON.stringify(ifname)} is not an interface name`);
  const netns = need(env, 'CNI_NETNS');
  if (!netnsOk(netns)) throw new CniError(CniCode.invalidEnv, `CNI_NETNS: ${JSON.stringify(netns)} is not an absolute path`);
  const args = parseCniArgs(env.CNI_ARGS);
  return { command: command as CniRequest['command'], containerId, netns, ifname, args, path, config: c, cniVersion };
}

export interface CniIo {
  env: NodeJS.ProcessEnv;
  stdin: () => Promise<string>;
  stdout: (s: string) => void;
}

/** Runs one invocation; returns the exit code. */
export async function runPlugin(plugin: CniPlugin, io: CniIo): Promise<number> {
  let version = '1.0.0';
  try {
    const stdin = await io.stdin();
    // the request's version for the result and for every error after the version's check
    const req = parseRequest(io.env, stdin, (v) => (version = v));
    if (req.command === 'VERSION') {
      io.stdout(JSON.stringify({ cniVersion: version, supportedVersions: SUPPORTED_VERSIONS }) + '\n');
      return 0;
    }
    switch (req.command) {
      case 'ADD':
        io.stdout(JSON.stringify(await plugin.add(req)) + '\n');
        return 0;
      case 'DEL':
        await plugin.del(req);
        return 0;
      case 'CHECK':
        await plugin.check(req);
        return 0;
      case 'STATUS':
        if (!plugin.status) throw new CniError(CniCode.incompatibleVersion, 'STATUS is not supported');
        await plugin.status(req);
        return 0;
      case 'GC':
        if (!plugin.gc) throw new CniError(CniCode.incompatibleVersion, 'GC is not supported');
        await plugin.gc(req);
        return 0;
    }
  } catch (e) {
    const err = e instanceof CniError ? e : new CniError(CniCode.ioFailure, (e as Error).message);
    io.stdout(JSON.stringify({ cniVersion: version, code: err.code, msg: err.message, details: err.details }) + '\n');
    return 1;
  }
}

/**
 * The network configuration from stdin (or `input`), as UTF-8. Over MAX_STDIN bytes it
 * is refused (code 6) and reading stops there: the stream is destroyed, so a runtime
 * that never closes stdin neither grows our memory nor keeps the process waiting.
 */
export function readStdin(input: NodeJS.ReadableStream & { destroy(): void } = process.stdin): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let n = 0;
    const onData = (d: Buffer | string) => {
      const b = typeof d === 'string' ? Buffer.from(d, 'utf8') : d;
      n += b.length; // bytes, as the C plugin counts: a multi-byte character is not one
      if (n > MAX_STDIN) {
        input.off('data', onData);
        input.off('end', onEnd);
        input.destroy();
        reject(new CniError(CniCode.decodeFailure, 'stdin: more than 1 MiB'));
        return;
      }
      chunks.push(b);
    };
    const onEnd = () => resolve(Buffer.concat(chunks).toString('utf8'));
    input.on('data', onData);
    input.on('end', onEnd);
    input.on('error', reject);
  });
}
