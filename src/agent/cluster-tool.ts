/**
 * The helper netns-scripts/cluster.sh calls with node: validates the cluster file,
 * prints the build plan (one line per object, space-separated fields the script
 * reads), and writes the derived files into the state directory: the registry
 * objects, the kube-proxy rules and the DNS records.
 *
 *   cluster-tool.js plan FILE STATE PREFIX         validate, save STATE/cluster.json (STATE "": validate only),
 *                                                  print the plan
 *   cluster-tool.js sync STATE PREFIX              registry, STATE/kube.nft, STATE/dns.hosts (the registry:
 *                                                  STATE/registry, or etcd when STATE/etcd/spec-controller exists)
 *   cluster-tool.js add-pod STATE PREFIX JSON      validate the cluster with one more pod; print its plan line
 *   cluster-tool.js remove-pod STATE PREFIX NAME   the same with one pod less; print its namespace
 *   cluster-tool.js apply-policy STATE JSON        create or replace a TencPolicy, the whole cluster checked again
 *   cluster-tool.js delete-policy STATE PROJECT NAME   delete a TencPolicy
 *   cluster-tool.js classify-cidrs STATE           the cluster's ranges (pod and service CIDRs, both families), comma-separated,
 *                                                  for `tenc agent --classify-cidrs`
 *   cluster-tool.js conflists STATE                STATE/cni/<node>.conflist (bridge + host-local with a range per
 *                                                  family, loopback, tenc)
 *                                                  (the plugin STATE/cni/bin/tenc is cni/tenc-cni.c, which
 *                                                  cluster.sh up builds there with cni/build.sh)
 *   cluster-tool.js cni ADD|DEL|CHECK|UNDO STATE PREFIX POD [X]
 *                                                  the container runtime's part: runs the node's conflist chain for
 *                                                  the pod (ADD in order with prevResult, DEL in reverse, CHECK;
 *                                                  UNDO: a DEL that goes on past a plugin that fails, after a
 *                                                  failed ADD); run it inside the node's namespace (the plugins'
 *                                                  host side)
 *
 * The usage line (COMMANDS) lists the same. Exit codes: 0 ok, 2 invalid file (one
 * `FILE: field: problem` line each on stderr) or usage, 1 other.
 * Plan lines (DNS, EXTERNAL, POD_CIDR, GATEWAY, ADDR are of the cluster's primary family;
 * "-" marks a field that does not apply):
 *   underlay NS
 *   infra NS UNDERLAY_ADDR/LEN DNS EXTERNAL
 *   infra6 NS LINK_LOCAL DNS6|- EXTERNAL6|-             (a cluster with IPv6)
 *   node NAME NS UL_PORT UNDERLAY_ADDR/LEN OVERLAY_ADDR/LEN MAC POD_CIDR GATEWAY/LEN INFRA_ADDR
 *   node6 NS LINK_LOCAL GATEWAY6/LEN|- INFRA_LINK_LOCAL   (a cluster with IPv6)
 *   vxlan-peer NS PEER_OVERLAY_ADDR PEER_MAC PEER_UNDERLAY_ADDR PEER_POD_CIDR|-
 *   vxlan-peer6 NS PEER_LINK_LOCAL PEER_MAC PEER_POD_CIDR6 (a cluster with IPv6)
 *   infra-route POD_CIDR NODE_UNDERLAY_ADDR                (IPv4 pod ranges)
 *   infra-route6 POD_CIDR6 NODE_LINK_LOCAL                 (IPv6 pod ranges)
 *   pod NAME NS NODE_NS BRIDGE_PORT ADDR/LEN GATEWAY PROJECT DNS [ADDR6/LEN GATEWAY6 DNS6]
 *
 * IPv6 and the IPv4-only underlay: neither the underlay nor the VXLAN link has IPv6
 * addresses; IPv6 routes use fixed link-local next hops on them (fe80::N for node N,
 * fe80::ffff for infra), and IPv6 pod traffic between nodes rides the IPv4 VXLAN.
 */
import { existsSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import {
  ClusterConfigError,
  INFRA_LINK_LOCAL,
  clusterFamilies,
  dnsHosts,
  familyOf,
  infraUnderlay,
  kubeProxyRules,
  nodeLayouts,
  parseAddr,
  podAddresses,
  serviceEndpoints,
  serviceVips,
  validateCluster,
  type ClusterConfig,
  type ClusterPod,
} from './cluster-config.js';
import { DirectoryRegistry, writeJsonAtomic } from '../registry/dir.js';
import { EtcdRegistryWriter } from '../registry/etcd.js';
import { parseEtcdSpec } from '../registry/etcd-client.js';

/** What syncRegistry writes through: the directory registry, or the etcd writer (which sends on flush). */
export type RegistryWriter = Pick<DirectoryRegistry, 'putProject' | 'replaceObjects'>;

export const KUBE_TABLE = 'tenc_kube_proxy';

export function nodeNs(prefix: string, node: string): string {
  return `${prefix}-n-${node}`;
}
export function podNs(prefix: string, pod: string): string {
  return `${prefix}-${pod}`;
}
const mac = (i: number) => `02:00:0a:00:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`;
const addrOnly = (cidr: string) => cidr.split('/')[0];

function podLine(c: ClusterConfig, prefix: string, p: ClusterPod): string {
  const n = nodeLayouts(c).find((x) => x.name === p.node)!;
  const len = n.gateway.split('/')[1];
  // the bridge port is named after the primary address's last 32 bits
  const port = `v${(parseAddr(p.address)!.n & 0xffffffffn).toString(16).padStart(8, '0')}`;
  const fields = ['pod', p.name, podNs(prefix, p.name), nodeNs(prefix, p.node), port, `${p.address}/${len}`, addrOnly(n.gateway), p.project, c.dns];
  if (p.address6 && n.gateway6 && c.dns6) fields.push(`${p.address6}/${n.gateway6.split('/')[1]}`, addrOnly(n.gateway6), c.dns6);
  return fields.join(' ');
}

export function plan(c: ClusterConfig, prefix: string): string[] {
  const lines: string[] = [];
  const nodes = nodeLayouts(c);
  const infra = infraUnderlay(c);
  const primary = clusterFamilies(c)[0];
  const has6 = clusterFamilies(c).includes(6);
  lines.push(`underlay ${prefix}-ul`);
  lines.push(`infra ${prefix}-infra ${infra} ${c.dns} ${c.external}`);
  if (has6) lines.push(`infra6 ${prefix}-infra ${INFRA_LINK_LOCAL} ${c.dns6 ?? '-'} ${c.external6 ?? '-'}`);
  for (const n of nodes) {
    lines.push(['node', n.name, nodeNs(prefix, n.name), `n${n.index}`, n.underlay, n.overlay, mac(n.index), n.podCidr, n.gateway, addrOnly(infra)].join(' '));
    if (has6) lines.push(['node6', nodeNs(prefix, n.name), n.linkLocal, n.gateway6 ?? '-', INFRA_LINK_LOCAL].join(' '));
  }
  for (const n of nodes) {
    for (const o of nodes) {
      if (o === n) continue;
      lines.push(['vxlan-peer', nodeNs(prefix, n.name), addrOnly(o.overlay), mac(o.index), addrOnly(o.underlay), primary === 4 ? o.podCidr : '-'].join(' '));
      const cidr6 = primary === 6 ? o.podCidr : o.podCidr6;
      if (cidr6) lines.push(['vxlan-peer6', nodeNs(prefix, n.name), o.linkLocal, mac(o.index), cidr6].join(' '));
    }
    if (primary === 4) lines.push(`infra-route ${n.podCidr} ${addrOnly(n.underlay)}`);
    const cidr6 = primary === 6 ? n.podCidr : n.podCidr6;
    if (cidr6) lines.push(`infra-route6 ${cidr6} ${n.linkLocal}`);
  }
  for (const p of c.pods) lines.push(podLine(c, prefix, p));
  return lines;
}

/** The registry objects of the cluster, as the Kubernetes API would show them. */
export function syncRegistry(c: ClusterConfig, reg: RegistryWriter, pskDir: string, prefix: string): void {
  for (const pr of c.projects) {
    reg.putProject(pr.name, join(pskDir, pr.name));
    const pods = new Map<string, unknown>();
    for (const p of c.pods.filter((x) => x.project === pr.name)) {
      pods.set(p.name, {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: p.name, namespace: pr.name, labels: p.labels },
        spec: { nodeName: p.node },
        status: { phase: 'Running', podIP: p.address, podIPs: podAddresses(p).map((ip) => ({ ip })) },
      });
    }
    const services = new Map<string, unknown>();
    const slices = new Map<string, unknown>();
    for (const s of c.services.filter((x) => x.project === pr.name)) {
      const ports = s.ports.map((q) => ({ protocol: q.protocol.toUpperCase(), port: q.port }));
      const vips = serviceVips(s);
      const families = vips.map((v) => `IPv${familyOf(v)}`);
      services.set(s.name, {
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name: s.name, namespace: pr.name },
        spec: {
          type: 'ClusterIP',
          clusterIP: vips[0],
          clusterIPs: vips,
          ipFamilies: families,
          ipFamilyPolicy: vips.length > 1 ? 'RequireDualStack' : 'SingleStack',
          ports,
          selector: s.selector,
        },
      });
      // one EndpointSlice per family, as the endpoint slice controller makes them: the
      // primary family's named after the service, the IPv6 one of a dual-stack service <name>-ipv6
      for (const [i, fam] of families.entries()) {
        const slice = i === 0 ? s.name : `${s.name}-ipv6`;
        slices.set(slice, {
          apiVersion: 'discovery.k8s.io/v1',
          kind: 'EndpointSlice',
          metadata: { name: slice, namespace: pr.name, labels: { 'kubernetes.io/service-name': s.name } },
          addressType: fam,
          endpoints: serviceEndpoints(c, s).map((p) => ({
            addresses: podAddresses(p).filter((a) => `IPv${familyOf(a)}` === fam),
            conditions: { ready: true },
            nodeName: p.node,
            targetRef: { kind: 'Pod', name: p.name, namespace: pr.name },
          })),
          ports,
        });
      }
    }
    reg.replaceObjects('pods', pr.name, pods);
    reg.replaceObjects('services', pr.name, services);
    reg.replaceObjects('endpointslices', pr.name, slices);
    reg.replaceObjects('policies', pr.name, new Map((c.policies ?? []).filter((p) => p.project === pr.name).map((p) => [p.name, p.object])));
  }
}

