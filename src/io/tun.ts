/**
 * The TUN device as the data plane sees it: batches of IP packets in both directions.
 * Implementations: the real tunnel (native, per-batch reads in C) and FakeTun (src/io/fake.ts).
 */

export interface Tun {
  /** Largest IP packet the tunnel carries. */
  readonly mtu: number;
  /** Registers the handler for packets the local stack sent into the tunnel (one handler). */
  onPackets(handler: (packets: Uint8Array[]) => void): void;
  /** Delivers packets to the local stack. */
  write(packets: Uint8Array[]): void;
  close(): Promise<void>;
}
