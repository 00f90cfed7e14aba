/**
 * The UDP socket(s) the data plane sends and receives WireGuard messages on, batch-first.
 * Implementations: the real sockets (native) and FakeBind over FakeNetwork (src/io/fake.ts).
 */
import type { Endpoint } from '../net/address.js';

export interface Datagram {
  data: Uint8Array;
  from: Endpoint;
}

export interface Bind {
  /** The address and port datagrams are sent from. */
  readonly local: Endpoint;
  /** Registers the handler for received datagrams (one handler). */
  onDatagrams(handler: (datagrams: Datagram[]) => void): void;
  /** Sends datagrams to one endpoint. Returns how many could not be sent. */
  send(to: Endpoint, datagrams: Uint8Array[]): number;
  close(): Promise<void>;
}

export function endpointKey(e: Endpoint): string {
  return e.address.includes(':') ? `[${e.address}]:${e.port}` : `${e.address}:${e.port}`;
}

export function sameEndpoint(a: Endpoint | null, b: Endpoint | null): boolean {
  if (a === null || b === null) return a === b;
  return a.port === b.port && a.address === b.address;
}
