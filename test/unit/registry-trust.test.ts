/**
 * Who may publish a key (README "Who may publish a key"): a key is believed only from
 * the agent of the pod's own node. Regression tests for three ways around that:
 *
 *  1. two pod records with one name on two nodes (directory: a.json and b.json both
 *     naming pod web): the node is ambiguous, so neither node's key is believed;
 *  2. the directory backend reads a file whose metadata.name is not its file name;
 *  3. an agent that may write peers/<project>/ makes the directory of a node that has
 *     not published yet, and publishes there as that node.
 */
import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DirectoryRegistry, writeJsonAtomic } from '../../src/registry/dir.js';
import { podFromObject } from '../../src/registry/objects.js';
import { readProjectView, trustedPeers, type PeerInfo, type PodInfo } from '../../src/registry/registry.js';

const KEY1 = 'hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=';
const KEY2 = 'BAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=';
const OTHER_UID = 12345;

const podObject = (name: string, node: string, ip: string) => ({ apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: 'alpha' }, spec: { nodeName: node }, status: { podIP: ip } });
const pod = (name: string, node: string): PodInfo => ({ project: 'alpha', name, node, address: '10.0.0.1', addresses: ['10.0.0.1'], labels: {}, netns: null });
const peer = (name: string, node: string, publicKey: string): PeerInfo => ({ project: 'alpha', pod: name, node, publicKey, endpoint: '10.0.0.1:51820' });

let dir: string;
let problems: string[];
let reg: DirectoryRegistry;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'tenc-trust-'));
  problems = [];
  reg = new DirectoryRegistry(dir, { onProblem: (f, why) => problems.push(`${f}: ${why}`) });
  mkdirSync(join(dir, 'pods', 'alpha'), { recursive: true });
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('two records of one pod', () => {
  it('trustedPeers: a pod name listed on two nodes: no key for it is believed, each rejection reported', () => {
    const rejected: string[] = [];
    const pods = [pod('web', 'node1'), pod('db', 'node1'), pod('web', 'node2')];
    const peers = [peer('web', 'node1', KEY1), peer('web', 'node2', KEY2), peer('db', 'node1', KEY1)];
    expect(trustedPeers(pods, peers, (p, why) => rejected.push(`${p.pod}@${p.node}: ${why}`))).toEqual([peer('db', 'node1', KEY1)]);
    expect(rejected).toEqual([
      'web@node1: the pod is listed on more than one node (node1, node2): no key for it is believed',
      'web@node2: the pod is listed on more than one node (node1, node2): no key for it is believed',
    ]);
    // the same pod twice on one node is not ambiguous
    expect(trustedPeers([pod('web', 'node1'), pod('web', 'node1')], [peer('web', 'node1', KEY1)])).toEqual([peer('web', 'node1', KEY1)]);
  });

  it('directory: a.json and b.json both naming pod web (node1, node2): both refused with the file named, node2\'s key not believed', async () => {
    writeJsonAtomic(join(dir, 'pods', 'alpha', 'a.json'), podObject('web', 'node1', '10.128.1.10'));
    writeJsonAtomic(join(dir, 'pods', 'alpha', 'b.json'), podObject('web', 'node2', '10.128.2.10'));
    writeJsonAtomic(join(dir, 'pods', 'alpha', 'db.json'), podObject('db', 'node1', '10.128.1.11'));
    await reg.publishPeer(peer('web', 'node2', KEY2));
    const v = await readProjectView(reg, 'alpha');
    expect(v.pods.map((p) => `${p.name}@${p.node}`)).toEqual(['db@node1']);
    expect(v.peers).toEqual([]);
    expect(problems).toEqual([
      `${join(dir, 'pods', 'alpha', 'a.json')}: metadata.name "web" differs from its file name a: ignored`,
      `${join(dir, 'pods', 'alpha', 'b.json')}: metadata.name "web" differs from its file name b: ignored`,
    ]);
  });

  it('directory: a service whose metadata.name is not its file name is refused too', async () => {
    mkdirSync(join(dir, 'services', 'alpha'), { recursive: true });
    const svc = (name: string) => ({ metadata: { name }, spec: { clusterIP: '10.96.1.10', ports: [{ protocol: 'TCP', port: 80 }], selector: { app: 'web' } } });
    writeJsonAtomic(join(dir, 'services', 'alpha', 'web.json'), svc('web'));
    writeJsonAtomic(join(dir, 'services', 'alpha', 'other.json'), svc('web'));
    expect((await reg.services('alpha')).map((s) => s.name)).toEqual(['web']);
    expect(problems).toEqual([`${join(dir, 'services', 'alpha', 'other.json')}: metadata.name "web" differs from its file name other: ignored`]);
  });
});

