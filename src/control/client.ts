/**
 * The client side of a control socket (a pod's, the node agent's): one request line,
 * one answer line. Apart from socket.ts (the server) so that a small client (the CNI
 * plugin) does not load the server's parsing, policies and logging.
 */
import { createConnection, type Socket } from 'node:net';

/** An answer line: {ok: true, result} or {ok: false, error: {code, message}}. */
type Answer = { ok: true; result: unknown } | { ok: false; error?: { code?: unknown; message?: unknown } };

/**
 * A failed request. `answered`: the server itself answered with this error ({ok: false,
 * error: {code, message}}); else the socket failed (code: the errno name), stayed silent
 * (ETIMEDOUT) or broke the framing (EPROTO). The two must not be confused: a server's
 * ENOENT ("container not registered") is not a connect()'s ENOENT ("nobody listens").
 */
export class ControlClientError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly answered = false,
  ) {
    super(message);
    this.name = 'ControlClientError';
  }
}

/** Largest answer line read (a status with every peer fits many times over). */
const MAX_ANSWER = 16 << 20;
/** A full listen backlog (the server frozen, accepting nothing): connect again after this long, until the deadline. */
const CONNECT_RETRY_MS = 10;

/**
 * Sends one request and resolves with its result; rejects with ControlClientError. All
 * of it, connect included, within timeoutMs: a full listen backlog (EAGAIN) is retried
 * until then, so it ends as "no answer within", as a server that accepted and stays silent.
 */
export function controlRequest(path: string, req: Record<string, unknown>, timeoutMs = 5000): Promise<unknown> {
  return new Promise((resolveP, rejectP) => {
    let sock: Socket | null = null;
    let retry: NodeJS.Timeout | undefined;
    let done = false;
    const finish = (e: ControlClientError | null, result?: unknown) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      clearTimeout(retry);
      if (e) sock?.destroy();
      else sock?.end();
      if (e) rejectP(e);
      else resolveP(result);
    };
    const timer = setTimeout(() => finish(new ControlClientError('ETIMEDOUT', `no answer from ${path} within ${timeoutMs} ms`)), timeoutMs);
    const connect = () => {
      const s = createConnection(path);
      sock = s;
      let connected = false;
      let buf = '';
      s.setEncoding('utf8');
      s.on('connect', () => {
        connected = true;
        s.write(JSON.stringify({ id: 1, ...req }) + '\n');
      });
      s.on('data', (d: string) => {
        buf += d;
        const nl = buf.indexOf('\n');
        if (nl < 0) {
          if (buf.length > MAX_ANSWER) finish(new ControlClientError('EPROTO', `answer from ${path} longer than ${MAX_ANSWER} bytes`));
          return;
        }
        let resp: Answer;
        try {
          resp = JSON.parse(buf.slice(0, nl));
        } catch {
          return finish(new ControlClientError('EPROTO', `bad answer from ${path}`));
        }
        if (typeof resp !== 'object' || resp === null || typeof resp.ok !== 'boolean') return finish(new ControlClientError('EPROTO', `bad answer from ${path}`));
        if (resp.ok) return finish(null, resp.result);
        const code = typeof resp.error?.code === 'string' ? resp.error.code : 'EIO';
        finish(new ControlClientError(code, typeof resp.error?.message === 'string' ? resp.error.message : 'error without a message', true));
      });
      s.on('error', (e: NodeJS.ErrnoException) => {
        if (!connected && e.code === 'EAGAIN' && !done) {
          s.destroy();
          retry = setTimeout(connect, CONNECT_RETRY_MS);
          return;
        }
        const hint =
          e.code === 'ENOENT' || e.code === 'ECONNREFUSED'
            ? `no tenc pod listening at ${path} (is \`tenc pod\` running in this network namespace? else pass --socket)`
            : `${path}: ${e.message}`;
        finish(new ControlClientError(e.code ?? 'EIO', hint));
      });
      s.on('end', () => finish(new ControlClientError('EPROTO', `${path} closed without an answer`)));
    };
    connect();
  });
}
