/**
 * Child processes for the namespace benchmarks (bench/iperf.ts): every process is
 * tracked so an interrupt (SIGINT) can stop all of them, and commands run with a
 * timeout. Also CPU time and memory of running processes from /proc.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

export interface RunOptions {
  /** Killed (SIGKILL) after this many milliseconds; default 30 s. */
  timeoutMs?: number;
  /** Written to stdin, which is then closed. */
  input?: string;
  /** Extra environment variables. */
  env?: Record<string, string>;
}

/** Keeps at most `max` characters of the end of a growing text. */
function appendTail(text: string, more: string, max = 64 * 1024): string {
  const t = text + more;
  return t.length > max ? t.slice(t.length - max) : t;
}

/** The child processes of one bench run. */
export class Children {
  private readonly live = new Set<ChildProcess>();

  /** Starts a long-running process; its stdio is piped (the caller reads or ignores it). */
  spawn(cmd: string, args: string[], env?: Record<string, string>, opts: { stdin?: boolean } = {}): ChildProcess {
    const child = spawn(cmd, args, { stdio: [opts.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'], env: env ? { ...process.env, ...env } : undefined });
    this.live.add(child);
    child.once('exit', () => this.live.delete(child));
    child.once('error', () => this.live.delete(child));
    return child;
  }

  /** Runs a command to its end; never rejects (a spawn error is code null with the message on stderr). */
  run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
    return new Promise((resolve) => {
      const child = spawn(cmd, args, {
        stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
        env: opts.env ? { ...process.env, ...opts.env } : undefined,
      });
      this.live.add(child);
      let stdout = '';
      let stderr = '';
      let timedOut = false;
      child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout = appendTail(stdout, d, 16 * 1024 * 1024)));
      child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr = appendTail(stderr, d)));
      if (opts.input !== undefined) child.stdin!.end(opts.input);
      const timer = setTimeout(() => {
        timedOut = true;
        child.kill('SIGKILL');
      }, opts.timeoutMs ?? 30_000);
      const finish = (code: number | null, signal: NodeJS.Signals | null, err?: Error): void => {
        clearTimeout(timer);
        this.live.delete(child);
        resolve({ code, signal, stdout, stderr: err ? `${cmd}: ${err.message}` : stderr, timedOut });
      };
      child.once('error', (err) => finish(null, null, err));
      child.once('close', (code, signal) => finish(code, signal));
    });
  }

  /** Runs a command and returns its stdout; throws with its stderr (first lines) on failure. */
  async check(cmd: string, args: string[], opts: RunOptions = {}): Promise<string> {
    const r = await this.run(cmd, args, opts);
    if (r.code !== 0) throw new Error(`${[cmd, ...args].join(' ')}: ${describeFailure(r)}`);
    return r.stdout;
  }

  /** Signals every process still running. */
  killAll(signal: NodeJS.Signals): void {
    for (const c of this.live) c.kill(signal);
  }

  get count(): number {
    return this.live.size;
  }
}

/** "exit 1: <first lines of stderr>" (or timed out / killed by SIGNAL). */
export function describeFailure(r: RunResult): string {
  const why = r.timedOut ? 'timed out' : r.signal ? `killed by ${r.signal}` : `exit ${r.code}`;
  const err = r.stderr.trim().split('\n').slice(0, 3).join(' / ');
  return err ? `${why}: ${err}` : why;
}

/** Resolves with the exit code when the process ends, or null after `ms` if it has not. */
export function waitExit(child: ChildProcess, ms: number): Promise<number | null | 'running'> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve('running'), ms);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve(code);
    });
  });
}

/** Stops a process: `signal`, up to `graceMs`, then SIGKILL. Resolves with its exit code (null if killed). */
export async function stopChild(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM', graceMs = 5000): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
  child.kill(signal);
  const code = await waitExit(child, graceMs);
  if (code !== 'running') return code;
  child.kill('SIGKILL');
  const last = await waitExit(child, 2000);
  return last === 'running' ? null : last;
}

let clockTicks: number | undefined;

