// A kustomize build of deploy/'s kustomizations, enough for what they use, so the tests
// need no kubectl (CI's Debian kubectl 1.20 has a kustomize too old for components):
//   - resources: files only (a directory or a URL: refused);
//   - images: name -> newName:newTag on the containers and init containers of pod templates;
//   - components (kind Component) of `images` and of `patches: - path: FILE`, FILE a strategic
//     merge patch of one resource, matched by apiVersion, kind, name and namespace, merged
//     as kustomize does for the pod template's lists: containers, initContainers, their env
//     and volumes by `name` (the patch's elements first, as kustomize orders them); maps
//     deep-merged, scalars replaced.
// Anything else (another kustomization field, a patch with a target, an inline or JSON 6902
// patch, a `$patch` directive, a null, a list it has no merge key for) throws: this never
// renders something other than kustomize would without saying so. Checked by hand against
// `kubectl kustomize` 1.32 (deploy/ with and without the openshift component).
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import yaml from 'js-yaml';

export type Obj = Record<string, any>;

export function loadDocs(file: string): Obj[] {
  return yaml.loadAll(readFileSync(file, 'utf8')).filter((d): d is Obj => !!d);
}

const fail = (m: string): never => {
  throw new Error(`kustomize-lite: ${m}`);
};

const isMap = (v: unknown): v is Obj => !!v && typeof v === 'object' && !Array.isArray(v);

function only(what: string, o: Obj, fields: string[]): void {
  const extra = Object.keys(o).filter((f) => !fields.includes(f));
  if (extra.length) fail(`${what}: field(s) not supported here: ${extra.join(', ')}`);
}

function kustomization(dir: string): Obj {
  const k = yaml.load(readFileSync(join(dir, 'kustomization.yaml'), 'utf8'));
  if (!isMap(k)) fail(`${dir}/kustomization.yaml is not a map`);
  return k as Obj;
}

/** The merge key of each list a patch may hold, by path ([] for a list's element): strategic merge as kustomize does it for these. */
const MERGE_KEYS: Record<string, string> = {
  'spec.template.spec.containers': 'name',
  'spec.template.spec.initContainers': 'name',
  'spec.template.spec.containers[].env': 'name',
  'spec.template.spec.initContainers[].env': 'name',
  'spec.template.spec.volumes': 'name',
};
/** The kinds a patch may target: those with a pod template at spec.template. */
const PATCHABLE = new Set(['apps/v1/DaemonSet', 'apps/v1/Deployment', 'apps/v1/StatefulSet']);

/** Strategic merge of `patch` into `dst` (in place) at `path`. */
function merge(dst: Obj, patch: Obj, path: string): void {
  for (const [k, v] of Object.entries(patch)) {
    const at = path ? `${path}.${k}` : k;
    if (k.startsWith('$')) fail(`patch directive ${at} not supported here`);
    if (v === null) fail(`${at}: null (delete) not supported here`);
    if (Array.isArray(v)) {
      const key = MERGE_KEYS[at];
      if (!key) fail(`${at}: a list this renderer has no merge key for (strategic merge not implemented here)`);
      if (dst[k] !== undefined && !Array.isArray(dst[k])) fail(`${at}: a list in the patch, not in the resource`);
      // kustomize's order (kyaml merge2): the patch's elements first (merged into the
      // resource's of the same key, or new), then the resource's others, in their order
      const list: Obj[] = dst[k] ?? [];
      const first: Obj[] = [];
      for (const e of v) {
        if (!isMap(e) || typeof e[key] !== 'string') fail(`${at}: element without its merge key ${key}: ${JSON.stringify(e)}`);
        if (first.some((x) => x[key] === e[key])) fail(`${at}: ${key} ${e[key]} twice in the patch`);
        const same = list.filter((x) => isMap(x) && x[key] === e[key]);
        if (same.length > 1) fail(`${at}: ${key} ${e[key]} twice in the resource`);
        if (same.length) merge(same[0], e, `${at}[]`);
        first.push(same.length ? same[0] : structuredClone(e));
      }
      dst[k] = [...first, ...list.filter((x) => !first.includes(x))];
    } else if (isMap(v)) {
      if (dst[k] === undefined) dst[k] = {};
      else if (!isMap(dst[k])) fail(`${at}: a map in the patch, not in the resource`);
      merge(dst[k], v, at);
    } else {
      if (isMap(dst[k]) || Array.isArray(dst[k])) fail(`${at}: a scalar in the patch, not in the resource`);
      dst[k] = v;
    }
  }
}

