/** --metrics-address values (kept apart from server.ts so the CLI checks them without loading it). */

/** "127.0.0.1:9586" -> host and port; errors name the value. */
export function parseListenAddress(s: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(s);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new Error(`--metrics-address: ${JSON.stringify(s)} is not HOST:PORT (port 0-65535, 0: any free port; [v6]:PORT for IPv6)`);
  return { host: m[1] ?? (m[2] === '' ? '::' : m[2]), port };
}
