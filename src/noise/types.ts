/** Types shared by the handshake, the keypair/timer state machine and the data planes. */

/** A monotonic clock in milliseconds. Injected everywhere so tests never wait. */
export interface Clock {
  now(): number;
}

export const systemClock: Clock = { now: () => performance.now() };

/** Transport keys from a completed handshake (WireGuard whitepaper §5.4.5). */
export interface SessionKeys {
  /** Key for messages we send (32 bytes). */
  sendKey: Uint8Array;
  /** Key for messages we receive (32 bytes). */
  recvKey: Uint8Array;
  /** Our receiver index (u32): the peer puts it in the messages it sends us. */
  localIndex: number;
  /** The peer's receiver index (u32): we put it in the messages we send it. */
  remoteIndex: number;
  /** True when we sent the initiation. */
  isInitiator: boolean;
}
