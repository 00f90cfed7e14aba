/**
 * Sliding-window replay protection for transport counters (WireGuard whitepaper §5.4.6,
 * the bitmap scheme of RFC 6479 §2 with the sizes of the Linux kernel's counter check).
 *
 * The window is a ring of 8192 bits kept as 256 words of 32 bits. Of those, one word
 * (the one holding the greatest counter seen) is only partly in the past, so the
 * usable history is REPLAY_WINDOW_SIZE (src/wire) = 8192 - 64 = 8128 counters behind the
 * greatest one, the same as the kernel (which uses 64-bit words). A counter c is
 * acceptable when it was never accepted before and c >= greatest - 8128.
 *
 * The check is split in two so a forged packet cannot move the window:
 *  - check(counter): before decryption, pure;
 *  - commit(counter): after the AEAD tag verified; records the counter (and checks
 *    again, so two packets with the same counter racing through check() cannot both
 *    be accepted).
 * Counters at or above REJECT_AFTER_MESSAGES are always refused.
 */
import { REJECT_AFTER_MESSAGES, REPLAY_WINDOW_BITS, REPLAY_WINDOW_SIZE } from '../wire/constants.js';

const WORD_BITS = 32;
const WORDS = REPLAY_WINDOW_BITS / WORD_BITS;
const WORD_SHIFT = 5n;
const WORD_MASK = BigInt(WORDS - 1);
const U64_MAX = (1n << 64n) - 1n;
const REJECT = BigInt(REJECT_AFTER_MESSAGES);
const WINDOW = BigInt(REPLAY_WINDOW_SIZE);

function toCounter(counter: bigint | number): bigint {
  if (typeof counter === 'bigint') {
    if (counter < 0n || counter > U64_MAX) throw new RangeError(`replay: counter out of u64 range: ${counter}`);
    return counter;
  }
  if (typeof counter !== 'number') throw new TypeError('replay: counter must be a bigint or a number');
  if (!Number.isSafeInteger(counter) || counter < 0) throw new RangeError(`replay: counter not a safe non-negative integer: ${counter}`);
  return BigInt(counter);
}

export class ReplayWindow {
  /** greatest accepted counter + 1; 0 while nothing has been accepted. */
  private next = 0n;
  private readonly ring = new Uint32Array(WORDS);

  /** True if the counter may be accepted; changes nothing. */
  check(counter: bigint | number): boolean {
    const c = toCounter(counter);
    if (c >= REJECT) return false;
    const pos = c + 1n; // positions are shifted by one so that 0 means "nothing yet"
    if (pos > this.next) return true;
    if (this.next - pos > WINDOW) return false;
    return !this.isSet(pos);
  }

  /** Records an authenticated counter. Returns false (and records nothing) if it is not acceptable. */
  commit(counter: bigint | number): boolean {
    const c = toCounter(counter);
    if (!this.check(c)) return false;
    const pos = c + 1n;
    if (pos > this.next) {
      // Clear the words between the old top word (exclusive) and the new one (inclusive).
      const fromWord = this.next >> WORD_SHIFT;
      const toWord = pos >> WORD_SHIFT;
      let n = toWord - fromWord;
      if (n > BigInt(WORDS)) n = BigInt(WORDS);
      for (let i = 1n; i <= n; i++) this.ring[Number((fromWord + i) & WORD_MASK)] = 0;
      this.next = pos;
    }
    const word = Number((pos >> WORD_SHIFT) & WORD_MASK);
    const bit = Number(pos & BigInt(WORD_BITS - 1));
    this.ring[word] |= 1 << bit;
    return true;
  }

  /** Greatest committed counter, or -1n if none. */
  get greatest(): bigint {
    return this.next - 1n;
  }

  reset(): void {
    this.next = 0n;
    this.ring.fill(0);
  }

  private isSet(pos: bigint): boolean {
    const word = Number((pos >> WORD_SHIFT) & WORD_MASK);
    const bit = Number(pos & BigInt(WORD_BITS - 1));
    return (this.ring[word] & (1 << bit)) !== 0;
  }
}

/**
 * One step of the shared replay table: after the previous steps, receiving `counter`
 * (check, and commit if accepted) must give `accept`.
 */
