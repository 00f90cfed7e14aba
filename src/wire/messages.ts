/**
 * WireGuard message layouts (whitepaper §5.4.2 - §5.4.6) and the one validation gate for
 * bytes that arrive from a peer.
 *
 * `decodeMessage` checks type, reserved bytes and length, then returns views (subarrays,
 * no copies) into the input. It never throws and never allocates in proportion to the input.
 * Everything past it may trust the layout (but not the contents: MACs and AEADs decide that).
 */

import {
  AEAD_TAG_SIZE,
  COOKIE_NONCE_SIZE,
  COOKIE_REPLY_OFFSET,
  COOKIE_SIZE,
  INITIATION_OFFSET,
  KEY_SIZE,
  MAC_SIZE,
  MESSAGE_COOKIE_REPLY,
  MESSAGE_COOKIE_REPLY_SIZE,
  MESSAGE_INITIATION,
  MESSAGE_INITIATION_SIZE,
  MESSAGE_MAX_SIZE,
  MESSAGE_RESPONSE,
  MESSAGE_RESPONSE_SIZE,
  MESSAGE_TRANSPORT,
  MESSAGE_TRANSPORT_MIN_SIZE,
  RESPONSE_OFFSET,
  TIMESTAMP_SIZE,
  TRANSPORT_OFFSET,
} from './constants.js';

export interface InitiationMessage {
  type: typeof MESSAGE_INITIATION;
  /** The whole 148-byte message (the same memory as the decoded input). */
  bytes: Uint8Array;
  senderIndex: number;
  ephemeral: Uint8Array;
  encryptedStatic: Uint8Array;
  encryptedTimestamp: Uint8Array;
  mac1: Uint8Array;
  mac2: Uint8Array;
}

export interface ResponseMessage {
  type: typeof MESSAGE_RESPONSE;
  /** The whole 92-byte message. */
  bytes: Uint8Array;
  senderIndex: number;
  receiverIndex: number;
  ephemeral: Uint8Array;
  encryptedNothing: Uint8Array;
  mac1: Uint8Array;
  mac2: Uint8Array;
}

export interface CookieReplyMessage {
  type: typeof MESSAGE_COOKIE_REPLY;
  /** The whole 64-byte message. */
  bytes: Uint8Array;
  receiverIndex: number;
  nonce: Uint8Array;
  encryptedCookie: Uint8Array;
}

export interface TransportMessage {
  type: typeof MESSAGE_TRANSPORT;
  /** The whole message. */
  bytes: Uint8Array;
  receiverIndex: number;
  counter: bigint;
  /** Ciphertext of the padded packet followed by the 16-byte tag. */
  ciphertext: Uint8Array;
}

export type HandshakeMessage = InitiationMessage | ResponseMessage | CookieReplyMessage;
export type Message = HandshakeMessage | TransportMessage;

/** Why `decodeMessage` refused the bytes. */
export const DECODE_REASONS = ['bad_length', 'bad_type', 'bad_reserved'] as const;
export type DecodeReason = (typeof DECODE_REASONS)[number];

export type DecodeResult = { ok: true; message: Message } | { ok: false; reason: DecodeReason };

export function readU32LE(b: Uint8Array, off: number): number {
  return (b[off] | (b[off + 1] << 8) | (b[off + 2] << 16) | (b[off + 3] << 24)) >>> 0;
}

export function writeU32LE(b: Uint8Array, off: number, v: number): void {
  b[off] = v & 0xff;
  b[off + 1] = (v >>> 8) & 0xff;
  b[off + 2] = (v >>> 16) & 0xff;
  b[off + 3] = (v >>> 24) & 0xff;
}

export function readU64LE(b: Uint8Array, off: number): bigint {
  return (BigInt(readU32LE(b, off + 4)) << 32n) | BigInt(readU32LE(b, off));
}

export function writeU64LE(b: Uint8Array, off: number, v: bigint): void {
  writeU32LE(b, off, Number(v & 0xffffffffn));
  writeU32LE(b, off + 4, Number((v >> 32n) & 0xffffffffn));
}

/** Writes the 4-byte type header (type u8 + 3 zero bytes). */
export function writeHeader(b: Uint8Array, type: number): void {
  b[0] = type;
  b[1] = 0;
  b[2] = 0;
  b[3] = 0;
}

