/**
 * The README's command line and switch tables against the code, so the two do not
 * drift apart again (an audit found flags, commands and switches the README lacked):
 * every command of `tenc --help`, every flag of each command's synopsis, and every
 * data-path switch native/engine_js.c reads are named in the README.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { COMMAND_HELP, USAGE } from '../../src/cli/help.js';

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

  it('every command of `tenc --help` is in the README\'s command table', () => {
    const listed = [...USAGE.split('\nCommands:\n')[1]!.split('\n\n')[0]!.matchAll(/^ {2}(\S+) /gm)].map((m) => m[1]!);
    expect(listed.length).toBeGreaterThan(10);
    const missing = listed.filter((c) => !commandLine.includes(`\`tenc ${c}`) && !commandLine.includes(`, \`tenc ${c}\``));
    expect(missing).toEqual([]);
  });

  it("every flag of each command's synopsis is in the README's command line section", () => {
    const missing: string[] = [];
    for (const [cmd, text] of Object.entries(COMMAND_HELP)) {
      const synopsis = text.split('\n\n')[0]!; // the Usage: lines
      for (const m of synopsis.matchAll(/--[a-z][a-z-]*/g)) if (!commandLine.includes(m[0]) && m[0] !== '--help') missing.push(`${cmd} ${m[0]}`);
    }
    expect(missing).toEqual([]);
  });

  it('every data-path switch engine_js.c reads has a row in the switch table', () => {
    const src = readFileSync(join(root, 'native', 'engine_js.c'), 'utf8');
    const read = [...src.matchAll(/env_(?:switch|uint)\("(TENC_[A-Z0-9_]+)"/g)].map((m) => m[1]!);
    expect(read.length).toBeGreaterThan(5);
    const missing = read.filter((n) => !readme.includes(`\n| \`${n}\` |`));
    expect(missing).toEqual([]);
  });
});
