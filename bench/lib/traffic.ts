/**
 * Traffic from one network namespace (the client pod) to another (the server pod) for
 * bench/iperf.ts, with the tools' output parsed:
 *   - iperf3 TCP and UDP (`-J` JSON); several clients run as separate iperf3 client
 *     processes, each against its own one-off server (`iperf3 -s -1`) on its own port
 *   - ping RTTs from the per-packet `time=` lines
 * Parsers are pure functions so they can be tested on captured output.
 */
import type { ChildProcess } from 'node:child_process';
import { describeFailure, stopChild, type Children } from './procs.js';

/** One iperf3 TCP client's result (`end.sum_sent` / `end.sum_received`). */
export interface TcpResult {
  /** Bytes the client sent. */
  sentBytes: number;
  /** Client-side rate, bit/s. */
  senderBps: number;
  /** Server-side (received) rate, bit/s. */
  receiverBps: number;
  retransmits: number;
}

/** One iperf3 UDP client's result. */
export interface UdpResult {
  packets: number;
  lostPackets: number;
  seconds: number;
  sentPps: number;
  receivedPps: number;
  lossPercent: number;
}

function parseIperfJson(text: string): Record<string, any> {
  let doc: Record<string, any>;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new Error(`iperf3 printed no JSON: ${text.trim().slice(0, 200) || '(nothing)'}`);
  }
  if (typeof doc.error === 'string') throw new Error(`iperf3: ${doc.error}`);
  if (typeof doc.end !== 'object' || doc.end === null) throw new Error('iperf3 JSON has no "end" section');
  return doc;
}

const num = (x: unknown, what: string): number => {
  if (typeof x !== 'number' || !Number.isFinite(x)) throw new Error(`iperf3 JSON: ${what} is not a number`);
  return x;
};

/** Parses `iperf3 -c ... -J` output of a TCP test; throws iperf3's own error message if it failed. */
export function parseIperfTcp(text: string): TcpResult {
  const end = parseIperfJson(text).end;
  const sent = end.sum_sent;
  const recv = end.sum_received;
  if (!sent || !recv) throw new Error('iperf3 JSON: no sum_sent/sum_received (not a TCP test?)');
  return {
    sentBytes: num(sent.bytes, 'sum_sent.bytes'),
    senderBps: num(sent.bits_per_second, 'sum_sent.bits_per_second'),
    receiverBps: num(recv.bits_per_second, 'sum_received.bits_per_second'),
    retransmits: typeof sent.retransmits === 'number' ? sent.retransmits : 0,
  };
}

/**
 * Parses `iperf3 -u -c ... -J` output. In iperf3 3.12 `sum_received.packets` is the
 * number of packets the server expected (highest sequence) and `lost_packets` the gap,
 * so received = packets - lost.
 */
export function parseIperfUdp(text: string): UdpResult {
  const end = parseIperfJson(text).end;
  const sent = end.sum_sent ?? end.sum;
  const recv = end.sum_received ?? end.sum;
  if (!sent || !recv) throw new Error('iperf3 JSON: no UDP sums');
  const packets = num(sent.packets, 'sum_sent.packets');
  const lost = num(recv.lost_packets, 'sum_received.lost_packets');
  const expected = num(recv.packets, 'sum_received.packets');
  const seconds = num(sent.seconds, 'sum_sent.seconds');
  const rxSeconds = num(recv.seconds, 'sum_received.seconds') || seconds;
  if (seconds <= 0) throw new Error('iperf3 JSON: test lasted 0 s');
  return {
    packets,
    lostPackets: lost,
    seconds,
    sentPps: packets / seconds,
    receivedPps: Math.max(0, expected - lost) / rxSeconds,
    lossPercent: packets > 0 ? (100 * Math.max(0, packets - (expected - lost))) / packets : 0,
  };
}

/** Round-trip times (ms) of the replies in ping's output, in order. */
export function parsePingTimes(text: string): number[] {
  const out: number[] = [];
  for (const m of text.matchAll(/ time=([0-9.]+) ms/g)) out.push(Number(m[1]));
  return out;
}

/** The echo requests ping says it sent ("N packets transmitted"); undefined when it did not say. */
export function parsePingTransmitted(text: string): number | undefined {
  const m = /^(\d+) packets transmitted/m.exec(text);
  return m ? Number(m[1]) : undefined;
}

/** Nearest-rank percentile (p in 0..100) of unsorted values; undefined for none. */
export function percentile(values: number[], p: number): number | undefined {
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((x, y) => x - y);
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[Math.min(rank, sorted.length) - 1];
}

export interface PingResult {
  sent: number;
  times: number[];
  p50: number | undefined;
  p99: number | undefined;
  lossPercent: number;
}