describe('directory: peers/ and peers/<project>/ must be root\'s (or the reader\'s) and writable by their owner only', () => {
  beforeEach(async () => {
    writeJsonAtomic(join(dir, 'pods', 'alpha', 'web.json'), podObject('web', 'node1', '10.128.1.10'));
    writeJsonAtomic(join(dir, 'pods', 'alpha', 'db.json'), podObject('db', 'node3', '10.128.3.10'));
    await reg.publishPeer(peer('web', 'node1', KEY1));
  });

  it('the normal case: the directories publishPeer made (mode 755) pass, the key is believed', async () => {
    for (const d of ['peers', 'peers/alpha', 'peers/alpha/node1']) expect((statSync(join(dir, d)).mode & 0o777).toString(8), d).toBe('755');
    expect((await readProjectView(reg, 'alpha')).peers).toEqual([peer('web', 'node1', KEY1)]);
  });

  it('peers/alpha mode 0777: the project\'s peers are refused, naming the directory and its mode', async () => {
    chmodSync(join(dir, 'peers', 'alpha'), 0o777);
    const refused = `registry: peers of project alpha refused: ${join(dir, 'peers', 'alpha')} is writable by group or others (mode 777`;
    await expect(reg.peers('alpha')).rejects.toThrow(refused);
    await expect(readProjectView(reg, 'alpha')).rejects.toThrow(refused);
    chmodSync(join(dir, 'peers', 'alpha'), 0o775);
    await expect(reg.peers('alpha')).rejects.toThrow(/alpha is writable by group or others \(mode 775/);
    chmodSync(join(dir, 'peers', 'alpha'), 0o755);
    chmodSync(join(dir, 'peers'), 0o757);
    await expect(reg.peers('alpha')).rejects.toThrow(`${join(dir, 'peers')} is writable by group or others (mode 757`);
  });

  it('an owner other than root or the reader\'s uid: refused, naming the directory and the uid', async () => {
    chownSync(join(dir, 'peers', 'alpha'), OTHER_UID, OTHER_UID);
    await expect(reg.peers('alpha')).rejects.toThrow(`registry: peers of project alpha refused: ${join(dir, 'peers', 'alpha')} is owned by uid ${OTHER_UID}, not by root`);
    chownSync(join(dir, 'peers', 'alpha'), 0, 0);
    chownSync(join(dir, 'peers'), OTHER_UID, OTHER_UID);
    await expect(reg.peers('alpha')).rejects.toThrow(`${join(dir, 'peers')} is owned by uid ${OTHER_UID}`);
  });

  it('node2\'s agent (its own uid, peers/alpha writable to it) makes peers/alpha/node3 before node3 publishes: refused, not believed as node3\'s key', async () => {
    // what an agent could do when peers/<project> is its own, or open to every agent's uid
    const node3 = join(dir, 'peers', 'alpha', 'node3');
    mkdirSync(node3, { mode: 0o755 });
    writeJsonAtomic(join(node3, 'db.json'), { pod: 'db', publicKey: KEY2, endpoint: '10.128.2.99:51820' });
    chownSync(join(node3, 'db.json'), OTHER_UID, OTHER_UID);
    chownSync(node3, OTHER_UID, OTHER_UID);
    // peers/alpha open to every agent's uid
    chmodSync(join(dir, 'peers', 'alpha'), 0o777);
    await expect(readProjectView(reg, 'alpha')).rejects.toThrow(/peers\/alpha is writable by group or others/);
    // peers/alpha owned by node2's agent
    chmodSync(join(dir, 'peers', 'alpha'), 0o755);
    chownSync(join(dir, 'peers', 'alpha'), OTHER_UID, OTHER_UID);
    await expect(readProjectView(reg, 'alpha')).rejects.toThrow(/peers\/alpha is owned by uid 12345/);
    // with peers/alpha root's, 755, a node directory is one the administrator made for
    // that node's agent (its uid): here node3's, whose files are node3's
    chownSync(join(dir, 'peers', 'alpha'), 0, 0);
    expect((await readProjectView(reg, 'alpha')).peers.map((p) => `${p.pod}@${p.node}`)).toEqual(['web@node1', 'db@node3']);
  });

  it('nothing published yet (no peers/): no peers, no error', async () => {
    rmSync(join(dir, 'peers'), { recursive: true });
    expect(await reg.peers('alpha')).toEqual([]);
  });
});

describe('a hostNetwork pod is not a member of its project', () => {
  it('podFromObject (etcd, directory) leaves it out: its address is its node\'s', () => {
    const pod = (hostNetwork?: boolean) => ({ metadata: { name: 'agent-x' }, spec: { nodeName: 'node1', ...(hostNetwork === undefined ? {} : { hostNetwork }) }, status: { podIP: '10.200.0.2' } });
    expect(podFromObject('alpha', pod(true))).toBeNull();
    expect((podFromObject('alpha', pod(false)) as PodInfo).address).toBe('10.200.0.2');
    expect((podFromObject('alpha', pod()) as PodInfo).name).toBe('agent-x');
  });
});
