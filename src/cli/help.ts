/** The help texts of `tenc` and each of its commands. */

export const EXIT_CODES = `Exit codes:
  0  success
  1  failure at run time (socket unreachable, pod failed to start, bad key on stdin)
  2  usage error or invalid config (nothing was changed)`;

export const USAGE = `Usage: tenc <command> [options]

tenc is a user-space encrypting TUN proxy for Kubernetes pods, speaking the
WireGuard protocol. One \`tenc pod\` process runs in each pod's network namespace.

Commands:
  pod           run the per-pod process (tunnel, routing, control socket)
  status        show the running pod's interface and peers (like \`wg show\`)
  set-peer      add or update a peer of the running pod
  remove-peer   remove a peer from the running pod
  rekey         start a new handshake with a peer (or every peer) now
  agent         the node agent: run and configure the pod proxies on a node (CNI node socket)
  cni           the chained CNI plugin (run by the container runtime through a launcher)
  check-config  validate a config file and exit
  genkey        print a new private key (base64)
  pubkey        read a private key on stdin, print its public key
  genpsk        print a new pre-shared key (base64)
  k8s           Kubernetes helpers: \`tenc k8s create-psk NAMESPACE\` prints a namespace's psk Secret
  help          show this help, or \`tenc help <command>\`

Options:
  -h, --help     show help (also after a command: \`tenc status --help\`)
  -V, --version  print the version

Example:
  (umask 077; tenc genpsk > psk) && tenc check-config pod-a.json && tenc pod --config pod-a.json

${EXIT_CODES}
`;

