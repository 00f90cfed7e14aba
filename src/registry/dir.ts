/**
 * The embedded registry: a directory of JSON files, one object per file, in the
 * shapes the Kubernetes API uses (trimmed), written atomically (temp file + rename)
 * so a reader never sees half a file, and watched (fs.watch, with a periodic rescan
 * as the fallback for missed events).
 *
 *   DIR/projects/<project>.json                  Namespace, annotation tenc.io/psk-file
 *   DIR/pods/<project>/<pod>.json                Pod (spec.nodeName, status.podIP(s), labels)
 *   DIR/services/<project>/<service>.json        Service (spec.clusterIP, ports, selector)
 *   DIR/endpointslices/<project>/<service>.json  EndpointSlice of the service
 *   DIR/peers/<project>/<node>/<pod>.json        what the agent of <node> published for its
 *                                                pod: public key, endpoint (<node>: the node's
 *                                                name, dots allowed: net/names.ts)
 *   DIR/policies/<project>/<name>.json           TencPolicy (src/policy/policy.ts); a file that
 *                                                does not parse is returned as a problem (the
 *                                                agent then refuses the whole set)
 *
 * netns-scripts/cluster.sh writes the first four (the API server's and the
 * controllers' role); agents write peers/. A file that does not parse is skipped
 * (and reported through onProblem), never fatal.
 *
 * Who published a peer is the directory it is in, never a field of the file: a
 * node's agent writes only below peers/<project>/<node>/, and a reader accepts a
 * file there only when its owner is the owner of that directory and the
 * directory is writable by its owner alone (so with one uid per node agent,
 * Unix permissions keep one node from publishing for another's pods; the local
 * cluster runs every agent as root, where the path is still checked against
 * the pod's node by trustedPeers()). That ties a node's name to a uid only when
 * no agent can make a node's directory: peers/ and peers/<project>/ must be owned
 * by root (or the reader's own uid) and writable by their owner alone, or the
 * project's peers are refused (peers() throws, naming the directory). With one
 * uid per node agent the administrator creates each node's directory for its
 * agent; publishPeer creates missing ones (mode 755) only where it may (root).
 *
 * A pod or service file whose metadata.name is not its file name is skipped and
 * reported (two files naming one pod would make its node a matter of read order).
 */
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, watch as fsWatch, writeFileSync, type FSWatcher, type Stats } from 'node:fs';
import { join } from 'node:path';
import type { EndpointsInfo, PeerInfo, PodInfo, PolicyObject, Registry, ServiceInfo, Watch } from './registry.js';
import { endpointsFromObject, peerFromObject, podFromObject, policyFromObject, quote, readObject, serviceFromObject } from './objects.js';
import { DNS_LABEL as NAME, isNodeName, parseNodeName } from '../net/names.js';

export const RESCAN_MS = 1000;

function checkName(what: string, v: string): void {
  if (typeof v !== 'string') throw new TypeError(`${what} must be a string`);
  if (!NAME.test(v) || v.length > 63) throw new RangeError(`${what}: ${JSON.stringify(v)} is not a name (lowercase letters, digits, "-")`);
}

/** A node's name (net/names.ts): one directory of its own below peers/<project>/, never "..". */
function checkNode(v: string): void {
  if (typeof v !== 'string') throw new TypeError('node must be a string');
  const n = parseNodeName(v);
  if (!n.ok) throw new RangeError(`node: ${n.problem}`);
}

/** Writes `data` as JSON to `file` atomically: a temp file in the same directory, then rename. */
export function writeJsonAtomic(file: string, data: unknown): void {
  const tmp = `${file}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`;
  writeFileSync(tmp, JSON.stringify(data, null, 2) + '\n', { mode: 0o644 });
  renameSync(tmp, file);
}

/** Each `.json` file of `dir` that parses, with its name (without `.json`) and path. */
function readJsonDir(dir: string, onProblem: (file: string, why: string) => void): { name: string; file: string; o: unknown }[] {
  let names: string[];
  try {
    names = readdirSync(dir).filter((n) => n.endsWith('.json'));
  } catch {
    return [];
  }
  const out: { name: string; file: string; o: unknown }[] = [];
  for (const n of names.sort()) {
    const file = join(dir, n);
    try {
      out.push({ name: n.slice(0, -'.json'.length), file, o: JSON.parse(readFileSync(file, 'utf8')) });
    } catch (e) {
      // deleted between readdir and read, or not JSON: skip it
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') onProblem(file, (e as Error).message);
    }
  }
  return out;
}

