/**
 * `tenc pod` and `tenc agent` hold private keys, psks and session keys: before anything is
 * read, the process becomes non-dumpable (no core file, no ptrace or /proc/PID/mem by other
 * processes of its user; src/native.ts protectProcess).
 */
export async function protectSecrets(): Promise<void> {
  const { protectProcess } = await import('../native.js');
  const r = protectProcess();
  if (r.dumpable !== 0) throw new Error(`prctl(PR_SET_DUMPABLE, 0) read back ${r.dumpable}`);
}
