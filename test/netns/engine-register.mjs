// `node --import ./test/netns/engine-register.mjs child.ts`: see engine-hooks.mjs.
import { register } from 'node:module';

register('./engine-hooks.mjs', import.meta.url);
