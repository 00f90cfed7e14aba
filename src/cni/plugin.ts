/**
 * `tenc cni`: the CNI plugin. It registers the pod with the node agent over the agent's
 * node socket and answers once the agent says the pod is fail-closed (or that the pod's
 * namespace is not protected). Two ways to be called:
 *
 *  - chained (the default): after the plugin that gives the pod its interface and address
 *    (bridge + host-local, ...) in the node's conflist; the pod's addresses are
 *    prevResult's, and prevResult is printed unchanged;
 *  - unchained ("unchained": true): alone, as Multus calls the plugin of a
 *    NetworkAttachmentDefinition named in the pod's k8s.v1.cni.cncf.io/networks
 *    annotation (OpenShift), after the pod's default network is set up, with that
 *    attachment's CNI_IFNAME (net1) and no prevResult. The request carries no addresses:
 *    the agent reads them from the pod's netns (the default route's interface). The result
 *    is an empty one of the request's cniVersion (no interface, no address: tenc makes
 *    none); a prevResult, if some plugin ran before tenc in that attachment, is printed
 *    unchanged but its addresses are not the pod's and are not read.
 *    Without the opt-in a missing prevResult stays an error (code 7) naming the option:
 *    a chained entry that lost its place in the conflist fails loudly.
 *
 * Configuration: {"type": "tenc", "agentSocket": "/run/tenc/agent.sock", "timeoutMs": 5000,
 * "unchained": false} (all optional; for ADD, CHECK and STATUS every other field is an
 * error naming it; DEL reads it best effort: parseTencConfigForDel).
 *
 *   ADD    {op: "cni-add", ...}   answer {protected}: prevResult (or the empty result) is printed
 *   DEL    {op: "cni-del", ...}   idempotent on the agent's side; needs only the container id
 *   CHECK  {op: "cni-check", ...} the pod's proxy runs and answers (a start in progress
 *                                 is waited for, up to timeoutMs); unchained, prevResult is not read
 *   STATUS {op: "cni-status"}     the agent answers
 *   GC     nothing asked: accepted (cniVersion 1.1.0) and done
 *
 * Agent not reachable, or no answer within timeoutMs: error code 11 (try again later),
 * so the runtime retries the sandbox; the pod's containers never start unprotected.
 * The agent's own refusals keep their meaning: EINVAL is the configuration's fault (7),
 * ENOENT is a container the agent has not registered (3, "unknown container": a CHECK
 * before any ADD reached it, or after its DEL), the rest is code 11 (an unchained ADD
 * whose netns has no default route or no global address yet among them).
 */
import { controlRequest, ControlClientError } from '../control/client.js';
import { CniCode, CniError, type CniPlugin, type CniRequest } from './skeleton.js';

export const DEFAULT_AGENT_SOCKET = '/run/tenc/agent.sock';
export const DEFAULT_TIMEOUT_MS = 5000;
/**
 * The largest timeoutMs. The plugin waits up to timeoutMs + 1 s for the agent, and that
 * wait must end before the runtime stops waiting for the plugin: kubelet's CRI calls time
 * out after --runtime-request-timeout, 2 minutes by default (StopPodSandbox, whose network
 * teardown runs every DEL of the chain, gets exactly that; RunPodSandbox twice that), and
 * libcni kills a plugin whose call's deadline passed, its error lost. 120 s + 1 s did not
 * fit; 100 s + 1 s leaves the chain's other plugins and the runtime 19 s. As cni/tenc-cni.c.
 */
export const MAX_TIMEOUT_MS = 100_000;

/** Fields the spec or the runtime puts in a plugin's configuration. */
const KNOWN = new Set(['cniVersion', 'name', 'type', 'agentSocket', 'timeoutMs', 'unchained', 'prevResult', 'runtimeConfig', 'capabilities', 'args', 'disableCheck', 'disableGC']);

export interface TencCniConfig {
  agentSocket: string;
  timeoutMs: number;
  /** Called alone (Multus' additional attachment): no prevResult needed, the agent reads the pod's addresses. */
  unchained: boolean;
}

/** The configuration as ADD, CHECK and STATUS read it: an unknown field or an invalid value is code 7 naming the field. */
export function parseTencConfig(c: Record<string, unknown>): TencCniConfig {
  return readConfig(c, true);
}

/**
 * The configuration as DEL reads it, best effort (CNI spec, DEL: "plugins should generally
 * complete a DEL action without error even if some resources are missing"): a configuration
 * ADD refuses (a field an upgrade added, an admin's edit, a timeoutMs out of range) must not
 * fail every DEL on the node, or no pod sandbox there is ever removed (the runtime retries
 * the DEL for ever). "type" must still be "tenc"; other fields are ignored, and an invalid
 * agentSocket, timeoutMs or unchained is its default. ADD and CHECK still refuse it, naming
 * the field.
 */