function loadState(state: string): ClusterConfig {
  const file = join(state, 'cluster.json');
  return validateCluster(JSON.parse(readFileSync(file, 'utf8')), file);
}

/** The ranges whose unknown addresses a pod classifies on first use: every node's pod CIDRs and the service CIDRs, both families. */
export function classifyCidrs(c: ClusterConfig): string[] {
  const six = [...c.nodes.flatMap((n) => (n.podCidr6 ? [n.podCidr6] : [])), ...(c.serviceCidr6 ? [c.serviceCidr6] : [])];
  return [...new Set([...c.nodes.map((n) => n.podCidr), c.serviceCidr, ...six])];
}

/** Debian's containernetworking-plugins. */
export const SYSTEM_CNI_PATH = '/usr/lib/cni';
export const CNI_TIMEOUT_MS = 15_000;

export function agentSocket(state: string, node: string): string {
  return join(state, 'agents', `${node}.sock`);
}

/**
 * The node's conflist, as containerd would read it from /etc/cni/net.d: the bridge
 * plugin on the node bridge br0 (addresses from host-local: one range per family of
 * the cluster, so a dual-stack pod gets one address of each; the cluster file's pod
 * addresses are requested through the "ips" capability, runtimeConfig.ips), loopback,
 * then tenc.
 */
export function conflist(c: ClusterConfig, state: string, node: string): unknown {
  const n = nodeLayouts(c).find((x) => x.name === node)!;
  const ranges = [[{ subnet: n.podCidr, gateway: addrOnly(n.gateway) }]];
  if (n.podCidr6 && n.gateway6) ranges.push([{ subnet: n.podCidr6, gateway: addrOnly(n.gateway6) }]);
  const routes = clusterFamilies(c).map((f) => ({ dst: f === 4 ? '0.0.0.0/0' : '::/0' }));
  return {
    cniVersion: '1.0.0',
    name: `tenc-cluster-${node}`,
    plugins: [
      {
        type: 'bridge',
        bridge: 'br0',
        isGateway: false,
        mtu: 1450,
        capabilities: { ips: true },
        ipam: { type: 'host-local', ranges, routes, dataDir: join(state, 'cni', 'ipam') },
      },
      { type: 'loopback' },
      { type: 'tenc', agentSocket: agentSocket(state, node), timeoutMs: CNI_TIMEOUT_MS },
    ],
  };
}

