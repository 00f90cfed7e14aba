/** A Markdown table with columns padded for reading in a terminal; first column left, others right-aligned. */
export function markdownTable(header: string[], rows: string[][]): string {
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => (r[c] ?? '').length), 3));
  const cell = (s: string, c: number): string => (c === 0 ? s.padEnd(widths[c]) : s.padStart(widths[c]));
  const line = (r: string[]): string => '| ' + r.map((s, c) => cell(s, c)).join(' | ') + ' |';
  const rule = '|' + widths.map((w, c) => (c === 0 ? ':' + '-'.repeat(w + 1) : '-'.repeat(w + 1) + ':')).join('|') + '|';
  return [line(header), rule, ...rows.map(line)].join('\n');
}