export function parseTencConfigForDel(c: Record<string, unknown>): TencCniConfig {
  return readConfig(c, false);
}

function readConfig(c: Record<string, unknown>, strict: boolean): TencCniConfig {
  if (strict) for (const k of Object.keys(c)) if (!KNOWN.has(k)) throw new CniError(CniCode.invalidNetworkConfig, `${k}: unknown field in the tenc plugin's configuration`);
  if (c.type !== 'tenc') throw new CniError(CniCode.invalidNetworkConfig, `type: ${JSON.stringify(c.type)}, expected "tenc"`);
  // null is a value, not the field left out (as in the C plugin): invalid for each of them
  const socketOk = (v: unknown): v is string => typeof v === 'string' && v.startsWith('/') && !v.includes('\0') && Buffer.byteLength(v) <= 107;
  const timeoutOk = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 100 && v <= MAX_TIMEOUT_MS;
  return {
    agentSocket: optional(c, 'agentSocket', DEFAULT_AGENT_SOCKET, socketOk, 'is not an absolute socket path (at most 107 bytes)', strict),
    timeoutMs: optional(c, 'timeoutMs', DEFAULT_TIMEOUT_MS, timeoutOk, `is not an integer from 100 to ${MAX_TIMEOUT_MS}`, strict),
    unchained: optional(c, 'unchained', false, (v): v is boolean => typeof v === 'boolean', 'is not true or false', strict),
  };
}

/** Field `name` of `c`: `def` when left out; an invalid value is code 7 "NAME: VALUE WHY" (strict) or `def`. */
function optional<T>(c: Record<string, unknown>, name: string, def: T, valid: (v: unknown) => v is T, why: string, strict: boolean): T {
  const v = c[name];
  if (v === undefined) return def;
  if (valid(v)) return v;
  if (strict) throw new CniError(CniCode.invalidNetworkConfig, `${name}: ${JSON.stringify(v)} ${why}`);
  return def;
}

/** What a missing prevResult is told (the C plugin's words too). */
export const MISSING_PREV_RESULT =
  'prevResult: missing (tenc runs chained: put it after the plugin that gives the pod its address; called alone, as Multus calls the plugin of a NetworkAttachmentDefinition, it needs "unchained": true in its configuration)';

/**
 * An unchained ADD's result: no interface, no address (tenc makes none), in the form every
 * supported cniVersion accepts: 0.3.x and 0.4.0 require "interfaces" and "ips" (routes and
 * dns optional), 1.0.0 and 1.1.0 list all five keys.
 */
export function emptyResult(cniVersion: string): Record<string, unknown> {
  return { cniVersion, interfaces: [], ips: [], routes: [], dns: {} };
}

/** An unchained request's prevResult: none, or an object (printed unchanged, not read). */
function unchainedPrevResult(c: Record<string, unknown>): unknown {
  const pr = c.prevResult;
  if (pr !== undefined && (typeof pr !== 'object' || pr === null || Array.isArray(pr))) throw new CniError(CniCode.invalidNetworkConfig, 'prevResult: not an object');
  return pr;
}

/** The pod's addresses from prevResult (0.3.x and 0.4.0 form, whose ips[] also carry "version", and 1.x form: ips[].address "A/LEN"). */
export function prevResultAddresses(c: Record<string, unknown>): string[] {
  const pr = c.prevResult;
  if (pr === undefined) throw new CniError(CniCode.invalidNetworkConfig, MISSING_PREV_RESULT);
  if (typeof pr !== 'object' || pr === null || Array.isArray(pr)) throw new CniError(CniCode.invalidNetworkConfig, 'prevResult: not an object');
  const ips = (pr as Record<string, unknown>).ips;
  if (!Array.isArray(ips) || ips.length === 0) throw new CniError(CniCode.invalidNetworkConfig, 'prevResult.ips: missing or empty (the previous plugin gave the pod no address)');
  const out: string[] = [];
  ips.forEach((ip, i) => {
    const a = (ip as Record<string, unknown> | null)?.address;
    if (typeof a !== 'string') throw new CniError(CniCode.invalidNetworkConfig, `prevResult.ips[${i}].address: missing or not a string`);
    const m = /^([0-9.]+|[0-9a-fA-F:]+)\/(\d{1,3})$/.exec(a);
    if (!m) throw new CniError(CniCode.invalidNetworkConfig, `prevResult.ips[${i}].address: ${JSON.stringify(a)} is not ADDRESS/LEN`);
    out.push(m[1].toLowerCase());
  });
  return out;
}