/** Clock ticks per second of /proc/PID/stat times (getconf CLK_TCK; 100 on Linux). */
export function clkTck(): number {
  if (clockTicks === undefined) {
    const r = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
    const n = Number(r.stdout?.trim());
    clockTicks = Number.isInteger(n) && n > 0 ? n : 100;
  }
  return clockTicks;
}

/** utime + stime of a whole process (every thread), in seconds; undefined once it is gone. */
export function cpuSeconds(pid: number): number | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // comm may hold spaces and parentheses: fields start after the last ')'
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state); utime and stime are fields 14 and 15
  const utime = Number(rest[11]);
  const stime = Number(rest[12]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) return undefined;
  return (utime + stime) / clkTck();
}

export interface Memory {
  /** Resident set size now, bytes. */
  rss: number;
  /** Peak resident set size (VmHWM), bytes. */
  hwm: number;
}

/** VmRSS and VmHWM of a process; undefined once it is gone. */
export function memory(pid: number): Memory | undefined {
  let status: string;
  try {
    status = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return undefined;
  }
  return parseProcStatusMemory(status);
}

/** VmRSS and VmHWM (kB in the file) from the text of /proc/PID/status. */
export function parseProcStatusMemory(status: string): Memory | undefined {
  const kb = (name: string): number | undefined => {
    const m = new RegExp(`^${name}:\\s+(\\d+) kB$`, 'm').exec(status);
    return m ? Number(m[1]) * 1024 : undefined;
  };
  const rss = kb('VmRSS');
  const hwm = kb('VmHWM');
  return rss === undefined || hwm === undefined ? undefined : { rss, hwm };
}

/** Busy and total jiffies of all CPUs together, from the first ("cpu ") line of /proc/stat. */
export function parseProcStatCpu(stat: string): { busy: number; total: number } | undefined {
  const m = /^cpu\s+(.*)$/m.exec(stat);
  if (!m) return undefined;
  const f = m[1]!.trim().split(/\s+/).map(Number);
  // user nice system idle iowait irq softirq steal (guest and guest_nice are inside user and nice)
  if (f.length < 8 || f.slice(0, 8).some((v) => !Number.isFinite(v) || v < 0)) return undefined;
  const [user, nice, system, idle, iowait, irq, softirq, steal] = f as [number, number, number, number, number, number, number, number];
  const busy = user + nice + system + irq + softirq + steal;
  return { busy, total: busy + idle + iowait };
}

function machineCpu(): { busy: number; total: number } | undefined {
  try {
    return parseProcStatCpu(readFileSync('/proc/stat', 'utf8'));
  } catch {
    return undefined;
  }
}

/**
 * The whole machine's CPU between construction and percent(), as % of one core (200 =
 * both of two CPUs busy): every process and the kernel's own work (softirq), not only
 * the tunnel's. On a machine the test saturates, throughput follows the work per byte
 * of the whole path (application, kernel, tunnel), which this divided by the rate shows.
 */
export class MachineCpuMeter {
  private readonly start = machineCpu();

  percent(): number | undefined {
    const now = machineCpu();
    if (!now || !this.start || now.total <= this.start.total) return undefined;
    return ((now.busy - this.start.busy) / (now.total - this.start.total)) * cpus().length * 100;
  }
}

/** CPU seconds used by a set of processes between two points in time, as % of one core. */
export class CpuMeter {
  private readonly start: (number | undefined)[];
  private readonly t0 = performance.now();

  constructor(private readonly pids: number[]) {
    this.start = pids.map(cpuSeconds);
  }

  /** % of one core used by all the processes together since construction; undefined without processes. */
  percent(): number | undefined {
    if (this.pids.length === 0) return undefined;
    const wall = (performance.now() - this.t0) / 1000;
    let used = 0;
    this.pids.forEach((pid, i) => {
      const now = cpuSeconds(pid);
      const was = this.start[i];
      if (now !== undefined && was !== undefined) used += now - was;
    });
    return wall > 0 ? (used / wall) * 100 : undefined;
  }
}