/**
 * Why a directory above the node directories (peers/, peers/<project>/) cannot be
 * trusted, or null. Whoever may create entries there may create the directory of a
 * node that has not published yet (its own uid then owns it, and every reader would
 * take its files as that node's keys), or replace a node's directory: so only root
 * and this reader's own uid may own it, and only its owner may write it.
 */
export function unsafeAbove(st: Stats, self = process.getuid?.() ?? 0): string | null {
  const mode = (st.mode & 0o7777).toString(8).padStart(3, '0');
  if (!st.isDirectory()) return 'is not a directory';
  if (st.uid !== 0 && st.uid !== self) return `is owned by uid ${st.uid}, not by root or this agent's uid ${self} (any other uid could create a node's directory there)`;
  if ((st.mode & 0o022) !== 0) return `is writable by group or others (mode ${mode}; it must be writable by its owner only, e.g. 755: anyone who may write it could create a node's directory there)`;
  return null;
}

type Obj = Record<string, any>;
const str = (v: unknown): v is string => typeof v === 'string';

export interface DirectoryRegistryOptions {
  onProblem?: (file: string, why: string) => void;
  rescanMs?: number;
}

export class DirectoryRegistry implements Registry {
  private readonly onProblem: (file: string, why: string) => void;
  private readonly rescanMs: number;

  constructor(
    readonly dir: string,
    opts: DirectoryRegistryOptions = {},
  ) {
    if (typeof dir !== 'string' || dir === '') throw new TypeError('registry directory must be a non-empty string');
    const report = opts.onProblem ?? (() => {});
    // Each read of a kind rereads every file (the watch and the rescan call them
    // often): each problem of a bad file is reported once, and again only when the
    // file changes (its mtime: fixed and broken again counts as a change). A file
    // with several problems (a Service with two bad ports) is said once per problem,
    // not again at every read.
    const reported = new Map<string, { mtime: number; whys: Set<string> }>();
    this.onProblem = (file, why) => {
      let mtime = 0;
      try {
        mtime = statSync(file).mtimeMs;
      } catch {
        // gone meanwhile: report it by its problem alone
      }
      let r = reported.get(file);
      if (r && r.mtime === mtime && r.whys.has(why)) return;
      if (!r || r.mtime !== mtime) {
        if (!r && reported.size >= 1000) reported.clear(); // deleted files' entries are never read again
        reported.set(file, (r = { mtime, whys: new Set() }));
      }
      if (r.whys.size < 64) r.whys.add(why); // beyond: said again at each read, never lost
      report(file, why);
    };
    this.rescanMs = opts.rescanMs ?? RESCAN_MS;
  }

  private sub(kind: string, project: string): string {
    checkName('project', project);
    return join(this.dir, kind, project);
  }

  /**
   * The projects listed. No projects directory: none. Any other failure to read it
   * throws: "none protected" would let a protected pod's ADD through unprotected
   * (the agent answers a CNI ADD with try-again instead).
   */
  async projects(): Promise<string[]> {
    let names: string[];
    try {
      names = readdirSync(join(this.dir, 'projects'));
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return [];
      throw new Error(`registry ${join(this.dir, 'projects')}: cannot list the projects (${code ?? (e as Error).message})`);
    }
    return names
      .filter((n) => n.endsWith('.json') && NAME.test(n.slice(0, -5)))
      .map((n) => n.slice(0, -5))
      .sort();
  }

