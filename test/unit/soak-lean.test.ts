/**
 * bench/soak.ts leanRecords: the pods' lean-mode log records (src/control/lean.ts)
 * picked out of TencTunnel.stderrTail() lines ("<netns>: <pino JSON>").
 */
import { describe, it, expect } from 'vitest';
import { leanRecords } from '../../bench/soak.js';

describe('soak lean records', () => {
  it('keeps "pod running" with its v8 state and the end of lean mode, nothing else', () => {
    const lines = [
      'tencs-a: {"level":"info","time":"T1","msg":"public key"}',
      'tencs-a: {"level":"info","time":"T2","peers":0,"v8":"lean","msg":"pod running"}',
      'tencs-b: {"level":"info","time":"T3","peers":0,"v8":"default","msg":"pod running"}',
      'tencs-a: {"level":"info","time":"T4","eventLoopUtilization":0.42,"msg":"busy: V8 lean mode ends (TurboFan on)"}',
      'tencs-b: not json',
      'tencs-b: {"level":"info","time":"T5","msg":"lean mode ends", "broken',
      'tenc pod: single instance: another tenc pod is running',
    ];
    expect(leanRecords(lines)).toEqual([
      'tencs-a T2 pod running (v8 lean)',
      'tencs-b T3 pod running (v8 default)',
      'tencs-a T4 busy: V8 lean mode ends (TurboFan on) (event loop 0.42)',
    ]);
    expect(leanRecords([])).toEqual([]);
  });
});
