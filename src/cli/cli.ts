/**
 * `tenc` argument parsing. Each command calls the key helpers, the config
 * validator, the control socket client or runPod, and nothing else.
 * runCli returns the exit code (0 ok, 1 run-time failure, 2 usage/config error).
 */
import { readdirSync } from 'node:fs';
import { version } from './version.js';
import { protectSecrets } from './protect.js';
import { UsageError, metricsAddress, parseCommandArgs, reportFailure } from './usage.js';
import { isAbsolute, join } from 'node:path';
import { USAGE, COMMAND_HELP } from './help.js';
import { loadConfig, parseClassifyCidr, DEFAULT_SOCKET_DIR, MAX_CLASSIFY_CIDRS } from '../control/config.js';
import { DNS_LABEL, NAMESPACE_NAME, parseNodeName } from '../net/names.js';
import { parseAddress } from '../net/address.js';
import { controlRequest, defaultSocketPath, netnsInode, ControlClientError, type RekeyResult } from '../control/socket.js';
import { formatStatus, type StatusReport } from '../control/status.js';
import { isLogLevel, LOG_LEVELS } from '../log.js';
import { generatePrivateKey, publicKeyFromPrivate, generatePsk, parseKey, formatKey } from '../noise/keys.js';

export interface CliIo {
  stdout(text: string): void;
  stderr(text: string): void;
  readStdin(): Promise<string>;
}

export const processIo: CliIo = {
  stdout: (t) => void process.stdout.write(t),
  stderr: (t) => void process.stderr.write(t),
  readStdin: async () => {
    const chunks: Buffer[] = [];
    for await (const c of process.stdin) chunks.push(c as Buffer);
    return Buffer.concat(chunks).toString('utf8');
  },
};

type Options = Parameters<typeof parseCommandArgs>[1];

const SOCKET_OPTS = {
  socket: { type: 'string', short: 's' },
  interface: { type: 'string', short: 'i' },
  help: { type: 'boolean', short: 'h' },
} as const;

