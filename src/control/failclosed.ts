/**
 * A pod's fail-closed state, from its config: one definition for the two places that
 * put it in place. `tenc pod` (control/pod.ts, start steps 4 and 4b) makes it before
 * its TUN exists; the node agent (agent/agent.ts, CNI ADD) makes it in a new pod's
 * netns before it starts the proxy, which then takes it over (PolicyRouting adopts the
 * rule and the guards, Enforcement replaces the table in one transaction).
 * Pure; light to import (the agent does not load the data plane).
 */
import type { PodConfig } from './config.js';
import { guardBatch } from '../routing/policy.js';
import { installScript } from '../routing/enforce.js';

/** Every peer's allowed IPs and the services' VIPs of a config (Pod.destinations at start). */
export function configDestinations(config: PodConfig): string[] {
  const out: string[] = [];
  for (const p of config.peers) out.push(...p.allowedIps);
  for (const s of config.services) out.push(`${s.vip}/${s.vip.includes(':') ? 128 : 32}`);
  return out;
}

/**
 * The fail-closed state of a config: what runPod puts in place before its TUN exists
 * (steps 4 and 4b), and what the node agent puts in place in a new pod's netns before
 * it starts the proxy (failClosedScripts), so there is one definition of it.
 *   guards   the rule and an unreachable guard for each: the peers' allowed IPs, the
 *            service VIPs and dns.classifyCidrs (with the DNS proxy)
 *   project  enforcement's project set: those destinations and the members
 *   classify enforcement's classify set: dns.classifyCidrs
 */
export function failClosedState(config: PodConfig): { guards: string[]; project: string[]; classify: string[] } {
  const classify = config.dns.enabled ? config.dns.classifyCidrs : [];
  const destinations = configDestinations(config);
  return { guards: [...destinations, ...classify], project: [...destinations, ...config.members], classify };
}

/**
 * failClosedState rendered for a caller outside the pod: `ip -batch` lines per family
 * (guards, then the rule) and the nft script (the enforcement table, replacing any of
 * that name in one transaction). The proxy's start takes both over: it adopts the
 * rule and guards (PolicyRouting.removeResidue) and replaces the table atomically.
 */
export function failClosedScripts(config: PodConfig): { ip: Record<4 | 6, string[]>; nft: string } {
  const st = failClosedState(config);
  return {
    ip: guardBatch({ table: config.table, priority: config.rulePriority, fwmark: config.fwmark }, st.guards),
    nft: installScript(
      { ifname: config.interface, listenPort: config.listenPort, fwmark: config.fwmark, input: config.enforce },
      { project: st.project, classify: st.classify },
    ),
  };
}
