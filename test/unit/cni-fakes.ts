/**
 * What the CNI plugin tests share: a fake node agent on a unix socket that records each
 * request line and answers as the test says, the static C plugin built by cni/build.sh
 * (what nodes run), and runs of a plugin process or of `tenc cni` in process against
 * that agent.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { tencPlugin } from '../../src/cni/plugin.js';
import { runPlugin } from '../../src/cni/skeleton.js';

const root = join(__dirname, '../..');

/** The fake agent's answer: a JSON answer (its id added), a raw line, 'silent' (never answers) or 'close' (hangs up). */
export type AgentAnswer = Record<string, unknown> | string;

/** A fake node agent on `sock`: each request line in `seen`, answered by `answer`. */
export class FakeNodeAgent {
  readonly seen: Record<string, unknown>[] = [];
  answer: (req: Record<string, unknown>) => AgentAnswer = () => ({ ok: true, result: {} });
  private constructor(
    readonly sock: string,
    private readonly server: Server,
  ) {}

  static async listen(sock: string): Promise<FakeNodeAgent> {
    let agent: FakeNodeAgent | undefined;
    const server = createServer((c) => {
      let buf = '';
      c.setEncoding('utf8');
      c.on('error', () => {});
      c.on('data', (d: string) => {
        buf += d;
        const nl = buf.indexOf('\n');
        if (nl < 0) return;
        const req = JSON.parse(buf.slice(0, nl)) as Record<string, unknown>;
        agent!.seen.push(req);
        const a = agent!.answer(req);
        if (a === 'silent') return;
        if (a === 'close') return void c.end();
        c.write((typeof a === 'string' ? a : JSON.stringify({ id: req.id, ...a })) + '\n');
      });
    });
    agent = new FakeNodeAgent(sock, server);
    await new Promise<void>((r) => server.listen(sock, r));
    return agent;
  }

  close(): Promise<void> {
    return new Promise<void>((r) => this.server.close(() => r()));
  }
}

/** cni/tenc-cni.c built into `out` by cni/build.sh. */
export function buildCPlugin(out: string): string {
  const b = spawnSync('sh', [join(root, 'cni/build.sh'), out], { encoding: 'utf8' });
  if (b.status !== 0) throw new Error(`cni/build.sh failed: ${b.stderr}`);
  return out;
}

/** A plugin run: exit code, stdout, and the requests the agent got meanwhile. */
export interface PluginOut {
  code: number | null;
  stdout: string;
  requests: Record<string, unknown>[];
}

export interface ProcOpts {
  /** Leave stdin open after writing (a runtime that never closes it). */
  keepStdinOpen?: boolean;
  /** SIGKILL after this long (then code is null): a hang fails the test instead of stalling it. */
  killAfterMs?: number;
}

/** A plugin process (`file args`) with `env` and `stdin`, against `agent`. */
export function runProc(agent: FakeNodeAgent, file: string, args: string[], env: Record<string, string>, stdin: string, o: ProcOpts = {}): Promise<PluginOut & { ms: number }> {
  agent.seen.length = 0;
  const t0 = Date.now();
  return new Promise((resolve) => {
    const c: ChildProcess = spawn(file, args, { env, stdio: ['pipe', 'pipe', 'pipe'] });
    const kill = setTimeout(() => c.kill('SIGKILL'), o.killAfterMs ?? 20_000);
    let stdout = '';
    c.stdout!.setEncoding('utf8').on('data', (d) => (stdout += d));
    c.on('close', (code) => {
      clearTimeout(kill);
      resolve({ code, stdout, requests: [...agent.seen], ms: Date.now() - t0 });
    });
    c.stdin!.on('error', () => {}); // it may exit before reading stdin (a bad CNI_COMMAND)
    if (o.keepStdinOpen) c.stdin!.write(stdin);
    else c.stdin!.end(stdin);
  });
}

/** `tenc cni` (src/cni/) in this process, against `agent`. */
export async function runTs(agent: FakeNodeAgent, env: Record<string, string>, stdin: string): Promise<PluginOut> {
  agent.seen.length = 0;
  let stdout = '';
  const code = await runPlugin(tencPlugin, { env, stdin: async () => stdin, stdout: (s) => (stdout += s) });
  return { code, stdout, requests: [...agent.seen] };
}

/** What a running `cni-install.sh keep` has said (stderr) so far, and its exit code (null while it runs). */
export interface Keeper {
  err(): string;
  exitCode(): number | null;
}

/**
 * deploy/cni-install.sh keep, with `env` over this process's and a recheck every 0.1 s,
 * while `body` runs: a failure of body carries what keep said; then SIGTERM. Returns
 * keep's exit code and all it said.
 */
export async function whileKeeping(env: Record<string, string | undefined>, body: (k: Keeper) => Promise<void>): Promise<{ code: number | null; err: string }> {
  const child = spawn('bash', [join(root, 'deploy/cni-install.sh'), 'keep'], { env: { ...process.env, ...env, CNI_RECHECK: '0.1' }, stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d) => (err += d));
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  try {
    await body({ err: () => err, exitCode: () => child.exitCode });
  } catch (e) {
    throw new Error(`${(e as Error).message}\ncni-install.sh keep said:\n${err}`);
  } finally {
    child.kill('SIGTERM');
  }
  return { code: await exited, err };
}
