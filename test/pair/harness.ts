/**
 * Two (or more) devices with reference data planes over one FakeNetwork and one
 * ManualClock. Nothing moves unless the test says so: `run(ms)` advances the clock in
 * steps, ticks every device and delivers the network after each step.
 *
 *      node A                                   node B
 *   tun 10.1.0.1, fd00::1                     tun 10.1.0.2, fd00::2
 *   udp 10.0.0.1:51820  <--- FakeNetwork --->  udp 10.0.0.2:51820
 */
import { Device } from '../../src/device/device.js';
import type { LoggerLike } from '../../src/device/api.js';
import { ReferencePlane } from '../../src/dataplane/reference.js';
import type { Endpoint } from '../../src/device/plane.js';
import { FakeNetwork, FakeTun, type FakeBind } from '../../src/io/fake.js';
import { makeIpPacket } from '../../src/io/ippacket.js';
import { parseIp } from '../../src/peer/allowedips.js';
import { generatePrivateKey, generatePsk, publicKeyFromPrivate } from '../../src/noise/keys.js';
import { ManualClock } from '../../src/noise/timers.js';
import { MESSAGE_TRANSPORT } from '../../src/wire/constants.js';

export interface LogRecord {
  level: 'info' | 'warn' | 'debug';
  obj: object;
  msg?: string;
}

export function captureLogger(records: LogRecord[]): LoggerLike {
  return {
    info: (obj, msg) => records.push({ level: 'info', obj, msg }),
    warn: (obj, msg) => records.push({ level: 'warn', obj, msg }),
    debug: (obj, msg) => records.push({ level: 'debug', obj, msg }),
  };
}

export interface Node {
  name: string;
  privateKey: Uint8Array;
  publicKey: Uint8Array;
  tun: FakeTun;
  bind: FakeBind;
  plane: ReferencePlane;
  device: Device;
  ip4: Uint8Array;
  ip6: Uint8Array;
  endpoint: Endpoint;
  logs: LogRecord[];
}

export interface NodeOptions {
  psk?: Uint8Array;
  underLoadThreshold?: number;
  /** Fixed retransmit jitter in ms (default 0 for A, 97 for B so their retries never collide). */
  jitter?: number;
}

export class World {
  readonly clock = new ManualClock(1_000);
  readonly net = new FakeNetwork();

  node(name: string, n: number, opts: NodeOptions = {}): Node {
    const tun = new FakeTun(1420);
    const endpoint = { address: `10.0.0.${n}`, port: 51820 };
    const bind = this.net.bind(endpoint);
    const plane = new ReferencePlane({ tun, bind, clock: this.clock });
    const privateKey = generatePrivateKey();
    const logs: LogRecord[] = [];
    const device = new Device({
      privateKey,
      plane,
      clock: this.clock,
      psk: opts.psk,
      jitter: () => opts.jitter ?? (n === 1 ? 0 : 97),
      logger: captureLogger(logs),
      underLoadThreshold: opts.underLoadThreshold,
    });
    return {
      name,
      privateKey: Uint8Array.from(privateKey),
      publicKey: publicKeyFromPrivate(privateKey),
      tun,
      bind,
      plane,
      device,
      ip4: parseIp(`10.1.0.${n}`),
      ip6: parseIp(`fd00::${n}`),
      endpoint,
      logs,
    };
  }

  readonly nodes: Node[] = [];

  /** Two nodes that know each other, sharing one project psk. */
  static pair(opts: { pskA?: Uint8Array; pskB?: Uint8Array; b?: NodeOptions; bKnowsAEndpoint?: boolean } = {}): { w: World; a: Node; b: Node; psk: Uint8Array } {
    const w = new World();
    const psk = generatePsk();
    const a = w.node('A', 1, { psk: opts.pskA ?? psk });
    const b = w.node('B', 2, { psk: opts.pskB ?? psk, ...opts.b });
    w.nodes.push(a, b);
    a.device.addPeer({ publicKey: b.publicKey, endpoint: b.endpoint, allowedIps: ['10.1.0.2/32', 'fd00::2/128'] });
    b.device.addPeer({
      publicKey: a.publicKey,
      endpoint: opts.bKnowsAEndpoint === false ? null : a.endpoint,
      allowedIps: ['10.1.0.1/32', 'fd00::1/128'],
    });
    return { w, a, b, psk };
  }

  /** Delivers everything in flight. */
  settle(): void {
    this.net.deliver();
  }

  /** Advances `ms` in steps: after each step every device ticks and the network settles. */
  run(ms: number, step = 100, each?: (now: number) => void): void {
    const end = this.clock.now() + ms;
    while (this.clock.now() < end) {
      this.clock.advance(Math.min(step, end - this.clock.now()));
      each?.(this.clock.now());
      for (const n of this.nodes) n.device.tick();
      this.settle();
    }
  }
}

let seq = 0;
/** A packet from `from` to `to` whose payload names it uniquely. */
export function packet(from: Node, to: Node, v6 = false, payloadText?: string): Uint8Array {
  const payload = new TextEncoder().encode(payloadText ?? `${from.name}->${to.name} #${seq++}`);
  return v6 ? makeIpPacket(from.ip6, to.ip6, payload) : makeIpPacket(from.ip4, to.ip4, payload);
}

export function hex(b: Uint8Array): string {
  return Buffer.from(b).toString('hex');
}

/** Transport datagrams sent from `from` in net.log[start..]. */
export function transportFrom(w: World, from: Node, start = 0): Uint8Array[] {
  return w.net.log
    .slice(start)
    .filter((d) => d.from.address === from.endpoint.address && d.data[0] === MESSAGE_TRANSPORT)
    .map((d) => d.data);
}