interface PodArgs {
  podNamespace: string;
  podName: string;
  podUid: string;
}

function podArgs(req: CniRequest): PodArgs {
  const podNamespace = req.args.K8S_POD_NAMESPACE ?? '';
  const podName = req.args.K8S_POD_NAME ?? '';
  if (podNamespace === '' || podName === '') {
    throw new CniError(CniCode.invalidEnv, 'CNI_ARGS: K8S_POD_NAMESPACE and K8S_POD_NAME are required (tenc protects Kubernetes pods)');
  }
  return { podNamespace, podName, podUid: req.args.K8S_POD_UID ?? '' };
}

/** strerror's words for the errors of a connect() to a unix socket (the C plugin prints those). */
const STRERROR: Record<string, string> = { ENOENT: 'No such file or directory', ECONNREFUSED: 'Connection refused', EACCES: 'Permission denied' };

async function ask(cfg: TencCniConfig, req: Record<string, unknown>, timeoutMs: number): Promise<unknown> {
  try {
    return await controlRequest(cfg.agentSocket, req, timeoutMs);
  } catch (e) {
    if (!(e instanceof ControlClientError)) throw e;
    if (e.answered) {
      if (e.code === 'EINVAL') throw new CniError(CniCode.invalidNetworkConfig, `tenc agent: ${e.message}`);
      if (e.code === 'ENOENT') {
        throw new CniError(CniCode.unknownContainer, `tenc agent: ${e.message}`, 'the agent has no registration for this container: no ADD of it reached the agent, or a DEL removed it');
      }
    } else if (e.code === 'ENOENT' || e.code === 'ECONNREFUSED') {
      throw new CniError(CniCode.tryAgainLater, `tenc agent not reachable at ${cfg.agentSocket}`, 'the node agent is down: retry once it runs');
    }
    throw new CniError(CniCode.tryAgainLater, `tenc agent: ${e.message}`, 'the pod could not be protected in time: retry');
  }
}

export const tencPlugin: CniPlugin = {
  async add(req) {
    const cfg = parseTencConfig(req.config);
    if (cfg.unchained) {
      // no addresses asked: the agent reads them from the pod's netns
      const prev = unchainedPrevResult(req.config);
      const pod = podArgs(req);
      await ask(cfg, { op: 'cni-add', containerId: req.containerId, netns: req.netns, ifname: req.ifname, ...pod, timeoutMs: cfg.timeoutMs }, cfg.timeoutMs + 1000);
      return prev ?? emptyResult(req.cniVersion);
    }
    const addresses = prevResultAddresses(req.config);
    const pod = podArgs(req);
    await ask(cfg, { op: 'cni-add', containerId: req.containerId, netns: req.netns, ifname: req.ifname, ...pod, addresses, timeoutMs: cfg.timeoutMs }, cfg.timeoutMs + 1000);
    return req.config.prevResult;
  },
  async del(req) {
    const cfg = parseTencConfigForDel(req.config);
    await ask(cfg, { op: 'cni-del', containerId: req.containerId }, cfg.timeoutMs + 1000);
  },
  async check(req) {
    const cfg = parseTencConfig(req.config);
    // unchained, prevResult is the empty result of ADD (or none): not read
    if (cfg.unchained) unchainedPrevResult(req.config);
    else prevResultAddresses(req.config);
    const pod = podArgs(req);
    await ask(cfg, { op: 'cni-check', containerId: req.containerId, netns: req.netns, ...pod, timeoutMs: cfg.timeoutMs }, cfg.timeoutMs + 1000);
  },
  async status(req) {
    const cfg = parseTencConfig(req.config);
    try {
      await controlRequest(cfg.agentSocket, { op: 'cni-status' }, cfg.timeoutMs);
    } catch (e) {
      const c = e instanceof ControlClientError && !e.answered ? STRERROR[e.code] : undefined;
      const why = c ? `${cfg.agentSocket}: ${c}` : (e as Error).message;
      throw new CniError(CniCode.pluginNotAvailable, `tenc agent not reachable at ${cfg.agentSocket}: ${why}`);
    }
  },
  async gc() {
    // Nothing to collect here: tenc keeps no state on the host, and the agent drops a
    // container's registration (and stops its proxy, cleans its netns) at that
    // container's DEL. Accepting GC keeps libcni's GC of the network list from failing
    // on tenc. The runtime's cni.dev/valid-attachments are not read: an attachment whose
    // DEL never came is not collected by this call.
  },
};