/** Local TCP ports listening in the output of `ss -Hltn`. */
export function listeningPorts(ssOutput: string): Set<number> {
  const ports = new Set<number>();
  for (const line of ssOutput.split('\n')) {
    const local = line.trim().split(/\s+/)[3];
    if (!local) continue;
    const port = Number(local.slice(local.lastIndexOf(':') + 1));
    if (Number.isInteger(port)) ports.add(port);
  }
  return ports;
}

/** Runs the measurements from `client` namespace to `server` namespace. */
export class Traffic {
  constructor(
    private readonly children: Children,
    private readonly client: string,
    private readonly server: string,
    private readonly portBase = 5201,
  ) {}

  /**
   * `count` pings every `interval` seconds; RTT percentiles over the replies, loss over
   * the requests ping sent. ping's deadline is 3 intervals per ping (a 10 ms interval
   * takes 16 ms here: the VM's timers); requests it did not send before the deadline
   * are not losses (`sent` says how many went out).
   */
  async ping(dst: string, count: number, interval = 0.01): Promise<PingResult> {
    const deadline = Math.ceil(count * interval * 3 + 5);
    const r = await this.children.run('ip', ['netns', 'exec', this.client, 'ping', '-n', '-c', String(count), '-i', String(interval), '-w', String(deadline), dst], {
      timeoutMs: (deadline + 5) * 1000,
    });
    const times = parsePingTimes(r.stdout);
    if (times.length === 0) throw new Error(`ping ${dst}: no reply (${describeFailure(r)})`);
    const sent = parsePingTransmitted(r.stdout) ?? count;
    return {
      sent,
      times,
      p50: percentile(times, 50),
      p99: percentile(times, 99),
      lossPercent: (100 * Math.max(0, sent - times.length)) / sent,
    };
  }

  /** True once one ping gets an answer within `ms` (the tunnel's handshake is done). */
  async reachable(dst: string, ms: number): Promise<boolean> {
    const end = performance.now() + ms;
    while (performance.now() < end) {
      const r = await this.children.run('ip', ['netns', 'exec', this.client, 'ping', '-n', '-c', '1', '-W', '1', dst], { timeoutMs: 3000 });
      if (r.code === 0) return true;
    }
    return false;
  }

  /**
   * Runs `clients` iperf3 clients at once, each against its own one-off server, for
   * `seconds`; returns each client's JSON output. `args` are extra client options.
   */
  async iperf(dst: string, clients: number, seconds: number, args: string[], abort?: () => string | undefined): Promise<string[]> {
    const ports = Array.from({ length: clients }, (_, i) => this.portBase + i);
    const servers = ports.map((p) => this.children.spawn('ip', ['netns', 'exec', this.server, 'iperf3', '-s', '-1', '-p', String(p)]));
    const serverErr = servers.map((s) => {
      let e = '';
      s.stdout!.resume();
      s.stderr!.setEncoding('utf8').on('data', (d: string) => (e = (e + d).slice(-2000)));
      return () => e;
    });
    try {
      await this.waitListening(ports, servers, serverErr, 5000);
      const runs = ports.map((p) =>
        this.children.run(
          'ip',
          ['netns', 'exec', this.client, 'iperf3', '-c', dst, '-p', String(p), '-t', String(seconds), '-J', '--connect-timeout', '3000', ...args],
          { timeoutMs: (seconds + 20) * 1000 },
        ),
      );
      // a dead tunnel would leave the clients waiting for their timeout: poll `abort`
      let poll: NodeJS.Timeout | undefined;
      const aborted = new Promise<never>((_, reject) => {
        poll = setInterval(() => {
          const why = abort?.();
          if (why) reject(new Error(why));
        }, 250);
      });
      let results: Awaited<(typeof runs)[number]>[];
      try {
        results = await Promise.race([Promise.all(runs), aborted]);
      } finally {
        clearInterval(poll);
      }
      return results.map((r) => {
        if (r.code !== 0 && !r.stdout.trim().startsWith('{')) throw new Error(`iperf3 client: ${describeFailure(r)}`);
        return r.stdout;
      });
    } finally {
      await Promise.all(servers.map((s) => stopChild(s, 'SIGTERM', 2000)));
    }
  }

  private async waitListening(ports: number[], servers: ChildProcess[], err: (() => string)[], ms: number): Promise<void> {
    const end = performance.now() + ms;
    for (;;) {
      const dead = servers.findIndex((s) => s.exitCode !== null || s.signalCode !== null);
      if (dead >= 0) throw new Error(`iperf3 server on port ${ports[dead]} exited: ${err[dead]().trim() || `code ${servers[dead].exitCode}`}`);
      const r = await this.children.run('ip', ['netns', 'exec', this.server, 'ss', '-Hltn'], { timeoutMs: 5000 });
      const up = listeningPorts(r.stdout);
      if (ports.every((p) => up.has(p))) return;
      if (performance.now() > end) throw new Error(`iperf3 servers not listening after ${ms} ms`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}