/**
 * Runs the chain like libcni: ADD in order (each gets the previous result), DEL in
 * reverse, CHECK in order; each stops at the first plugin that fails (DEL with keepGoing
 * runs the others too). runtimeConfig goes to each plugin that declares the capability
 * (e.g. "ips": the addresses requested for the pod).
 */
export function runChain(
  cmd: 'ADD' | 'DEL' | 'CHECK',
  list: { cniVersion: string; name: string; plugins: Record<string, unknown>[] },
  env: Record<string, string>,
  cniPath: string[],
  prevResult?: unknown,
  runtimeConfig: Record<string, unknown> = {},
  /** DEL only: go on past a plugin that failed (the first failure is returned). */
  keepGoing = false,
): { ok: true; result: unknown } | { ok: false; plugin: string; out: string } {
  const plugins = cmd === 'DEL' ? [...list.plugins].reverse() : list.plugins;
  let prev: unknown = prevResult;
  let failed: { ok: false; plugin: string; out: string } | null = null;
  for (const pl of plugins) {
    const type = String(pl.type);
    const caps = (pl.capabilities ?? {}) as Record<string, unknown>;
    const rc = Object.fromEntries(Object.entries(runtimeConfig).filter(([k]) => caps[k] === true));
    const stdin = JSON.stringify({ cniVersion: list.cniVersion, name: list.name, ...pl, ...(Object.keys(rc).length > 0 ? { runtimeConfig: rc } : {}), ...(prev !== undefined ? { prevResult: prev } : {}) });
    const bin = cniPath.map((d) => join(d, type)).find((f) => spawnSync('test', ['-x', f]).status === 0);
    const r = bin ? spawnSync(bin, [], { input: stdin, env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', ...env, CNI_COMMAND: cmd, CNI_PATH: cniPath.join(':') }, encoding: 'utf8', timeout: CNI_TIMEOUT_MS + 5000 }) : null;
    if (!r || r.status !== 0) {
      const failure = { ok: false as const, plugin: type, out: r ? (r.stdout || '') + (r.stderr || '') : `plugin ${type} not found in ${cniPath.join(':')}` };
      // keepGoing: the plugins after it in the list still release what they hold
      if (!keepGoing || cmd !== 'DEL') return failure;
      failed ??= failure;
      continue;
    }
    if (cmd === 'ADD') prev = JSON.parse(r.stdout);
  }
  return failed ?? { ok: true, result: prev ?? {} };
}

function saveState(state: string, c: ClusterConfig): void {
  writeJsonAtomic(join(state, 'cluster.json'), c);
}

/** The cluster's etcd writer (etcd.sh wrote STATE/etcd/spec-controller), or null: the directory. */
function etcdWriter(state: string): EtcdRegistryWriter | null {
  const f = join(state, 'etcd', 'spec-controller');
  if (!existsSync(f)) return null;
  const spec = readFileSync(f, 'utf8').trim();
  return new EtcdRegistryWriter(parseEtcdSpec(spec.replace(/^etcd:/, '')));
}

/** Each command's arguments, as the header lists them: the usage line, and the count main() requires ([X] optional). */
export const COMMANDS: Record<string, string> = {
  plan: 'FILE STATE PREFIX',
  sync: 'STATE PREFIX',
  'add-pod': 'STATE PREFIX JSON',
  'remove-pod': 'STATE PREFIX NAME',
  'apply-policy': 'STATE JSON',
  'delete-policy': 'STATE PROJECT NAME',
  'classify-cidrs': 'STATE',
  conflists: 'STATE',
  cni: 'ADD|DEL|CHECK|UNDO STATE PREFIX POD [X]',
};

export function main(argv: string[]): number | Promise<number> {
  const [cmd, ...args] = argv;
  const want = cmd !== undefined && Object.hasOwn(COMMANDS, cmd) ? COMMANDS[cmd] : undefined;
  if (want === undefined || args.length < want.split(' ').filter((w) => !w.startsWith('[')).length) {
    const what = cmd === undefined ? 'no command' : want === undefined ? `unknown command ${JSON.stringify(cmd)}` : `${cmd}: missing argument (${want})`;
    process.stderr.write(`cluster-tool: ${what}\nusage: cluster-tool.js ${Object.entries(COMMANDS).map(([c, a]) => `${c} ${a}`).join(' | ')}\n`);
    return 2;
  }
  try {
    switch (cmd) {
      case 'plan': {
        const [file, state, prefix] = args;
        let raw: unknown;
        try {
          raw = JSON.parse(readFileSync(file, 'utf8'));
        } catch (e) {
          throw new ClusterConfigError(file, [{ field: '(file)', problem: (e as NodeJS.ErrnoException).code ? `cannot read (${(e as NodeJS.ErrnoException).code})` : `not valid JSON: ${(e as Error).message}` }]);
        }
        const c = validateCluster(raw, file);
        if (state) {
          mkdirSync(state, { recursive: true, mode: 0o700 });
          saveState(state, c);
        }
        process.stdout.write(plan(c, prefix).join('\n') + '\n');
        return 0;
      }
      case 'sync': {
        const [state, prefix] = args;
        const c = loadState(state);
        const files = () => {
          writeFileSync(join(state, 'kube.nft'), kubeProxyRules(c, KUBE_TABLE));
          writeFileSync(join(state, 'dns.hosts'), dnsHosts(c));
          process.stdout.write(c.projects.map((p) => p.name).join(' ') + '\n');
          return 0;
        };
        const etcd = etcdWriter(state);
        if (!etcd) {
          syncRegistry(c, new DirectoryRegistry(join(state, 'registry')), join(state, 'psk'), prefix);
          return files();
        }
        syncRegistry(c, etcd, join(state, 'psk'), prefix);
        return etcd
          .flush()
          .then(files, (e) => {
            process.stderr.write(`cluster-tool: etcd: ${(e as Error).message}\n`);
            return 1;
          })
          .finally(() => etcd.close());
      }
      case 'add-pod': {
        const [state, prefix, json] = args;
        const c = loadState(state);
        let pod: unknown;
        try {
          pod = JSON.parse(json);
        } catch (e) {
          throw new ClusterConfigError('add-pod', [{ field: '(pod)', problem: `not valid JSON: ${(e as Error).message}` }]);
        }
        const next = validateCluster({ ...c, pods: [...c.pods, pod] }, 'add-pod');
        saveState(state, next);
        process.stdout.write(podLine(next, prefix, next.pods[next.pods.length - 1]) + '\n');
        return 0;
      }
      case 'remove-pod': {
        const [state, prefix, name] = args;
        const c = loadState(state);
        const pod = c.pods.find((p) => p.name === name);
        if (!pod) throw new ClusterConfigError('remove-pod', [{ field: 'name', problem: `${JSON.stringify(name)} is not a pod of the cluster` }]);
        saveState(state, { ...c, pods: c.pods.filter((p) => p !== pod) });
        process.stdout.write(podNs(prefix, name) + '\n');
        return 0;
      }
      case 'apply-policy': {
        // kubectl apply of one TencPolicy: created or replaced, the whole file checked again
        const [state, json] = args;
        const c = loadState(state);
        let o: any;
        try {
          o = JSON.parse(json);
        } catch (e) {
          throw new ClusterConfigError('apply-policy', [{ field: '(policy)', problem: `not valid JSON: ${(e as Error).message}` }]);
        }
        const others = (c.policies ?? []).filter((p) => !(p.project === o?.metadata?.namespace && p.name === o?.metadata?.name)).map((p) => p.object);
        saveState(state, validateCluster({ ...c, policies: [...others, o] }, 'apply-policy'));
        return 0;
      }
      case 'delete-policy': {
        const [state, project, name] = args;
        const c = loadState(state);
        const left = (c.policies ?? []).filter((p) => !(p.project === project && p.name === name));
        if (left.length === (c.policies ?? []).length) throw new ClusterConfigError('delete-policy', [{ field: 'name', problem: `no TencPolicy ${project}/${name}` }]);
        saveState(state, validateCluster({ ...c, policies: left.map((p) => p.object) }, 'delete-policy'));
        return 0;
      }
      case 'classify-cidrs': {
        const c = loadState(args[0]);
        process.stdout.write(classifyCidrs(c).join(',') + '\n');
        return 0;
      }
      case 'conflists': {
        const [state] = args;
        const c = loadState(state);
        const dir = join(state, 'cni');
        mkdirSync(join(dir, 'bin'), { recursive: true, mode: 0o700 });
        mkdirSync(join(dir, 'ipam'), { recursive: true, mode: 0o700 });
        for (const n of c.nodes) writeFileSync(join(dir, `${n.name}.conflist`), JSON.stringify(conflist(c, state, n.name), null, 2) + '\n', { mode: 0o600 });
        // the plugin tenc itself (STATE/cni/bin/tenc) is cni/tenc-cni.c, built there by cluster.sh up
        return 0;
      }
      case 'cni': {
        const [verb, state, prefix, name, extra] = args;
        if (verb !== 'ADD' && verb !== 'DEL' && verb !== 'CHECK' && verb !== 'UNDO') throw new Error(`cni: ${verb} is not ADD, DEL, CHECK or UNDO`);
        // UNDO: a DEL through every plugin, also past one that fails (cluster.sh after a failed add-pod)
        const command = verb === 'UNDO' ? 'DEL' : verb;
        const c = loadState(state);
        // DEL of a pod already gone from the file: the saved result names its node
        const resultFile = join(state, 'cni', `${name}.result.json`);
        let saved: { node: string; result: unknown } | null = null;
        try {
          saved = JSON.parse(readFileSync(resultFile, 'utf8'));
        } catch {
          saved = null;
        }
        // EXTRA: '{"node","project","address"[,"address6"]}' for a pod outside the cluster file (tests, benches)
        const pod = extra ? (JSON.parse(extra) as { node: string; project: string; address: string; address6?: string }) : c.pods.find((p) => p.name === name);
        const node = pod?.node ?? saved?.node;
        if (!node) throw new Error(`cni: no pod ${name}`);
        const project = pod?.project ?? (saved as { project?: string } | null)?.project ?? '';
        const list = JSON.parse(readFileSync(join(state, 'cni', `${node}.conflist`), 'utf8'));
        const env = {
          CNI_CONTAINERID: `${prefix}-${name}`,
          CNI_NETNS: `/run/netns/${podNs(prefix, name)}`,
          CNI_IFNAME: 'eth0',
          CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=${project};K8S_POD_NAME=${name};K8S_POD_UID=${prefix}-${name}`,
        };
        // the pod's addresses, with the prefix length of the node's range of each family
        const layout = nodeLayouts(c).find((x) => x.name === node);
        const want = pod && command === 'ADD' ? [pod.address, ...(pod.address6 ? [pod.address6] : [])] : [];
        const ips = want.map((a) => `${a}/${((familyOf(a) === familyOf(layout?.gateway ?? '') ? layout?.gateway : layout?.gateway6) ?? (familyOf(a) === 4 ? '/32' : '/128')).split('/')[1]}`);
        const r = runChain(command, list, env, [join(state, 'cni', 'bin'), SYSTEM_CNI_PATH], command === 'CHECK' ? saved?.result : undefined, ips.length > 0 ? { ips } : {}, verb === 'UNDO');
        if (verb === 'UNDO') spawnSync('rm', ['-f', resultFile]);
        if (!r.ok) {
          process.stderr.write(`cni ${verb} ${name}: plugin ${r.plugin} failed: ${r.out.trim()}\n`);
          return 1;
        }
        if (command === 'ADD') writeFileSync(resultFile, JSON.stringify({ node, project, result: r.result }) + '\n', { mode: 0o600 });
        if (command === 'DEL') spawnSync('rm', ['-f', resultFile]);
        if (command === 'ADD') process.stdout.write(JSON.stringify(r.result) + '\n');
        return 0;
      }
    }
    throw new Error(`internal: command ${cmd} in COMMANDS but not run`);
  } catch (e) {
    if (e instanceof ClusterConfigError) {
      process.stderr.write(e.message + '\n');
      return 2;
    }
    process.stderr.write(`cluster-tool: ${(e as Error).message}\n`);
    return 1;
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  void Promise.resolve(main(process.argv.slice(2))).then((code) => (process.exitCode = code));
}
