/**
 * The parsers and renderers of the iperf bench (bench/iperf.ts): iperf3 -J, ping and
 * ss output, /proc figures, the SVG chart. iperf3 samples are iperf 3.12 output
 * (loopback and namespace runs on this machine), trimmed to the fields the bench reads.
 */
import { EventEmitter } from 'node:events';
import { PassThrough } from 'node:stream';
import { cpus } from 'node:os';
import { describe, it, expect } from 'vitest';
import { parseIperfTcp, parseIperfUdp, parsePingTimes, parsePingTransmitted, percentile, listeningPorts } from '../../bench/lib/traffic.js';
import { cpuSeconds, memory, parseProcStatusMemory, parseProcStatCpu, CpuMeter, MachineCpuMeter } from '../../bench/lib/procs.js';
import { barChart, escapeXml } from '../../bench/lib/svg.js';

const TCP = JSON.stringify({
  start: { version: 'iperf 3.12' },
  end: {
    sum_sent: { start: 0, end: 0.006582, seconds: 0.006582, bytes: 20971520, bits_per_second: 25489541172.895775, retransmits: 3, sender: true },
    sum_received: { start: 0, end: 0.006615, seconds: 0.006615, bytes: 12845056, bits_per_second: 15534459259.259258, sender: true },
  },
});

const UDP = JSON.stringify({
  end: {
    sum: { seconds: 1.000155, bytes: 7013120, jitter_ms: 0.0077, lost_packets: 31893, packets: 109580, lost_percent: 29.1, sender: true },
    sum_sent: { seconds: 1.000079, bytes: 7013120, lost_packets: 0, packets: 109580, lost_percent: 0, sender: true },
    sum_received: { seconds: 1.000155, bytes: 4971968, lost_packets: 31893, packets: 109580, lost_percent: 29.10476364300055, sender: false },
  },
});

const REFUSED = '{"start":{"connected":[],"version":"iperf 3.12"},"intervals":[],"end":{},"error":"unable to connect to server: Connection refused"}';

describe('iperf3 JSON', () => {
  it('TCP: sender bytes and rates, receiver rate, retransmits', () => {
    expect(parseIperfTcp(TCP)).toEqual({ sentBytes: 20971520, senderBps: 25489541172.895775, receiverBps: 15534459259.259258, retransmits: 3 });
  });

  it('UDP: received = expected - lost (64-byte payloads: 4971968 / 64 = 77687 packets)', () => {
    const r = parseIperfUdp(UDP);
    expect(r.packets).toBe(109580);
    expect(r.lostPackets).toBe(31893);
    expect(r.receivedPps * 1.000155).toBeCloseTo(4971968 / 64, 6);
    expect(r.sentPps * 1.000079).toBeCloseTo(109580, 6);
    expect(r.lossPercent).toBeCloseTo(29.10476, 4);
  });

  it("iperf3's own error becomes the message; non-JSON and missing sections are errors", () => {
    expect(() => parseIperfTcp(REFUSED)).toThrow('iperf3: unable to connect to server: Connection refused');
    expect(() => parseIperfTcp('iperf3: error - the server is busy')).toThrow(/printed no JSON: iperf3: error - the server is busy/);
    expect(() => parseIperfTcp('{"start":{}}')).toThrow(/no "end"/);
    expect(() => parseIperfTcp(UDP.replace('"sum_received"', '"x"').replace('"sum_sent"', '"y"'))).toThrow(/sum_sent/);
    expect(() => parseIperfUdp('{"end":{"sum_sent":{"packets":"many","seconds":1},"sum_received":{"packets":1,"lost_packets":0,"seconds":1}}}')).toThrow(
      /sum_sent.packets is not a number/,
    );
  });
});