const COMMAND_OPTIONS: Record<string, { options: Options; positionals: [number, number] }> = {
  status: { options: { json: { type: 'boolean', short: 'j' }, ...SOCKET_OPTS }, positionals: [0, 0] },
  'set-peer': {
    options: {
      endpoint: { type: 'string', short: 'e' },
      'allowed-ips': { type: 'string', short: 'a' },
      'persistent-keepalive': { type: 'string', short: 'k' },
      ...SOCKET_OPTS,
    },
    positionals: [1, 1],
  },
  'remove-peer': { options: { ...SOCKET_OPTS }, positionals: [1, 1] },
  rekey: { options: { ...SOCKET_OPTS }, positionals: [0, 1] },
  'check-config': { options: { help: { type: 'boolean', short: 'h' } }, positionals: [1, 1] },
  agent: {
    options: {
      registry: { type: 'string', short: 'r' },
      node: { type: 'string', short: 'n' },
      project: { type: 'string', short: 'p' },
      socket: { type: 'string', short: 's' },
      'run-dir': { type: 'string' },
      'classify-cidrs': { type: 'string' },
      'cluster-dns': { type: 'string' },
      'cluster-domain': { type: 'string' },
      'cni-wait': { type: 'string' },
      'log-level': { type: 'string', short: 'l' },
      'metrics-address': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    positionals: [0, 0],
  },
  'agent status': {
    options: { json: { type: 'boolean', short: 'j' }, project: { type: 'string', short: 'p' }, node: { type: 'string', short: 'n' }, 'run-dir': { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    positionals: [0, 0],
  },
  genkey: { options: { help: { type: 'boolean', short: 'h' } }, positionals: [0, 0] },
  pubkey: { options: { help: { type: 'boolean', short: 'h' } }, positionals: [0, 0] },
  genpsk: { options: { help: { type: 'boolean', short: 'h' } }, positionals: [0, 0] },
  k8s: { options: { help: { type: 'boolean', short: 'h' } }, positionals: [0, 0] },
  'k8s create-psk': { options: { help: { type: 'boolean', short: 'h' } }, positionals: [1, 1] },
  cni: { options: { help: { type: 'boolean', short: 'h' } }, positionals: [0, 0] },
  help: { options: { help: { type: 'boolean', short: 'h' } }, positionals: [0, 2] },
};

/** --metrics-address checked now (a usage error, exit 2), undefined when not given. */
/** The pod's socket: --socket, else by --interface, else the only tenc socket of this network namespace. */
export function resolveSocket(values: { socket?: string; interface?: string }, dir = DEFAULT_SOCKET_DIR): string {
  if (values.socket) return values.socket;
  if (values.interface) return defaultSocketPath(values.interface, dir);
  const suffix = `-${netnsInode()}.sock`;
  let names: string[] = [];
  try {
    names = readdirSync(dir).filter((n) => n.endsWith(suffix));
  } catch {
    // no directory: no pod
  }
  if (names.length === 1) return join(dir, names[0]);
  if (names.length > 1) {
    throw new ControlClientError(
      'EAMBIGUOUS',
      `several tenc pods in this network namespace (${names.join(', ')}): pass --interface or --socket`,
    );
  }
  return defaultSocketPath('tenc0', dir);
}

export async function runCli(argv: string[], io: CliIo = processIo): Promise<number> {
  try {
    return await dispatch(argv, io);
  } catch (e) {
    return reportFailure(e, io);
  }
}

async function dispatch(argv: string[], io: CliIo): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined) throw new UsageError('no command given');
  if (cmd === '-h' || cmd === '--help') {
    io.stdout(USAGE);
    return 0;
  }
  if (cmd === '-V' || cmd === '--version') {
    io.stdout(`tenc ${version()}\n`);
    return 0;
  }
  // `tenc pod` has an entry of its own (main.ts runs it, bundled, without this file)
  if (cmd === 'pod') return await (await import('./pod-main.js')).podMain(rest, io);
  if (cmd === 'agent' && rest[0] === 'status') return await dispatch(['agent status', ...rest.slice(1)], io);
  if (cmd === 'k8s' && rest[0] !== undefined && !rest[0].startsWith('-')) {
    if (rest[0] !== 'create-psk') throw new UsageError(`unknown k8s command ${JSON.stringify(rest[0])}`, 'k8s');
    return await dispatch(['k8s create-psk', ...rest.slice(1)], io);
  }
  const spec = Object.hasOwn(COMMAND_OPTIONS, cmd) ? COMMAND_OPTIONS[cmd] : undefined;
  if (!spec) throw new UsageError(`unknown command ${JSON.stringify(cmd)}`);

  const { values, positionals } = parseCommandArgs(rest, spec.options, cmd);
  if (values.help) {
    io.stdout(COMMAND_HELP[cmd]);
    return 0;
  }
  const [min, max] = spec.positionals;
  if (positionals.length < min) throw new UsageError('missing argument', cmd);
  if (positionals.length > max) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[max])}`, cmd);

  switch (cmd) {
    case 'help': {
      const topic = positionals.length > 0 ? positionals.join(' ') : undefined;
      if (topic === undefined) io.stdout(USAGE);
      else if (Object.hasOwn(COMMAND_HELP, topic)) io.stdout(COMMAND_HELP[topic]!);
      else throw new UsageError(`unknown command ${JSON.stringify(topic)}`);
      return 0;
    }
    case 'cni':
      // `tenc cni` alone runs the plugin from main.ts without this file; here when called through runCli
      return await (await import('../cni/main.js')).cniMain();
    case 'genkey': {
      const k = generatePrivateKey();
      io.stdout(formatKey(k) + '\n');
      k.fill(0);
      return 0;
    }
    case 'genpsk': {
      const k = generatePsk();
      io.stdout(formatKey(k) + '\n');
      k.fill(0);
      return 0;
    }
    case 'k8s':
      throw new UsageError('missing k8s command', cmd);
    case 'k8s create-psk': {
      const { pskSecretManifest } = await import('../registry/kubernetes.js');
      const ns = positionals[0];
      if (!NAMESPACE_NAME.test(ns)) throw new UsageError(`${JSON.stringify(ns)} is not a namespace name (lowercase letters, digits, "-", at most 63)`, cmd);
      const k = generatePsk();
      // the key goes to stdout only: never to stderr, a log or a file
      io.stdout(pskSecretManifest(ns, formatKey(k)));
      k.fill(0);
      return 0;
    }
    case 'pubkey': {
      const text = await io.readStdin();
      let priv: Uint8Array;
      try {
        priv = parseKey(text, 'private key');
      } catch (e) {
        io.stderr(`tenc pubkey: ${(e as Error).message}\n`);
        return 1;
      }
      io.stdout(formatKey(publicKeyFromPrivate(priv)) + '\n');
      priv.fill(0);
      return 0;
    }
    case 'check-config': {
      const file = positionals[0];
      loadConfig(file);
      io.stdout(`${file}: ok\n`);
      return 0;
    }
    case 'agent': {
      const v = values as Record<string, string | undefined>;
      for (const k of ['registry', 'node']) if (!v[k]) throw new UsageError(`--${k} is required`, cmd);
      const projects = v.project === undefined ? undefined : v.project.split(',');
      const node = parseNodeName(v.node);
      if (!node.ok) throw new UsageError(`--node: ${node.problem}`, cmd);
      for (const x of projects ?? []) {
        if (!DNS_LABEL.test(x)) throw new UsageError(`--project: ${JSON.stringify(x)} is not a name (lowercase letters, digits, "-")`, cmd);
      }
      if (v.socket !== undefined && (!v.socket.startsWith('/') || v.socket.length > 107)) throw new UsageError(`--socket: ${JSON.stringify(v.socket)} is not an absolute path of at most 107 bytes`, cmd);
      if (v['run-dir'] !== undefined && !isAbsolute(v['run-dir'])) throw new UsageError(`--run-dir: ${JSON.stringify(v['run-dir'])} is not an absolute path`, cmd);
      const level = v['log-level'] ?? 'info';
      if (!isLogLevel(level)) throw new UsageError(`--log-level: ${JSON.stringify(level)} is not one of ${LOG_LEVELS.join(', ')}`, cmd);
      // the pods' dns.classifyCidrs: what their configs would refuse is refused here, not at every pod's start
      const classifyCidrs: string[] = [];
      for (const item of (v['classify-cidrs'] ?? '').split(',').filter((x) => x !== '')) {
        const r = parseClassifyCidr(item.trim());
        if (!r.ok) throw new UsageError(`--classify-cidrs: ${r.problem}`, cmd);
        if (!classifyCidrs.includes(r.value)) classifyCidrs.push(r.value);
      }
      if (classifyCidrs.length > MAX_CLASSIFY_CIDRS) throw new UsageError(`--classify-cidrs: ${classifyCidrs.length} ranges: at most ${MAX_CLASSIFY_CIDRS}`, cmd);
      // the cluster DNS service's addresses: the pods' DNS upstreams where no resolv.conf of their own names them
      const clusterDns: string[] = [];
      for (const item of (v['cluster-dns'] ?? '').split(',').filter((x) => x.trim() !== '')) {
        const r = parseAddress(item.trim());
        if (!r.ok) throw new UsageError(`--cluster-dns: ${r.problem}`, cmd);
        if (!clusterDns.includes(r.value)) clusterDns.push(r.value);
      }
      if (clusterDns.length > 3) throw new UsageError(`--cluster-dns: ${clusterDns.length} addresses: at most 3 (as resolv.conf)`, cmd);
      const clusterDomain = (v['cluster-domain'] ?? 'cluster.local').replace(/\.$/, '').toLowerCase();
      if (!parseNodeName(clusterDomain).ok) throw new UsageError(`--cluster-domain: ${JSON.stringify(v['cluster-domain'])} is not a domain name (DNS-1123 labels joined by dots)`, cmd);
      const cniWait = v['cni-wait'] ?? 'fail-closed';
      if (cniWait !== 'fail-closed' && cniWait !== 'proxy') throw new UsageError(`--cni-wait: ${JSON.stringify(cniWait)} is not fail-closed or proxy`, cmd);
      const { runAgent, registrySpecProblem } = await import('../agent/run.js');
      // a malformed SPEC is a usage error (exit 2); what a well-formed one names is looked for at the start (exit 1)
      const specProblem = registrySpecProblem(v.registry!);
      if (specProblem !== null) throw new UsageError(`--registry: ${specProblem}`, cmd);
      await protectSecrets();
      const { agentRunDir } = await import('../metrics/gather.js');
      return await runAgent({
        registry: v.registry!,
        node: node.value,
        projects,
        socket: v.socket,
        runDir: v['run-dir'] ?? agentRunDir(node.value),
        logLevel: level,
        classifyCidrs,
        clusterDns,
        clusterDomain,
        cniWait,
        metricsAddress: metricsAddress(v['metrics-address'], cmd),
        version: version(),
      });
    }
    case 'agent status': {
      const v = values as Record<string, string | undefined>;
      const { agentStatus, formatAgentStatus } = await import('../metrics/agent-status.js');
      const { agentRunDir, agentRunDirs } = await import('../metrics/gather.js');
      // the node agent's run dir (/run/tenc/agent-NODE, one subdirectory per project); --project picks one project
      if (v['run-dir'] !== undefined && v.node !== undefined) throw new UsageError('--node and --run-dir name the same thing: give one', cmd);
      const node = v.node === undefined ? null : parseNodeName(v.node);
      if (node && !node.ok) throw new UsageError(`--node: ${node.problem}`, cmd);
      const dirs = v['run-dir'] ? [v['run-dir']] : node ? [agentRunDir(node.value)] : agentRunDirs(DEFAULT_SOCKET_DIR);
      const { rows, problems } = await agentStatus(dirs, v.project ?? null);
      for (const p of problems) io.stderr(`tenc agent status: ${p}\n`);
      io.stdout(values.json ? JSON.stringify({ pods: rows }, null, 2) + '\n' : formatAgentStatus(rows));
      return rows.some((r) => r.error !== null) ? 1 : 0;
    }
    case 'status': {
      const path = resolveSocket(values as { socket?: string; interface?: string });
      const report = (await controlRequest(path, { op: 'status' })) as StatusReport;
      io.stdout(values.json ? JSON.stringify(report, null, 2) + '\n' : formatStatus(report));
      return 0;
    }
    case 'set-peer': {
      const peer: Record<string, unknown> = { publicKey: positionals[0] };
      if (values.endpoint !== undefined) peer.endpoint = values.endpoint;
      if (values['allowed-ips'] !== undefined) {
        peer.allowedIps = String(values['allowed-ips'])
          .split(',')
          .map((s) => s.trim())
          .filter((s) => s !== '');
      }
      if (values['persistent-keepalive'] !== undefined) {
        const s = String(values['persistent-keepalive']);
        if (!/^\d+$/.test(s)) throw new UsageError(`--persistent-keepalive: ${JSON.stringify(s)} is not a number of seconds`, cmd);
        peer.persistentKeepalive = Number(s);
      }
      const path = resolveSocket(values as { socket?: string; interface?: string });
      try {
        await controlRequest(path, { op: 'set-peer', peer });
      } catch (e) {
        // the pod validated the arguments: a usage error
        if (e instanceof ControlClientError && e.code === 'EINVAL') throw new UsageError(e.message, cmd);
        throw e;
      }
      return 0;
    }
    case 'remove-peer': {
      const path = resolveSocket(values as { socket?: string; interface?: string });
      try {
        await controlRequest(path, { op: 'remove-peer', publicKey: positionals[0] });
      } catch (e) {
        if (e instanceof ControlClientError && e.code === 'EINVAL') throw new UsageError(e.message, cmd);
        throw e;
      }
      return 0;
    }
    case 'rekey': {
      const path = resolveSocket(values as { socket?: string; interface?: string });
      const req: Record<string, unknown> = { op: 'rekey' };
      if (positionals[0] !== undefined) req.publicKey = positionals[0];
      let result: { peers: RekeyResult[] };
      try {
        result = (await controlRequest(path, req)) as { peers: RekeyResult[] };
      } catch (e) {
        if (e instanceof ControlClientError && e.code === 'EINVAL') throw new UsageError(e.message, cmd);
        throw e;
      }
      for (const p of result.peers) {
        io.stdout(`${p.publicKey}: ${p.initiation === 'sent' ? 'initiation sent' : 'initiation pending (at most one per 5 s, or no endpoint yet)'}\n`);
      }
      return 0;
    }
  }
  throw new UsageError(`unknown command ${JSON.stringify(cmd)}`);
}
