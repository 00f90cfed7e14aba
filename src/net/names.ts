/**
 * A node's name as Kubernetes allows it (spec.nodeName, the Node object's name): a
 * DNS-1123 subdomain (apimachinery validation.IsDNS1123Subdomain), at most 253
 * characters of lowercase letters, digits, "-" and ".", each part between dots
 * starting and ending with a letter or digit: `node1`, `ip-10-0-1-2.ec2.internal`, a
 * bare-metal FQDN. The one check for every place a node's name goes: `tenc agent
 * --node`, the registry's paths and keys (peers/<project>/<node>/,
 * /tenc/nodes/<node>/), a TencPeer's spec.nodeName. Such a name has no "/", is never
 * "." or ".." and holds no "..", so it is one path or key segment and never leaves
 * the directory or prefix it is put under.
 */
import { bad, ok, show, type Parsed } from './parsed.js';

export const NODE_NAME_MAX = 253;

/**
 * A DNS-1123 label's characters (a namespace's, a project's, a pod's, a policy's name):
 * lowercase letters, digits and "-", starting and ending with a letter or digit. Length
 * limits are the caller's.
 */
export const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

/** A Kubernetes namespace's name: a DNS-1123 label of at most 63 characters. */
export const NAMESPACE_NAME = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

const SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** The name as given, or why it is not a node's name. */
export function parseNodeName(v: unknown): Parsed<string> {
  if (typeof v !== 'string') return bad(`${show(v)} is not a string`);
  if (v.length > NODE_NAME_MAX) return bad(`${show(v, 64)} is not a node name (at most ${NODE_NAME_MAX} characters)`);
  if (!SUBDOMAIN.test(v)) return bad(`${show(v, 64)} is not a node name (lowercase letters, digits, "-" and ".", each part between dots starting and ending with a letter or digit)`);
  return ok(v);
}

export const isNodeName = (v: unknown): v is string => parseNodeName(v).ok;