describe('ping and ss output', () => {
  it('RTTs of the replies only, percentiles by nearest rank', () => {
    const out = [
      'PING 10.77.0.2 (10.77.0.2) 56(84) bytes of data.',
      '64 bytes from 10.77.0.2: icmp_seq=1 ttl=64 time=52.4 ms',
      '64 bytes from 10.77.0.2: icmp_seq=2 ttl=64 time=0.377 ms',
      '64 bytes from 10.77.0.2: icmp_seq=4 ttl=64 time=0.337 ms',
      '--- 10.77.0.2 ping statistics ---',
      'rtt min/avg/max/mdev = 0.337/17.702/52.394/24.530 ms',
    ].join('\n');
    expect(parsePingTimes(out)).toEqual([52.4, 0.377, 0.337]);
    expect(parsePingTransmitted(out)).toBeUndefined();
    // the loss is over the requests sent: a deadline that stops ping early is not loss
    expect(parsePingTransmitted(`${out}\n961 packets transmitted, 958 received, 0.312175% packet loss, time 15008ms`)).toBe(961);
    const v = Array.from({ length: 200 }, (_, i) => 200 - i); // 200..1, unsorted
    expect(percentile(v, 50)).toBe(100);
    expect(percentile(v, 99)).toBe(198);
    expect(percentile(v, 100)).toBe(200);
    expect(percentile([7], 99)).toBe(7);
    expect(percentile([], 50)).toBeUndefined();
  });

  it('listening ports from ss -Hltn, IPv4 and IPv6', () => {
    const ss = ['LISTEN 0      4096         0.0.0.0:5201      0.0.0.0:*', 'LISTEN 0      4096               *:5202            *:*', 'LISTEN 0 128 [::]:5203 [::]:*', ''].join('\n');
    expect([...listeningPorts(ss)].sort()).toEqual([5201, 5202, 5203]);
  });
});

describe('/proc figures', () => {
  it('VmRSS and VmHWM in bytes; missing fields give undefined', () => {
    expect(parseProcStatusMemory('Name:\tnode\nVmHWM:\t  176540 kB\nVmRSS:\t  163000 kB\n')).toEqual({ rss: 163000 * 1024, hwm: 176540 * 1024 });
    expect(parseProcStatusMemory('Name:\tkthreadd\n')).toBeUndefined();
  });

  it('CPU seconds of this process grow with work; a missing pid is undefined', () => {
    const before = cpuSeconds(process.pid)!;
    const meter = new CpuMeter([process.pid]);
    // burn 100 ms of CPU (however long that takes on a shared machine)
    const c0 = process.cpuUsage();
    let x = 0;
    while (process.cpuUsage(c0).user + process.cpuUsage(c0).system < 100_000) x += Math.sqrt(x + 1);
    expect(x).toBeGreaterThan(0);
    expect(cpuSeconds(process.pid)! - before).toBeGreaterThanOrEqual(0.08); // 10 ms ticks
    expect(meter.percent()!).toBeGreaterThan(0);
    expect(new CpuMeter([]).percent()).toBeUndefined();
    expect(cpuSeconds(2 ** 22 + 12345)).toBeUndefined();
    expect(memory(process.pid)!.rss).toBeGreaterThan(1 << 20);
  });

  it('machine CPU: busy and total jiffies of the first /proc/stat line; malformed lines are undefined', () => {
    const stat = 'cpu  100 5 50 800 10 2 3 1 7 0\ncpu0 50 2 25 400 5 1 2 0 0 0\nintr 1 2\n';
    // busy = user + nice + system + irq + softirq + steal; total adds idle and iowait
    expect(parseProcStatCpu(stat)).toEqual({ busy: 161, total: 971 });
    expect(parseProcStatCpu('cpu0 1 2 3 4 5 6 7 8\n')).toBeUndefined(); // no aggregate line
    expect(parseProcStatCpu('cpu  1 2 3\n')).toBeUndefined();
    expect(parseProcStatCpu('cpu  1 2 3 4 5 6 x 8\n')).toBeUndefined();
    // burn 100 ms: the machine was busy for at least part of it
    const meter = new MachineCpuMeter();
    const c0 = process.cpuUsage();
    let x = 0;
    while (process.cpuUsage(c0).user + process.cpuUsage(c0).system < 100_000) x += Math.sqrt(x + 1);
    expect(x).toBeGreaterThan(0);
    const pct = meter.percent()!;
    expect(pct).toBeGreaterThan(0);
    expect(pct).toBeLessThanOrEqual(cpus().length * 100 + 1e-9);
  });
});

