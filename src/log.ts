/**
 * Logging: pino JSON lines on stderr (stdout carries the `public-key` line and the
 * CLI's answers). Fields have fixed keys; keys appear only as short fingerprints.
 *
 * The redaction list is a second net: code must never put a key in a log record,
 * but if it does, pino replaces the value with "[redacted]".
 */
import { pino, type Logger, type LevelWithSilent } from 'pino';
import { keyFingerprint as fingerprintBytes } from './noise/keys.js';

export type { Logger } from 'pino';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** Field names whose values are replaced, at the top level and one or two levels down. */
const SECRET_FIELDS = [
  'privateKey',
  'private_key',
  'psk',
  'presharedKey',
  'sendKey',
  'recvKey',
  'key',
  'secret',
  'ephemeral',
  'chainingKey',
];

export const REDACT_PATHS: string[] = SECRET_FIELDS.flatMap((f) => [f, `*.${f}`, `*.*.${f}`]);

export function isLogLevel(value: unknown): value is LogLevel {
  return typeof value === 'string' && (LOG_LEVELS as readonly string[]).includes(value);
}

export interface LoggerOptions {
  level?: LogLevel;
  /** Where the JSON lines go; default stderr (fd 2). Tests pass a stream to read them. */
  destination?: NodeJS.WritableStream;
  /** Without a destination: each line goes to this function (a pod host's pod: its own log), not to stderr. */
  write?: (line: string) => void;
  /** Fixed fields on every record (e.g. the interface name). */
  base?: Record<string, unknown>;
}

export function createLogger(opts: LoggerOptions = {}): Logger {
  const level: LevelWithSilent = opts.level ?? 'info';
  const destination = opts.destination ?? (opts.write ? { write: opts.write } : pino.destination({ fd: 2, sync: true }));
  return pino(
    {
      level,
      base: { pid: process.pid, ...(opts.base ?? {}) },
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    destination,
  );
}

/** A logger that drops everything (library code defaults to it). */
export const silentLogger: Logger = pino({ level: 'silent' });

/**
 * Short fingerprint of a key for logs (src/noise/keys.ts: 8 characters of a hash,
 * never the key). Accepts the raw 32 bytes or their base64 form.
 */
export function keyFingerprint(key: Uint8Array | string): string {
  let bytes: Uint8Array;
  if (typeof key === 'string') bytes = new Uint8Array(Buffer.from(key, 'base64'));
  else if (key instanceof Uint8Array) bytes = key;
  else throw new TypeError('keyFingerprint: key must be a Uint8Array or a base64 string');
  if (bytes.length !== 32) throw new RangeError(`keyFingerprint: key must be 32 bytes, got ${bytes.length}`);
  return fingerprintBytes(bytes);
}