  /**
   * The objects of one kind and project. With `nameOf`, an object whose name
   * (metadata.name) is not its file's is refused, as etcd.ts refuses one whose name is
   * not its key's: two files naming one pod would otherwise both be read, and which
   * node the pod is on would depend on which of them a reader kept.
   */
  private parsed<T>(kind: string, project: string, parse: (project: string, o: Obj, report: (why: string) => void) => T | string | null, nameOf?: (v: T) => string): T[] {
    const out: T[] = [];
    for (const { name, file, o } of readJsonDir(this.sub(kind, project), this.onProblem)) {
      const v = readObject(project, o as Obj, parse, (why) => this.onProblem(file, why));
      if (v === null) continue; // left out, or refused (reported)
      if (nameOf && nameOf(v) !== name) {
        this.onProblem(file, `metadata.name ${quote(nameOf(v))} differs from its file name ${name}: ignored`);
        continue;
      }
      out.push(v);
    }
    return out;
  }

  async pods(project: string): Promise<PodInfo[]> {
    return this.parsed('pods', project, podFromObject, (p) => p.name);
  }

  async services(project: string): Promise<ServiceInfo[]> {
    return this.parsed('services', project, serviceFromObject, (s) => s.name);
  }

  async endpoints(project: string): Promise<EndpointsInfo[]> {
    return this.parsed('endpointslices', project, endpointsFromObject);
  }

  async policies(project: string): Promise<PolicyObject[]> {
    const dir = this.sub('policies', project);
    let names: string[];
    try {
      names = readdirSync(dir).filter((n) => n.endsWith('.json'));
    } catch {
      return [];
    }
    const out: PolicyObject[] = [];
    for (const n of names.sort()) {
      const name = n.slice(0, -'.json'.length);
      try {
        out.push(policyFromObject(project, name, JSON.parse(readFileSync(join(dir, n), 'utf8'))));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue; // deleted meanwhile
        out.push({ project, name, object: null, problem: `${join(dir, n)}: ${(e as Error).message}` });
      }
    }
    return out;
  }

