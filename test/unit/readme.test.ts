/**
 * The README's command line and switch tables against the code, so the two do not
 * drift apart again (an audit found flags, commands and switches the README lacked):
 * every command of `tenc --help`, every flag of each command's synopsis, and every
 * data-path switch native/engine_js.c reads are named in the README, and every field
 * of the pod config has a row in the Config file table.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { COMMAND_HELP, USAGE } from '../../src/cli/help.js';
import { TOP_FIELDS } from '../../src/control/config.js';

const root = join(import.meta.dirname, '..', '..');
const readme = readFileSync(join(root, 'README.md'), 'utf8');

/** The text of the README's `## NAME` section, up to the next `## `. */
function section(name: string): string {
  const start = readme.indexOf(`\n## ${name}\n`);
  expect(start, `README section "${name}"`).toBeGreaterThanOrEqual(0);
  const end = readme.indexOf('\n## ', start + 1);
  return readme.slice(start, end < 0 ? undefined : end);
}

describe('README matches the code', () => {
  const commandLine = section('Command line');
  const rows = commandLine.split('\n').filter((l) => l.startsWith('| `tenc '));

  /** Each form of the help's synopses: its command words (`agent status`) and the flags of its lines. */
  const forms = new Map<string, Set<string>>();
  for (const text of Object.values(COMMAND_HELP)) {
    let form: string | undefined;
    for (const line of text.split('\n\n')[0]!.split('\n')) {
      const m = /^(?:Usage:)?\s*tenc ((?:[a-z][a-z0-9-]*)(?: [a-z][a-z0-9-]*)*)(.*)$/.exec(line);
      // a line of options without `tenc` continues the form above it
      if (m) form = m[1]!;
      else if (!/^\s+\[/.test(line)) form = undefined;
      if (form === undefined) continue;
      const flags = forms.get(form) ?? new Set<string>();
      for (const f of (m ? m[2]! : line).matchAll(/--[a-z][a-z-]*/g)) if (f[0] !== '--help') flags.add(f[0]);
      forms.set(form, flags);
    }
  }
  /** The table rows that show a form: `tenc WORDS` followed by an argument, a flag or the end of the code span. */
  const rowsOf = (words: string): string[] => rows.filter((r) => new RegExp(`\`tenc ${words}(\`| [^a-z])`).test(r));

  it('every command of `tenc --help` has a help, and every form of the helps has a row of its own', () => {
    const listed = [...USAGE.split('\nCommands:\n')[1]!.split('\n\n')[0]!.matchAll(/^ {2}(\S+) /gm)].map((m) => m[1]!);
    expect(listed.length).toBeGreaterThan(10);
    for (const c of listed) expect([...forms.keys()].some((f) => f === c || f.startsWith(`${c} `)), c).toBe(true);
    expect(forms.size).toBeGreaterThan(12);
    expect([...forms.keys()].filter((f) => rowsOf(f).length === 0)).toEqual([]);
  });

  it("every flag of a form's synopsis is in that form's row", () => {
    const missing: string[] = [];
    let checked = 0;
    for (const [words, flags] of forms) {
      const text = rowsOf(words).join('\n');
      for (const f of flags) {
        checked++;
        if (!text.includes(f)) missing.push(`${words} ${f}`);
      }
    }
    expect(checked).toBeGreaterThan(28);
    expect(missing).toEqual([]);
  });

  it('every data-path switch engine_js.c reads has a row in the switch table', () => {
    const src = readFileSync(join(root, 'native', 'engine_js.c'), 'utf8');
    const read = [...src.matchAll(/env_(?:switch|uint)\("(TENC_[A-Z0-9_]+)"/g)].map((m) => m[1]!);
    expect(read.length).toBeGreaterThan(5);
    const missing = read.filter((n) => !readme.includes(`\n| \`${n}\` |`));
    expect(missing).toEqual([]);
  });

  it('every field of the pod config has a row in the Config file table (the dns field had none)', () => {
    const table = section('Config file');
    const missing = TOP_FIELDS.filter((f) => !new RegExp(`\\n\\| \`${f}(\\.|\\[\\]|\`)`).test(table));
    expect(TOP_FIELDS.length).toBeGreaterThan(10);
    expect(missing).toEqual([]);
  });
});
