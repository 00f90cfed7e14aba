#!/usr/bin/env node
/** The `tenc` executable (package.json "bin": dist/src/cli/main.js). */
import { runCli } from './cli.js';

const argv = process.argv.slice(2);
const code = await runCli(argv);
// `tenc pod` has torn everything down by now: leave even if a library left a handle open.
// Other commands end naturally so piped stdout is flushed first.
if (argv[0] === 'pod') process.exit(code);
process.exitCode = code;
