/**
 * Transport data messages (whitepaper §5.4.6), the TypeScript reference the native engine
 * must match byte for byte:
 *
 *   header  = type 4 (u8) | 3 zero bytes | receiver index (u32 LE) | counter (u64 LE)
 *   payload = ChaCha20-Poly1305(key, nonce = 4 zero bytes || counter u64 LE,
 *                               packet || zero padding, no AAD)   -- ciphertext || 16-byte tag
 *
 * Padding: the packet is padded with zeros to a multiple of 16 bytes, but never beyond the MTU
 * (paddingSize, as WireGuard computes it). A keepalive is an empty packet: 32 bytes on the wire.
 * openTransport validates through the wire gate, then authenticates; the replay window is the
 * caller's (check before, commit after a successful open).
 */

import {
  MESSAGE_MAX_SIZE,
  MESSAGE_PADDING_MULTIPLE,
  MESSAGE_TRANSPORT,
  MESSAGE_TRANSPORT_HEADER_SIZE,
  KEY_SIZE,
  AEAD_TAG_SIZE,
  REJECT_AFTER_MESSAGES,
  TRANSPORT_OFFSET,
} from '../wire/constants.js';
import { assertIndex, decodeMessage, writeHeader, writeU32LE, writeU64LE, type TransportMessage } from '../wire/messages.js';
import { aeadOpen, aeadSeal } from './kdf.js';

/** Why openTransport refused a message; names match the data plane's DROP_REASONS. */
export const TRANSPORT_REASONS = ['bad_header', 'replay', 'auth'] as const;
export type TransportReason = (typeof TRANSPORT_REASONS)[number];

export type OpenResult =
  | {
      ok: true;
      receiverIndex: number;
      counter: bigint;
      /** The decrypted packet including its zero padding (empty for a keepalive). */
      plaintext: Uint8Array;
    }
  | { ok: false; reason: TransportReason };

/** Largest packet that still fits a transport message in one UDP datagram. */
export const MAX_TRANSPORT_PACKET = MESSAGE_MAX_SIZE - MESSAGE_TRANSPORT_HEADER_SIZE - AEAD_TAG_SIZE;

/**
 * Zero bytes appended to a packet of `packetSize` bytes: up to the next multiple of 16, but the
 * padded size never exceeds `mtu` (0 = unknown MTU, always pad to 16). A packet longer than the
 * MTU is padded as if it were `packetSize % mtu` long, as WireGuard does.
 */
export function paddingSize(packetSize: number, mtu = 0): number {
  if (!Number.isInteger(packetSize) || packetSize < 0) throw new RangeError('packetSize must be a non-negative integer');
  if (!Number.isInteger(mtu) || mtu < 0) throw new RangeError('mtu must be a non-negative integer');
  const align = (n: number) => Math.ceil(n / MESSAGE_PADDING_MULTIPLE) * MESSAGE_PADDING_MULTIPLE;
  if (mtu === 0) return align(packetSize) - packetSize;
  let lastUnit = packetSize;
  if (lastUnit > mtu) lastUnit %= mtu;
  let padded = align(lastUnit);
  if (padded > mtu) padded = mtu;
  return padded - lastUnit;
}

/**
 * Seals one packet into a transport message. `counter` is the sender's nonce (bigint, below
 * REJECT_AFTER_MESSAGES; the caller never reuses one with the same key).
 */
export function sealTransport(
  key: Uint8Array,
  receiverIndex: number,
  counter: bigint,
  packet: Uint8Array,
  mtu = 0,
): Uint8Array {
  if (!(key instanceof Uint8Array)) throw new TypeError('key must be a Uint8Array');
  if (key.length !== KEY_SIZE) throw new RangeError(`key must be ${KEY_SIZE} bytes`);
  assertIndex(receiverIndex, 'receiverIndex');
  if (typeof counter !== 'bigint') throw new TypeError('counter must be a bigint');
  if (counter < 0n || counter >= REJECT_AFTER_MESSAGES) throw new RangeError('counter out of range');
  if (!(packet instanceof Uint8Array)) throw new TypeError('packet must be a Uint8Array');
  const pad = paddingSize(packet.length, mtu);
  const plainLen = packet.length + pad;
  if (plainLen > MAX_TRANSPORT_PACKET) throw new RangeError(`packet too large (${packet.length} bytes)`);

  const plain = new Uint8Array(plainLen);
  plain.set(packet);
  const sealed = aeadSeal(key, counter, plain);
  plain.fill(0);
  const out = new Uint8Array(MESSAGE_TRANSPORT_HEADER_SIZE + sealed.length);
  writeHeader(out, MESSAGE_TRANSPORT);
  writeU32LE(out, TRANSPORT_OFFSET.receiverIndex, receiverIndex);
  writeU64LE(out, TRANSPORT_OFFSET.counter, counter);
  out.set(sealed, TRANSPORT_OFFSET.packet);
  return out;
}

/**
 * Opens a transport message (raw bytes, or one already decoded by decodeMessage) with the
 * receive key the caller found for its receiver index. Never throws on message content.
 */
export function openTransport(key: Uint8Array, data: Uint8Array | TransportMessage): OpenResult {
  if (!(key instanceof Uint8Array)) throw new TypeError('key must be a Uint8Array');
  if (key.length !== KEY_SIZE) throw new RangeError(`key must be ${KEY_SIZE} bytes`);
  let msg: TransportMessage;
  if (data instanceof Uint8Array) {
    const d = decodeMessage(data);
    if (!d.ok || d.message.type !== MESSAGE_TRANSPORT) return { ok: false, reason: 'bad_header' };
    msg = d.message;
  } else if (data !== null && typeof data === 'object' && data.type === MESSAGE_TRANSPORT) {
    msg = data;
  } else {
    throw new TypeError('data must be bytes or a decoded transport message');
  }
  if (msg.counter >= REJECT_AFTER_MESSAGES) return { ok: false, reason: 'replay' };
  const plaintext = aeadOpen(key, msg.counter, msg.ciphertext);
  if (plaintext === null) return { ok: false, reason: 'auth' };
  return { ok: true, receiverIndex: msg.receiverIndex, counter: msg.counter, plaintext };
}