  async peers(project: string): Promise<PeerInfo[]> {
    const out: PeerInfo[] = [];
    const root = this.sub('peers', project);
    for (const d of [join(this.dir, 'peers'), root]) {
      let st: Stats;
      try {
        st = statSync(d);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return []; // nothing published yet
        throw new Error(`registry: peers of project ${project} refused: cannot read ${d} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
      }
      const why = unsafeAbove(st);
      if (why) throw new Error(`registry: peers of project ${project} refused: ${d} ${why}`);
    }
    let nodes: string[];
    try {
      nodes = readdirSync(root, { withFileTypes: true })
        .filter((d) => d.isDirectory() && isNodeName(d.name))
        .map((d) => d.name)
        .sort();
    } catch {
      return [];
    }
    for (const node of nodes) {
      const dir = join(root, node);
      let owner: number;
      try {
        const st = statSync(dir);
        if ((st.mode & 0o022) !== 0) {
          this.onProblem(dir, `writable by group or others (mode ${(st.mode & 0o777).toString(8)}): entries ignored`);
          continue;
        }
        owner = st.uid;
      } catch {
        continue;
      }
      // one node's directory that cannot be read (EACCES, removed meanwhile) leaves out
      // that node's entries, never the project's other peers
      let files: string[];
      try {
        files = readdirSync(dir).filter((f) => f.endsWith('.json')).sort();
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code !== 'ENOENT') this.onProblem(dir, `cannot read the directory (${code ?? (e as Error).message}): its entries ignored`);
        continue;
      }
      for (const n of files) {
        const file = join(dir, n);
        let o: Obj;
        try {
          if (statSync(file).uid !== owner) {
            this.onProblem(file, `not owned by the owner of ${dir}: ignored`);
            continue;
          }
          o = JSON.parse(readFileSync(file, 'utf8'));
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'ENOENT') this.onProblem(file, (e as Error).message);
          continue;
        }
        const peer = peerFromObject(project, node, n.slice(0, -'.json'.length), o);
        if (typeof peer === 'string') this.onProblem(file, `not a valid peer: ${peer}: ignored`);
        else out.push(peer);
      }
    }
    return out;
  }

  async pskFile(project: string): Promise<string> {
    checkName('project', project);
    const file = join(this.dir, 'projects', `${project}.json`);
    let o: Obj;
    try {
      o = JSON.parse(readFileSync(file, 'utf8'));
    } catch (e) {
      throw new Error(`registry: project ${project}: cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
    const psk = o?.metadata?.annotations?.['tenc.io/psk-file'];
    if (!str(psk)) throw new Error(`registry: project ${project}: no tenc.io/psk-file annotation in ${file}`);
    return psk;
  }

  async publishPeer(peer: PeerInfo): Promise<void> {
    checkName('pod', peer.pod);
    checkNode(peer.node);
    const dir = join(this.sub('peers', peer.project), peer.node);
    // 0755 for each directory made (peers/, peers/<project>/, the node's): what readers require
    try {
      mkdirSync(dir, { recursive: true, mode: 0o755 });
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'EACCES' && code !== 'EPERM') throw e;
      throw new Error(`registry: cannot create ${dir} (${code}): with one uid per node agent, the administrator creates each node's directory, owned by that agent's uid, mode 755`);
    }
    writeJsonAtomic(join(dir, `${peer.pod}.json`), { pod: peer.pod, publicKey: peer.publicKey, endpoint: peer.endpoint });
  }

  async withdrawPeer(project: string, node: string, pod: string): Promise<void> {
    checkName('pod', pod);
    checkNode(node);
    rmSync(join(this.sub('peers', project), node, `${pod}.json`), { force: true });
  }

  watch(project: string, onChange: () => void): Watch {
    checkName('project', project);
    const watchers: FSWatcher[] = [];
    const base = ['pods', 'services', 'endpointslices', 'peers', 'policies'].map((k) => join(this.dir, k, project));
    const peersDir = base[3];
    const arm = () => {
      let nodeDirs: string[] = [];
      try {
        nodeDirs = readdirSync(peersDir, { withFileTypes: true })
          .filter((e) => e.isDirectory())
          .map((e) => join(peersDir, e.name));
      } catch {
        // not there yet
      }
      for (const d of [...base, ...nodeDirs]) {
        if (watchers.some((w) => (w as FSWatcher & { dir?: string }).dir === d)) continue;
        try {
          mkdirSync(d, { recursive: true, mode: 0o755 }); // peers/ and peers/<project>/: as peers() requires
          const w = fsWatch(d, () => {
            if (d === peersDir) arm(); // a node directory may have appeared
            onChange();
          }) as FSWatcher & { dir?: string };
          w.dir = d;
          w.on('error', () => {
            w.close();
            watchers.splice(watchers.indexOf(w), 1);
          });
          watchers.push(w);
        } catch {
          // the directory cannot be watched now: the rescan covers it
        }
      }
    };
    arm();
    // fallback: events can be missed (directory replaced, some file systems)
    const timer = setInterval(() => {
      arm();
      onChange();
    }, this.rescanMs);
    timer.unref();
    return {
      close: () => {
        clearInterval(timer);
        for (const w of watchers) w.close();
        watchers.length = 0;
      },
    };
  }

  // --- the API server's side (cluster.sh) ---------------------------------------

  /**
   * Replaces every object of one kind and project with `objects` (name -> object):
   * writes each atomically, removes files of objects no longer there. Used by
   * cluster.sh through cluster-tool.ts, like controllers updating the API.
   */
  replaceObjects(kind: 'pods' | 'services' | 'endpointslices' | 'policies', project: string, objects: Map<string, unknown>): void {
    const dir = this.sub(kind, project);
    mkdirSync(dir, { recursive: true });
    for (const [name, o] of objects) {
      checkName(kind, name);
      const file = join(dir, `${name}.json`);
      let same = false;
      try {
        same = readFileSync(file, 'utf8') === JSON.stringify(o, null, 2) + '\n';
      } catch {
        // new
      }
      if (!same) writeJsonAtomic(file, o);
    }
    for (const n of readdirSync(dir)) {
      if (n.endsWith('.json') && !objects.has(n.slice(0, -5))) rmSync(join(dir, n), { force: true });
    }
  }

  putProject(project: string, pskFile: string): void {
    checkName('project', project);
    mkdirSync(join(this.dir, 'projects'), { recursive: true });
    writeJsonAtomic(join(this.dir, 'projects', `${project}.json`), {
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name: project, annotations: { 'tenc.io/psk-file': pskFile } },
    });
  }
}