export const COMMAND_HELP: Record<string, string> = {
  agent: `Usage: tenc agent --registry SPEC --node NODE [--project LIST] [--socket PATH] [--run-dir DIR] [--classify-cidrs LIST]
                  [--cluster-dns LIST] [--cluster-domain DOMAIN] [--cni-wait fail-closed|proxy] [--metrics-address HOST:PORT] [--log-level LEVEL]
       tenc agent status [--json] [--node NODE | --run-dir DIR] [--project PROJECT]

The node agent, one per node, for every protected project (the registry's
projects, or only --project). Serves the node socket on which the CNI plugin
(\`tenc cni\`) registers each pod's network namespace at sandbox creation (ADD)
and unregisters it (DEL); at ADD it makes the pod fail-closed itself (policy
rule, unreachable guards, nftables table in the pod's namespace), answers, and
starts \`tenc pod\` (enforcement on, fail-closed on any stop) there, which takes
that state over; publishes each pod's public key and endpoint, gives every pod its
peers and services over its control socket and follows changes within seconds.
A pod proxy that dies is started again. The pods of a project on the node run
in one \`tenc pod --host\` process, each in its own namespace (README "Pod host";
TENC_POD_HOST=0 in the agent's environment: a process per pod). Without pod hosts,
or while they keep failing, each project keeps one \`tenc pod --standby\` ready,
handed the next pod to start (README "Standby proxies"; TENC_POD_STANDBY=0: off).
The registrations and the proxies' pid +
start time are saved (0600) under the run dir: a restarted agent adopts them.
SIGINT/SIGTERM stop the agent only (and its standbys): the proxies keep running, fail-closed, with
their keys published. Private keys never leave the pod proxies. Logs are JSON
lines on stderr.

Options:
  -r, --registry SPEC      the registry backend: dir:PATH (or a bare PATH), the directory
                           registry (netns-scripts/cluster.sh: <state>/registry)
                           or etcd:https://HOST:2379,...[?ca=F&cert=F&key=F&prefix=/tenc/
                           &user=U&password-file=F&ttl=S], the etcd registry (the psk is
                           written to <run-dir>/psk/, mode 0600; no user or password in an
                           endpoint's URL: user= and password-file=), or
                           kubernetes[:KUBECONFIG], the Kubernetes API (no path: $KUBECONFIG,
                           ~/.kube/config, or the pod's service account)
  -n, --node NODE          this node's name (pods with spec.nodeName NODE)
  -p, --project LIST       only these projects (comma-separated; default every protected one)
  -s, --socket PATH        the node socket for the CNI plugin (default /run/tenc/agent.sock,
                           mode 0600)
      --run-dir DIR        state file, pod configs and logs (default /run/tenc/agent-NODE); an
                           absolute path, made 0700 when missing; an existing one must be root's
                           or the agent user's and writable by its owner only (its mode is kept)
      --classify-cidrs LIST
                           comma-separated cluster ranges (pod CIDRs, service CIDR) for the
                           pods' dns.classifyCidrs: guarded (fail closed) from the pod's
                           start; an address in them no peer claims is classified on first
                           use (bypassed when not the project's, dropped when it is but has
                           no peer); each at most /4 wide (IPv6: /8), at most 64; default none.
                           They need the pods' DNS proxy: on Kubernetes give --cluster-dns too
      --cluster-dns LIST   the cluster DNS service's addresses (kubelet's clusterDNS, e.g.
                           10.96.0.10; at most 3): the DNS proxy's upstreams, and the queries
                           it intercepts, for pods without /etc/netns/<netns>/resolv.conf
                           (every pod on Kubernetes); without it those pods get no DNS proxy
                           and no classify ranges; default none
      --cluster-domain DOMAIN
                           the cluster domain: a project's names are <project>.svc.DOMAIN
                           (default cluster.local)
      --cni-wait fail-closed|proxy
                           when ADD answers: once the agent made the pod fail-closed, its
                           proxy starting in the background (fail-closed, the default), or
                           only once the proxy answers on its control socket (proxy)
      --metrics-address HOST:PORT
                           serve Prometheus /metrics there: every pod of the run directory
                           (asked over its control socket at each scrape) and the agent's own
                           (README "Metrics"); [::1]:PORT for IPv6
  -l, --log-level LEVEL    fatal|error|warn|info|debug|trace|silent (default info)
  -h, --help               show this help

\`tenc agent status\` prints one row per pod of the node's agents (every
/run/tenc/agent-* directory, or the one given): proxy pid, key fingerprint,
peers and those with a live session, latest handshake, drops, fail-closed
(enforcement on). It asks the pods' control sockets, so it works while the
agent is down; -j/--json prints the rows as JSON. Exit 1 when a pod does not answer.

Example:
  tenc agent --registry /run/tenc-cluster/tc/registry --node node1 --socket /run/tenc-cluster/tc/node1.sock

${EXIT_CODES}
`,
  pod: `Usage: tenc pod --config FILE [--log-level LEVEL] [--metrics-address HOST:PORT]
       tenc pod --standby [--log-level LEVEL] [--metrics-address HOST:PORT]
       tenc pod --host [--log-level LEVEL]

Runs the per-pod process: generates the private key in memory and prints
\`public-key <base64>\` as the first line on stdout, reads the psk file, opens
the TUN interface and UDP socket, installs policy routing and serves the control
socket. SIGINT/SIGTERM tear everything down in reverse order and exit 0.
Logs are JSON lines on stderr.

With --standby (what the node agent starts ahead, README "Standby proxies") it
loads everything, prints \`standby ready\` and waits for one line on stdin:
{"netns":PATH,"config":FILE,"log":FILE} (log optional). Then it enters that
network namespace, sends its stderr to the log file and runs as with --config.
End of stdin before that line: exit 0, nothing done.

With --host it runs several pods in this one process, each in its own network
namespace (README "Pod host"): it prints \`host ready\`, then takes lines on
stdin, {"netns":PATH,"config":FILE,"log":FILE[,"seq":N]} to start a pod and
{"stop":FILE} to stop the pod of that config, and prints one JSON object per
line: {"pod":FILE,"publicKey":KEY}, {"pod":FILE,"exited":CODE[,"error":TEXT]}
(code 2: the line's config, netns or log at fault, nothing started), each with
the "seq" of its start line when that had one, or
{"error":TEXT} for a line that is no request. SIGINT/SIGTERM stop every pod;
at the end of stdin it exits once its last pod has: 0 when every pod it ran
exited 0 (a refused start ran nothing), else 1.

Options:
  -c, --config FILE        the pod's JSON config (see README "Config file")
      --standby            wait for a handoff line on stdin instead of --config
      --host               run the pods of the lines on stdin, each in its namespace
  -l, --log-level LEVEL    fatal|error|warn|info|debug|trace|silent (overrides the config)
      --metrics-address HOST:PORT
                           serve this pod's Prometheus /metrics there (where no agent
                           runs; README "Metrics"); labels pod=$TENC_POD_NAME or the host name
  -h, --help               show this help

Example:
  ip netns exec tenc-a tenc pod --config /etc/tenc/pod-a.json --log-level debug

${EXIT_CODES}
`,
  status: `Usage: tenc status [--json] [--socket PATH | --interface NAME]

Shows the running pod's interface, listening port, public key, drops and
handshake failures by reason and, per peer, endpoint, allowed IPs, latest
handshake, transfer and drops by reason. Without
--socket it finds the pod of the current network namespace under /run/tenc.

Options:
  -j, --json              print the raw status report as JSON
  -s, --socket PATH       the control socket (default /run/tenc/<ifname>-<netns inode>.sock)
  -i, --interface NAME    pick the pod by interface name in this network namespace
  -h, --help              show this help

Example:
  ip netns exec tenc-a tenc status

${EXIT_CODES}
`,
  'set-peer': `Usage: tenc set-peer PUBLIC_KEY [--endpoint IP:PORT] [--allowed-ips CIDR[,CIDR...]]
                     [--persistent-keepalive SECONDS] [--socket PATH | --interface NAME]

Adds a peer to the running pod, or updates the peer with that public key: the
options given replace the peer's endpoint, allowed IPs or keepalive; options not
given leave them as they are (as \`wg set\`).

Options:
  -e, --endpoint IP:PORT            peer's UDP endpoint, 10.0.0.2:51820 or [fd00::2]:51820
  -a, --allowed-ips LIST            comma-separated CIDRs routed to and accepted from the peer
  -k, --persistent-keepalive SECS   0 (off) .. 65535
  -s, --socket PATH                 the control socket
  -i, --interface NAME              pick the pod by interface name
  -h, --help                        show this help

Example:
  tenc set-peer hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo= --endpoint 10.77.0.2:51820 --allowed-ips 10.77.0.2/32

${EXIT_CODES}
`,
  'remove-peer': `Usage: tenc remove-peer PUBLIC_KEY [--socket PATH | --interface NAME]

Removes the peer with that public key from the running pod (its keys are zeroed,
its routes removed).

Options:
  -s, --socket PATH       the control socket
  -i, --interface NAME    pick the pod by interface name
  -h, --help              show this help

Example:
  tenc remove-peer hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=

${EXIT_CODES}
`,
  rekey: `Usage: tenc rekey [PUBLIC_KEY] [--socket PATH | --interface NAME]

Starts a new handshake with the peer with that public key, or with every peer
when none is given, although the current session keys are still valid: new
session keys replace the old ones without interrupting traffic. Prints one line
per peer: \`KEY: initiation sent\`, or \`initiation pending\` when the protocol's
limit of one initiation per 5 seconds (or a missing endpoint) delays it; a
pending initiation goes out as soon as it is allowed. See \`tenc status\` for
the latest handshake.

Options:
  -s, --socket PATH       the control socket
  -i, --interface NAME    pick the pod by interface name
  -h, --help              show this help

Example:
  tenc rekey hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=

${EXIT_CODES}
`,
  'check-config': `Usage: tenc check-config FILE

Validates a config file (including that the psk file is readable and holds a
key) and prints \`FILE: ok\`; on errors prints one \`FILE: field: problem\` line
each. Changes nothing.

Options:
  -h, --help   show this help

Example:
  tenc check-config pod-a.json

${EXIT_CODES}
`,
  genkey: `Usage: tenc genkey

Prints a new random Curve25519 private key in base64 (as \`wg genkey\`).
Keep it secret; \`tenc pod\` does not need it (it makes its own in memory).

Options:
  -h, --help   show this help

Example:
  tenc genkey | tee private.key | tenc pubkey

${EXIT_CODES}
`,
  pubkey: `Usage: tenc pubkey < PRIVATE_KEY

Reads a base64 private key on stdin and prints its public key in base64 (as
\`wg pubkey\`).

Options:
  -h, --help   show this help

Example:
  tenc genkey | tenc pubkey

${EXIT_CODES}
`,
  genpsk: `Usage: tenc genpsk

Prints a new random 32-byte pre-shared key in base64 (as \`wg genpsk\`). All pods
of a project share one; put it in the file named by "pskFile".

Options:
  -h, --help   show this help

Example:
  umask 077; tenc genpsk > /etc/tenc/psk

${EXIT_CODES}
`,
  cni: `Usage: tenc cni     (run by the container runtime: CNI_COMMAND and the others in the
                 environment, the network configuration on stdin)

The chained CNI plugin: put it after the plugin that gives the pod its interface
and address. ADD registers the pod's network namespace with the node agent over
the agent's node socket and prints prevResult unchanged once the agent has made
the pod fail-closed (or says its namespace is not protected); DEL unregisters it
(an unknown container or a second DEL is success); CHECK: the pod's proxy runs and
answers (a container the agent has not registered: error code 3; cniVersion
0.4.0 or later, else error code 1); STATUS: the agent answers (else error code
50); VERSION: 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0; GC (1.1.0): accepted, nothing to
do (the agent drops a container at its DEL). When the agent
is not reachable, or has not made the pod fail-closed within
timeoutMs, ADD, DEL and CHECK fail with error code 11 (try again later), so the
runtime retries and the pod's containers never start unprotected. Errors are the spec's
JSON {cniVersion, code, msg, details} on stdout, exit 1. On a node, CNI_PATH gets
the static C plugin built by cni/build.sh, which speaks the same protocol
(deploy/cni-install.sh chains it into the node's conflist; README "How a node's
runtime calls tenc").

Conflist entry (every field optional; these are the defaults; for ADD and CHECK a
field that is neither these nor one of the spec's own, or a value out of range, is
error code 7; DEL ignores unknown fields and takes the default for a bad value, so
a pod can always be deleted):
  {"type": "tenc", "agentSocket": "/run/tenc/agent.sock", "timeoutMs": 5000, "unchained": false}
  agentSocket   the node agent's socket (\`tenc agent --socket\`), an absolute path
  timeoutMs     100..100000: the time the agent has to make the pod fail-closed
                (the plugin waits one second more for its answer; kubelet gives the
                whole CNI chain 2 minutes)
  unchained     true or false: true opts in to running alone, as Multus calls the plugin
                of a NetworkAttachmentDefinition (OpenShift), with no prevResult: the
                agent reads the pod's addresses in its netns, ADD prints an empty result;
                false (chained): a missing prevResult is error code 7

Options:
  -h, --help   show this help

Example:
  CNI_COMMAND=VERSION tenc cni < /dev/null

${EXIT_CODES}
`,
  k8s: `Usage: tenc k8s create-psk NAMESPACE

Helpers for tenc on a Kubernetes cluster (README "Install on a cluster").

Commands:
  create-psk NAMESPACE   print the Secret tenc-psk of NAMESPACE with a fresh psk

Options:
  -h, --help   show this help (also \`tenc k8s create-psk --help\`)

Example:
  tenc k8s create-psk shop | kubectl create -f -

${EXIT_CODES}
`,
  'k8s create-psk': `Usage: tenc k8s create-psk NAMESPACE

Prints, on stdout only, the Secret tenc-psk of NAMESPACE (key "psk": a fresh random
32-byte pre-shared key in the \`wg genpsk\` form) as YAML for kubectl. Every pod of a
protected namespace (label tenc.io/protect=true) uses it; without a valid one the
namespace's pods stay fail-closed. The key is written nowhere else: pipe it straight
into kubectl. Use \`kubectl create\` (or \`replace\` to rotate), not \`apply\`: apply
keeps a copy of the whole object, key included, in its last-applied-configuration
annotation. The agents read the Secret again every 30 s and on any change of the
namespace; a proxy reads the key when it starts, so a new key reaches a pod when the
pod (or its proxy) starts again (README "Install on a cluster").

Options:
  -h, --help   show this help

Example:
  kubectl label namespace shop tenc.io/protect=true
  tenc k8s create-psk shop | kubectl create -f -
  kubectl -n tenc-system exec ds/tenc-agent -- tenc k8s create-psk shop | kubectl create -f -

${EXIT_CODES}
`,
  help: `Usage: tenc help [COMMAND [SUBCOMMAND]]

Shows the overview, or the help of one command (\`tenc help agent status\`,
\`tenc help k8s create-psk\`).

Options:
  -h, --help   show this help

Example:
  tenc help status

${EXIT_CODES}
`,
};
COMMAND_HELP['agent status'] = `Usage: tenc agent status [--json] [--node NODE | --run-dir DIR] [--project PROJECT]

One row per pod of the node's agents (like \`cilium encrypt status\`): namespace,
pod, proxy pid, public key fingerprint, peers and those with a live session
(handshake in the last 180 s), latest handshake, drops (all reasons) and
fail-closed (enforcement on: plaintext from the project outside the tunnel is
dropped). The pods are found in the agents' run directories (every
/run/tenc/agent-* by default) and asked over their control sockets, so this works
while the agent is down. Exit 1 when a pod does not answer.

Options:
  -j, --json               print the rows as JSON ({"pods": [...]})
  -n, --node NODE          only this node's agent (/run/tenc/agent-NODE)
      --run-dir DIR        only this run directory (instead of --node)
  -p, --project PROJECT    only this project's pods
  -h, --help               show this help

Example:
  tenc agent status --project alpha --node node1

${EXIT_CODES}
`;
