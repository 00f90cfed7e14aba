/**
 * Types shared by the handshake, the cookies, the keypair/timer state machine and the data
 * planes: the handshake state lives here so cookie.ts and handshake.ts both build on it
 * without importing each other.
 */

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

/** Our static identity, plus what is derived from it once (mac1/cookie keys, cookie secret). */
export interface LocalIdentity {
  readonly privateKey: Uint8Array;
  readonly publicKey: Uint8Array;
  /** HASH(LABEL_MAC1 || our public key): checks mac1 of messages sent to us. */
  readonly mac1Key: Uint8Array;
  /** HASH(LABEL_COOKIE || our public key): encrypts the cookie replies we send. */
  readonly cookieKey: Uint8Array;
  /** Rotating secret for the cookies we hand out (regenerated every COOKIE_REFRESH_TIME). */
  cookieSecret: Uint8Array;
  /** Clock ms when cookieSecret was made; null before the first use. */
  cookieSecretBirthMs: number | null;
  /** Random source (defaults to crypto randomBytes); injectable for tests. */
  readonly random: (n: number) => Uint8Array;
}

/** The in-progress handshake with one peer. */
export type HandshakeState =
  | { kind: 'none' }
  | {
      kind: 'initiation_created';
      localIndex: number;
      createdMs: number;
      ephemeralPrivate: Uint8Array;
      hash: Uint8Array;
      chainingKey: Uint8Array;
    }
  | {
      kind: 'initiation_consumed';
      remoteIndex: number;
      remoteEphemeral: Uint8Array;
      hash: Uint8Array;
      chainingKey: Uint8Array;
    };

/** Per-peer handshake record. Create with makeHandshakePeer. */
export interface HandshakePeer {
  readonly remoteStatic: Uint8Array;
  /** Pre-shared key (32 bytes; all zeros when none). May be replaced (same length). */
  psk: Uint8Array;
  /** DH(our static private, peer static public), computed once. */
  readonly staticStatic: Uint8Array;
  /** HASH(LABEL_MAC1 || peer public key): mac1 of messages we send to the peer. */
  readonly mac1Key: Uint8Array;
  /** HASH(LABEL_COOKIE || peer public key): decrypts cookie replies from the peer. */
  readonly cookieKey: Uint8Array;
  /** Greatest TAI64N accepted from this peer (12 bytes), null if none yet. */
  latestTimestamp: Uint8Array | null;
  /** Greatest TAI64N we sent to this peer, to keep our own initiations increasing. */
  lastSentTimestamp: Uint8Array | null;
  /** Clock ms of the last initiation consumed from this peer (flood limit), null if none. */
  lastInitiationConsumedMs: number | null;
  /** Cookie from the peer's last cookie reply (16 bytes), and when we got it. */
  cookie: Uint8Array | null;
  cookieReceivedMs: number | null;
  /** mac1 of the last handshake message we sent (AAD of the peer's cookie reply), or null. */
  lastMac1Sent: Uint8Array | null;
  state: HandshakeState;
}
