/**
 * Throughput of a synchronous operation on this thread. The rate divides by CPU time
 * (user + system of this process, as `openssl speed` divides by CPU time), so other
 * load on a shared machine lowers it less than wall time would; wall time is kept to
 * show how much the process was descheduled.
 */
export interface Rate {
  /** Payload bytes per CPU second. */
  bytesPerSec: number;
  ops: number;
  cpuSec: number;
  wallSec: number;
}

/** Calls `op` (which processes `bytesPerOp` payload bytes) for about `seconds` of wall time after a short warm-up. */
export function measure(op: () => void, bytesPerOp: number, seconds: number): Rate {
  const deadline = (ms: number): number => performance.now() + ms;
  // Warm-up: let the JIT and caches settle.
  const warmEnd = deadline(Math.min(200, seconds * 100));
  while (performance.now() < warmEnd) op();

  let chunk = 1;
  let ops = 0;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  for (;;) {
    const c0 = performance.now();
    for (let i = 0; i < chunk; i++) op();
    ops += chunk;
    const now = performance.now();
    if (now >= end) break;
    if (now - c0 < 5) chunk *= 2; // check the clock about every 5 ms
  }
  const wallSec = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const cpuSec = (cpu.user + cpu.system) / 1e6 || wallSec;
  return { bytesPerSec: (ops * bytesPerOp) / cpuSec, ops, cpuSec, wallSec };
}

export function gbits(bytesPerSec: number): number {
  return (bytesPerSec * 8) / 1e9;
}

/**
 * Like measure(), for an operation that needs fresh input each time (e.g. opening in
 * place): `setup` runs untimed before every `op`, and only the CPU time of `op` counts.
 * Meant for ops of tens of microseconds or more (CPU time is read in microseconds).
 */
export function measureWithSetup(setup: () => void, op: () => void, bytesPerOp: number, seconds: number): Rate {
  const warmEnd = performance.now() + Math.min(200, seconds * 100);
  while (performance.now() < warmEnd) {
    setup();
    op();
  }
  let ops = 0;
  let cpuUs = 0;
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  while (performance.now() < end) {
    setup();
    const c0 = process.cpuUsage();
    op();
    const c = process.cpuUsage(c0);
    cpuUs += c.user + c.system;
    ops++;
  }
  const wallSec = (performance.now() - t0) / 1000;
  const cpuSec = cpuUs / 1e6 || wallSec;
  return { bytesPerSec: (ops * bytesPerOp) / cpuSec, ops, cpuSec, wallSec };
}