describe('SVG chart', () => {
  it('escapes text, scales bars to the largest value, shows failures as text', () => {
    expect(escapeXml(`a<b>&"c'`)).toBe('a&lt;b&gt;&amp;&quot;c&apos;');
    const svg = barChart({
      title: 'x < y',
      series: [
        { name: 'plain', color: '#999' },
        { name: 'tenc', color: '#e15759' },
        { name: 'wg', color: '#4e79a7' },
      ],
      panels: [{ title: 'TCP', values: [10, 5, 'failed'], format: (v) => v.toFixed(1), notes: [undefined, '(0.50x plain)', undefined] }],
    });
    expect(svg).toContain('<text x="10" y="28" font-size="16" font-weight="bold">x &lt; y</text>');
    const widths = [...svg.matchAll(/<rect x="150" y="\d+" width="(\d+)"/g)].map((m) => Number(m[1]));
    expect(widths).toEqual([480, 240]);
    expect(svg).toMatch(/>10\.0<\/text>/);
    expect(svg).toContain('>5.0<tspan fill="#777"> (0.50x plain)</tspan></text>');
    expect(svg).toMatch(/fill="#b00">failed<\/text>/);
    expect(svg.startsWith('<?xml')).toBe(true);
    expect(svg.trim().endsWith('</svg>')).toBe(true);
  });
});

describe('rounds', () => {
  it('medians over the rounds that measured; a failed round is a note; a test failed in every ok round stays failed', async () => {
    const { combine } = await import('../../bench/iperf.js');
    const base = { id: 'tenc', label: 'tenc', notes: [] as string[] };
    const r = combine([
      { ...base, status: 'ok', testFailures: { udp: 'x' }, metrics: { 'tcp1.gbps': 3, 'ping.p50': 0.2 } },
      { ...base, status: 'failed', error: 'no ping reply', testFailures: {}, metrics: {} },
      { ...base, status: 'ok', testFailures: { udp: 'y' }, metrics: { 'tcp1.gbps': 1 } },
      { ...base, status: 'ok', testFailures: {}, metrics: { 'tcp1.gbps': 2, 'ping.p50': 0.4, 'udp.loss': 5 } },
    ]);
    expect(r.status).toBe('ok');
    expect(r.metrics['tcp1.gbps']).toBe(2);
    expect(r.metrics['ping.p50']).toBeCloseTo(0.3, 12);
    expect(r.metrics['udp.loss']).toBe(5);
    expect(r.testFailures).toEqual({});
    expect(r.notes).toEqual(['round 2 failed: no ping reply']);
    expect(r.rounds).toHaveLength(4);
    const f = combine([
      { ...base, status: 'failed', error: 'a', testFailures: {}, metrics: {} },
      { ...base, status: 'failed', error: 'b', testFailures: {}, metrics: {} },
    ]);
    expect(f.status).toBe('failed');
    expect(f.error).toBe('round 1: a; round 2: b');
    const one = { ...base, status: 'ok' as const, testFailures: {}, metrics: { 'tcp1.gbps': 7 } };
    expect(combine([one])).toBe(one);
  });
});

describe('flags', () => {
  it('--only that leaves out the column of --tenc-env/--peers is refused before anything runs', async () => {
    const { run } = await import('../../bench/iperf.js');
    const lines: string[] = [];
    const ctx = (f: [string, string][]) => ({ flags: new Map(f), log: (l: string) => lines.push(l) });
    await expect(run(ctx([['only', 'tenc'], ['tenc-env', 'TENC_INLINE_TX=0']]))).rejects.toThrow(/--only leaves out tenc-env/);
    await expect(run(ctx([['only', 'plain,tenc'], ['peers', '10']]))).rejects.toThrow(/--only leaves out tenc-peers\b/);
    await expect(run(ctx([['only', 'tenc'], ['pod-host', 'true']]))).rejects.toThrow(/--only leaves out tenc-host\b/);
    await expect(run(ctx([['only', 'tenc'], ['tenc-env-host', 'true']]))).rejects.toThrow(/--tenc-env-host .* give --tenc-env too/);
  });

  it('--pod-host adds the column tenc-host (both pods in one pod host), after tenc; without it there is none', async () => {
    const { allTunnels } = await import('../../bench/lib/tunnels.js');
    const ids = allTunnels({ podHost: true }).map((t) => t.id);
    expect(ids).toContain('tenc-host');
    expect(ids.indexOf('tenc-host')).toBeGreaterThan(ids.indexOf('tenc'));
    expect(allTunnels().map((t) => t.id)).not.toContain('tenc-host');
    // --tenc-env-host: the tenc-env column in a pod host (its description says so once it runs)
    const envHost = allTunnels({ tencEnv: { TENC_SIBLING_POLL: '0' }, tencEnvHost: true }).find((t) => t.id === 'tenc-env');
    expect((envHost as unknown as { opts: { podHost?: boolean } }).opts.podHost).toBe(true);
  });
});

