/**
 * The HTTP /metrics endpoint of `tenc agent --metrics-address` and `tenc pod
 * --metrics-address`. Each scrape finds the pods (targets()), asks each for its
 * status (gather.ts: capped, parallel, timed out), renders them (render.ts) and
 * appends the exporter's own metrics (prom-client: the agent's counters and the
 * process metrics). The pods' counters pass through a CounterGuard (monotonic.ts),
 * so none goes backwards while its pod process lives; with peerNames (the agent's)
 * tenc_peer_info names each peer's pod. Only GET /metrics (and / with a link);
 * scrapes arriving while one is gathered share its result, so a burst costs one
 * round of requests.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Registry as PromRegistry } from 'prom-client';
import { gatherStatus, type GatherOptions, type PodTarget } from './gather.js';
import { Exposition, renderPods } from './render.js';
import { SCRAPE_METRICS } from './names.js';
import { CounterGuard } from './monotonic.js';
import type { PeerNames } from './peer-names.js';
import { silentLogger, type Logger } from '../log.js';
import { parseListenAddress } from './address.js';

export { parseListenAddress };

export interface MetricsServerOptions extends GatherOptions {
  /** "host:port", "[v6]:port" or ":port" (all addresses). */
  address: string;
  targets: () => PodTarget[] | Promise<PodTarget[]>;
  /** The exporter's own prom-client metrics (agent counters, process metrics). */
  own?: PromRegistry;
  version?: string;
  log?: Logger;
  /** The peers' pod names for tenc_peer_info (the agent's: from its registry). */
  peerNames?: PeerNames;
}

export class MetricsServer {
  private server: Server | null = null;
  private inflight: Promise<string> | null = null;
  private readonly log: Logger;
  /** Keeps the pods' counters from going backwards while a pod lives (monotonic.ts). */
  private readonly guard = new CounterGuard();

  constructor(private readonly o: MetricsServerOptions) {
    this.log = o.log ?? silentLogger;
  }

  /** One scrape's text. */
  async scrape(): Promise<string> {
    if (!this.inflight) {
      this.inflight = this.build().finally(() => (this.inflight = null));
    }
    return await this.inflight;
  }

  private async build(): Promise<string> {
    const targets = await this.o.targets();
    const g = await gatherStatus(targets, this.o);
    this.guard.begin();
    const names = this.o.peerNames?.lookup([...new Set(targets.map((t) => t.namespace))]);
    const x = renderPods(g.samples, new Exposition(this.guard), Date.now(), names);
    this.guard.end();
    const S = SCRAPE_METRICS;
    x.add(S.buildInfo, { version: this.o.version ?? 'unknown', nodejs: process.version }, 1);
    x.add(S.scrapePods, {}, g.samples.length);
    x.add(S.scrapeSkipped, {}, g.skipped);
    x.add(S.scrapeDuration, {}, g.seconds);
    for (const s of g.samples) if (s.error) this.log.debug({ pod: s.pod, err: s.error }, 'metrics: pod status failed');
    let own = '';
    if (this.o.own) own = await this.o.own.metrics();
    return x.text() + own;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (path === '/') {
      res.writeHead(200, { 'content-type': 'text/html' }).end('<html><body><a href="/metrics">/metrics</a></body></html>\n');
      return;
    }
    if (path !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics\n');
      return;
    }
    try {
      const body = await this.scrape();
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' }).end(req.method === 'HEAD' ? undefined : body);
    } catch (e) {
      this.log.warn({ err: (e as Error).message }, 'metrics scrape failed');
      res.writeHead(500, { 'content-type': 'text/plain' }).end(`scrape failed: ${(e as Error).message}\n`);
    }
  }

  async listen(): Promise<{ host: string; port: number }> {
    const { host, port } = parseListenAddress(this.o.address);
    const server = createServer((req, res) => void this.handle(req, res));
    server.requestTimeout = 30_000;
    server.headersTimeout = 10_000;
    server.maxHeadersCount = 50;
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e) => reject(new Error(`--metrics-address ${this.o.address}: ${(e as Error).message}`)));
      server.listen(port, host, () => resolve());
    });
    this.server = server;
    const a = server.address();
    const bound = typeof a === 'object' && a ? a.port : port;
    this.log.info({ address: this.o.address }, 'metrics served');
    return { host, port: bound };
  }

  async close(): Promise<void> {
    const s = this.server;
    this.server = null;
    if (!s) return;
    s.closeAllConnections();
    await new Promise<void>((r) => s.close(() => r()));
  }
}