/** Throws a TypeError unless `v` is a u32 (the receiver/sender index domain). */
export function assertIndex(v: unknown, name: string): asserts v is number {
  if (typeof v !== 'number' || !Number.isInteger(v)) throw new TypeError(`${name} must be an integer`);
  if (v < 0 || v > 0xffffffff) throw new RangeError(`${name} must be a u32, got ${v}`);
}

/** The single validation gate for peer input. Never throws. */
export function decodeMessage(buf: Uint8Array): DecodeResult {
  if (!(buf instanceof Uint8Array)) return { ok: false, reason: 'bad_length' };
  const len = buf.length;
  if (len < 4 || len > MESSAGE_MAX_SIZE) return { ok: false, reason: 'bad_length' };
  const type = buf[0];
  if (type < MESSAGE_INITIATION || type > MESSAGE_TRANSPORT) return { ok: false, reason: 'bad_type' };
  if (buf[1] !== 0 || buf[2] !== 0 || buf[3] !== 0) return { ok: false, reason: 'bad_reserved' };
  switch (type) {
    case MESSAGE_INITIATION: {
      if (len !== MESSAGE_INITIATION_SIZE) return { ok: false, reason: 'bad_length' };
      const o = INITIATION_OFFSET;
      return {
        ok: true,
        message: {
          type: MESSAGE_INITIATION,
          bytes: buf,
          senderIndex: readU32LE(buf, o.senderIndex),
          ephemeral: buf.subarray(o.ephemeral, o.ephemeral + KEY_SIZE),
          encryptedStatic: buf.subarray(o.encryptedStatic, o.encryptedStatic + KEY_SIZE + AEAD_TAG_SIZE),
          encryptedTimestamp: buf.subarray(
            o.encryptedTimestamp,
            o.encryptedTimestamp + TIMESTAMP_SIZE + AEAD_TAG_SIZE,
          ),
          mac1: buf.subarray(o.mac1, o.mac1 + MAC_SIZE),
          mac2: buf.subarray(o.mac2, o.mac2 + MAC_SIZE),
        },
      };
    }
    case MESSAGE_RESPONSE: {
      if (len !== MESSAGE_RESPONSE_SIZE) return { ok: false, reason: 'bad_length' };
      const o = RESPONSE_OFFSET;
      return {
        ok: true,
        message: {
          type: MESSAGE_RESPONSE,
          bytes: buf,
          senderIndex: readU32LE(buf, o.senderIndex),
          receiverIndex: readU32LE(buf, o.receiverIndex),
          ephemeral: buf.subarray(o.ephemeral, o.ephemeral + KEY_SIZE),
          encryptedNothing: buf.subarray(o.encryptedNothing, o.encryptedNothing + AEAD_TAG_SIZE),
          mac1: buf.subarray(o.mac1, o.mac1 + MAC_SIZE),
          mac2: buf.subarray(o.mac2, o.mac2 + MAC_SIZE),
        },
      };
    }
    case MESSAGE_COOKIE_REPLY: {
      if (len !== MESSAGE_COOKIE_REPLY_SIZE) return { ok: false, reason: 'bad_length' };
      const o = COOKIE_REPLY_OFFSET;
      return {
        ok: true,
        message: {
          type: MESSAGE_COOKIE_REPLY,
          bytes: buf,
          receiverIndex: readU32LE(buf, o.receiverIndex),
          nonce: buf.subarray(o.nonce, o.nonce + COOKIE_NONCE_SIZE),
          encryptedCookie: buf.subarray(o.encryptedCookie, o.encryptedCookie + COOKIE_SIZE + AEAD_TAG_SIZE),
        },
      };
    }
    default: {
      // MESSAGE_TRANSPORT. Any length from header + tag up is accepted: senders pad to a
      // multiple of 16 only up to the MTU, so the length need not be a multiple of 16.
      if (len < MESSAGE_TRANSPORT_MIN_SIZE) return { ok: false, reason: 'bad_length' };
      return {
        ok: true,
        message: {
          type: MESSAGE_TRANSPORT,
          bytes: buf,
          receiverIndex: readU32LE(buf, TRANSPORT_OFFSET.receiverIndex),
          counter: readU64LE(buf, TRANSPORT_OFFSET.counter),
          ciphertext: buf.subarray(TRANSPORT_OFFSET.packet),
        },
      };
    }
  }
}