describe('the tenc-env column names the switch values its engine runs', () => {
  it('maps each switch to its status key and notes the engine value', async () => {
    const { engineSwitchKey, envNote } = await import('../../bench/lib/tunnels.js');
    expect(['TENC_BUSY_POLL_US', 'TENC_SIBLING_POLL', 'TENC_TX_BATCH_KB', 'TENC_DATA_EPOLL', 'TENC_GRO_IOV'].map(engineSwitchKey)).toEqual([
      'busyPollUs', 'siblingPoll', 'txBatchKb', 'dataEpoll', 'groIov',
    ]);
    const sw = { busyPollUs: 2000, siblingPoll: 0 };
    expect(envNote('TENC_BUSY_POLL_US', '5000', sw)).toBe('TENC_BUSY_POLL_US=5000 (engine: busyPollUs 2000)');
    expect(envNote('TENC_SIBLING_POLL', '0', sw)).toBe('TENC_SIBLING_POLL=0 (engine: siblingPoll 0)');
    // not an engine switch (TENC_AEAD is read elsewhere), or an older pod without `switches`: as given
    expect(envNote('TENC_AEAD', 'evp', sw)).toBe('TENC_AEAD=evp');
    expect(envNote('TENC_BUSY_POLL_US', '0', undefined)).toBe('TENC_BUSY_POLL_US=0');
    // a name that maps to an inherited key (valueOf) is no switch
    expect(envNote('TENC_VALUE_OF', '1', sw)).toBe('TENC_VALUE_OF=1');
  });
});

describe("a pod host's stdout lines (tenc-host)", () => {
  const fakeChild = () => {
    const child = new EventEmitter() as EventEmitter & { stdout: PassThrough; exitCode: number | null; signalCode: string | null };
    child.stdout = new PassThrough();
    child.exitCode = null;
    child.signalCode = null;
    return child;
  };
  /** A fake pod host and the bench's reader of its stdout lines. */
  const host = async () => {
    const { stdoutLines } = await import('../../bench/lib/tunnels.js');
    const child = fakeChild();
    return { child, next: stdoutLines(child as never) };
  };

  it('each line goes to the waiter that takes it, or is kept for a later one; a line split across chunks is whole', async () => {
    const { child, next } = await host();
    const ready = next((l) => l === 'host ready', 1000, 'ready');
    child.stdout.write('{"pod":"/b.json","publicKey":"KB"}\nhost re');
    child.stdout.write('ady\n');
    expect(await ready).toBe('host ready');
    // the line for b came before anybody asked for it
    expect(await next((l) => l.includes('/b.json'), 1000, 'b')).toBe('{"pod":"/b.json","publicKey":"KB"}');
    const a = next((l) => l.includes('/a.json'), 1000, 'a');
    child.stdout.write('{"pod":"/a.json","exited":2,"error":"bad netns"}\n');
    expect(await a).toContain('"exited":2');
  });

  it('a character split across chunks is whole, and a last line without its newline counts at the end', async () => {
    const { child, next } = await host();
    const euro = Buffer.from('{"error":"bad \u20ac"}\n');
    child.stdout.write(euro.subarray(0, 15)); // inside the three bytes of the euro sign
    child.stdout.write(euro.subarray(15));
    expect(await next((l) => l.startsWith('{"error"'), 1000, 'error')).toBe('{"error":"bad \u20ac"}');
    const last = next((l) => l === 'host ready', 1000, 'ready');
    child.stdout.end('host ready');
    expect(await last).toBe('host ready');
  });

  it('a wait ends with an error naming what was awaited when nothing comes in time or the host exits', async () => {
    const { child, next } = await host();
    await expect(next((l) => l === 'host ready', 50, 'tenc pod --host: its ready line')).rejects.toThrow(/its ready line: nothing within 50 ms/);
    const p = next((l) => l === 'host ready', 5000, 'tenc pod --host: its ready line');
    child.exitCode = 1;
    child.emit('exit', 1, null); // its last lines may still come: not the end yet
    child.stdout.write('{"pod":"/late.json","exited":1}\n');
    child.emit('close', 1, null);
    await expect(p).rejects.toThrow(/its ready line: the pod host exited \(1\)/);
    // the line that came after the exit event was kept, and a wait after the close fails at once
    expect(await next((l) => l.includes('/late.json'), 1000, 'late')).toContain('"exited":1');
    await expect(next((l) => l === 'host ready', 5000, 'again')).rejects.toThrow(/again: the pod host exited \(1\)/);
  });
});