export interface ReplayStep {
  n: number;
  counter: bigint;
  accept: boolean;
  why: string;
}

const W = WINDOW;
const R = REJECT;

/**
 * The numbered replay table, run in order on one fresh window. Exported so the
 * native engine's C window can be run over the same steps.
 */
export const REPLAY_TABLE: readonly ReplayStep[] = [
  { n: 1, counter: 0n, accept: true, why: 'first counter of a session' },
  { n: 2, counter: 1n, accept: true, why: 'in order' },
  { n: 3, counter: 1n, accept: false, why: 'duplicate of the greatest' },
  { n: 4, counter: 0n, accept: false, why: 'duplicate below the greatest' },
  { n: 5, counter: 5n, accept: true, why: 'gap ahead' },
  { n: 6, counter: 3n, accept: true, why: 'reordered, inside the window' },
  { n: 7, counter: 4n, accept: true, why: 'reordered, inside the window' },
  { n: 8, counter: 2n, accept: true, why: 'reordered, fills the last hole' },
  { n: 9, counter: 3n, accept: false, why: 'duplicate of a reordered one' },
  { n: 10, counter: 6n, accept: true, why: 'in order again' },
  { n: 11, counter: W + 6n, accept: true, why: 'jump so that 6 sits exactly at the window edge' },
  { n: 12, counter: 7n, accept: true, why: 'greatest - window + 1: inside' },
  { n: 13, counter: 6n, accept: false, why: 'at the edge but already seen' },
  { n: 14, counter: 8n, accept: true, why: 'inside, not seen' },
  { n: 15, counter: W + 7n, accept: true, why: 'advance by one: 7 now at the edge' },
  { n: 16, counter: 6n, accept: false, why: 'greatest - window - 1: too old' },
  { n: 17, counter: 9n, accept: true, why: 'greatest - window + 2: inside' },
  { n: 18, counter: W + 6n, accept: false, why: 'duplicate of an earlier greatest' },
  { n: 19, counter: 4n * W, accept: true, why: 'jump far ahead (whole ring cleared)' },
  { n: 20, counter: W + 7n, accept: false, why: 'old greatest now far too old' },
  { n: 21, counter: 3n * W, accept: true, why: 'exactly greatest - window, never seen: accepted' },
  { n: 22, counter: 3n * W - 1n, accept: false, why: 'greatest - window - 1: too old' },
  { n: 23, counter: 3n * W + 1n, accept: true, why: 'greatest - window + 1, stale bit from before the jump must be clear' },
  { n: 24, counter: 4n * W + 66n, accept: true, why: 'jump of two words: ring words are reused' },
  { n: 25, counter: 4n * W + 65n, accept: true, why: 'bit left in the reused word by step 23 was cleared' },
  { n: 26, counter: 4n * W + 64n, accept: true, why: 'bit left in the reused word by step 21 was cleared' },
  { n: 27, counter: 4n * W + 32n, accept: true, why: 'word skipped by the jump was cleared' },
  { n: 28, counter: 4n * W + 64n, accept: false, why: 'duplicate in the top word' },
  { n: 29, counter: (1n << 53n) + 1n, accept: true, why: 'above 2^53: exact with bigint' },
  { n: 30, counter: 1n << 53n, accept: true, why: 'one below, not seen' },
  { n: 31, counter: 1n << 53n, accept: false, why: 'duplicate above 2^53' },
  { n: 32, counter: R, accept: false, why: 'REJECT_AFTER_MESSAGES is refused' },
  { n: 33, counter: R - 1n, accept: true, why: 'last usable counter' },
  { n: 34, counter: R - 1n, accept: false, why: 'duplicate of the last usable counter' },
  { n: 35, counter: R - 2n, accept: true, why: 'just below the last usable counter' },
  { n: 36, counter: R + 1n, accept: false, why: 'above REJECT_AFTER_MESSAGES' },
  { n: 37, counter: (1n << 64n) - 1n, accept: false, why: '2^64 - 1: refused' },
  { n: 38, counter: R - 1n - W, accept: true, why: 'window edge below the last usable counter' },
  { n: 39, counter: R - 2n - W, accept: false, why: 'one past that edge' },
  { n: 40, counter: 0n, accept: false, why: 'counter 0 after all that: too old' },
];