/** A strategic merge patch (a file of one object) applied to the one resource it names. */
function applyPatch(objs: Obj[], file: string): void {
  const docs = loadDocs(file);
  if (docs.length !== 1) fail(`${file}: ${docs.length} documents (one strategic merge patch per file here)`);
  const p = docs[0];
  if (!isMap(p) || typeof p.apiVersion !== 'string' || typeof p.kind !== 'string' || typeof p.metadata?.name !== 'string') {
    fail(`${file}: not a strategic merge patch of one object (apiVersion, kind, metadata.name)`);
  }
  const gvk = `${p.apiVersion}/${p.kind}`;
  if (!PATCHABLE.has(gvk)) fail(`${file}: patches of ${gvk} not supported here`);
  only(`${file} metadata`, p.metadata, ['name', 'namespace']);
  const targets = objs.filter((o) => o.apiVersion === p.apiVersion && o.kind === p.kind && o.metadata?.name === p.metadata.name && o.metadata?.namespace === p.metadata.namespace);
  if (targets.length !== 1) fail(`${file}: ${targets.length} resources match ${gvk} ${p.metadata.namespace ?? ''}/${p.metadata.name}`);
  const { apiVersion: _a, kind: _k, metadata: _m, ...rest } = p;
  merge(targets[0], structuredClone(rest), '');
}

function applyImages(objs: Obj[], images: Obj[]): void {
  for (const i of images) {
    only('images entry', i, ['name', 'newName', 'newTag']);
    if (typeof i.name !== 'string') fail(`images entry without a name: ${JSON.stringify(i)}`);
  }
  for (const o of objs) {
    const pod = o.spec?.template?.spec;
    for (const c of [...(pod?.containers ?? []), ...(pod?.initContainers ?? [])]) {
      if (images.some((i) => typeof c.image === 'string' && (c.image.startsWith(`${i.name}:`) || c.image.startsWith(`${i.name}@`)))) fail(`image ${c.image}: a tag or digest to rewrite, not supported here`);
      const img = images.find((i: Obj) => i.name === c.image);
      if (img) c.image = `${img.newName ?? img.name}:${img.newTag ?? 'latest'}`;
    }
  }
}

/** kustomize build DIR, for the kustomizations described above (and nothing else). */
export function render(dir: string): Obj[] {
  const k = kustomization(dir);
  if (k.kind !== 'Kustomization' || k.apiVersion !== 'kustomize.config.k8s.io/v1beta1') fail(`${dir}: not a Kustomization`);
  only(`${dir}/kustomization.yaml`, k, ['apiVersion', 'kind', 'resources', 'images', 'components']);
  const objs = ((k.resources ?? []) as string[]).flatMap((r) => {
    const f = join(dir, r);
    if (/^[a-z]+:\/\//.test(r) || !statSync(f).isFile()) fail(`${dir}: resource ${r}: only files are supported here`);
    return loadDocs(f);
  });
  // components in order, each a transformation of what is there so far (its patches,
  // then its images); the kustomization's own images last
  for (const c of (k.components ?? []) as string[]) {
    const cdir = join(dir, c);
    const ck = kustomization(cdir);
    if (ck.kind !== 'Component' || ck.apiVersion !== 'kustomize.config.k8s.io/v1alpha1') fail(`${cdir}: not a Component`);
    only(`${cdir}/kustomization.yaml`, ck, ['apiVersion', 'kind', 'images', 'patches']);
    for (const p of (ck.patches ?? []) as Obj[]) {
      if (!isMap(p)) fail(`${cdir}: patches entry ${JSON.stringify(p)}`);
      only(`${cdir}: patches entry`, p, ['path']);
      if (typeof p.path !== 'string') fail(`${cdir}: patches entry without a path`);
      applyPatch(objs, join(cdir, p.path));
    }
    applyImages(objs, ck.images ?? []);
  }
  applyImages(objs, k.images ?? []);
  return objs;
}
