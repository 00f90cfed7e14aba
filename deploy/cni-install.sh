#!/bin/bash
# Installs (or removes) tenc's CNI plugin on a node: the plugin binary into
# CNI_BIN_DIR and a chained {"type":"tenc"} entry at the end of the "plugins" of
# the node's active conflist in CNI_CONF_DIR (the first config file by name, as
# the container runtime picks it). Idempotent: running it again changes nothing
# (an older tenc entry is replaced, never duplicated). Files are replaced
# atomically (temp file in the same directory, then rename), keeping their mode.
#
#   cni-install.sh install     wait up to CNI_WAIT s (default 300) for the primary
#                              CNI's config, then install
#   cni-install.sh uninstall   remove the entry from every conflist and the binary
#   cni-install.sh keep        install, then keep it so: every CNI_RECHECK s (default 1)
#                              look at the active config (a cheap stat) and, when it
#                              changed, chain the entry again. The cluster's network
#                              plugin rewrites its conflist when it restarts (kindnetd,
#                              Calico's installer, an upgrade): without this the tenc entry
#                              would be gone and new pods would start without tenc.
#                              A config it cannot edit (or refuses, below) is reported and
#                              tried again when it changes; exits 0 on SIGTERM.
#
# TENC_CNI_MODE=unchained (OpenShift: the network operator owns the CNI config, Multus
# calls tenc through a NetworkAttachmentDefinition, deploy/openshift/): the same three
# commands for the plugin binary only; no CNI config is read, waited for or edited
# (nothing is chained into Multus' 00-multus.conf), and keep watches the binary alone.
# Default: chained.
#
# Environment: CNI_BIN_DIR (/opt/cni/bin), CNI_CONF_DIR (/etc/cni/net.d),
# TENC_CNI_SRC (/opt/tenc/cni/tenc in the image: the static executable cni/build.sh
# makes from cni/tenc-cni.c; it needs nothing on the host but the agent's node socket
# /run/tenc/agent.sock, the default agentSocket of the entry),
# TENC_CNI_ENTRY (the JSON object chained in; default {"type":"tenc"}),
# TENC_CNI_STATUS (a file of one line: "ready: ..." while the tenc entry is chained, or
# in unchained mode; "not ready: REASON" otherwise; default: none written. The
# DaemonSet's cni-keeper readinessProbe reads it).
# A conflist whose cniVersion (or any of its cniVersions) the plugin does not speak is
# refused, named, and left as it is: chained into it, tenc would fail every pod's ADD
# on the node, in every namespace (kube-system included). That refusal does not fail
# install (exit 0: the agent must run on the node, to report the protected pods that
# start there without tenc), but TENC_CNI_STATUS says "not ready" and keep tries again
# each time the config changes.
# Exit: 0 done (or that refusal), 1 failure (named), 2 usage.
set -euo pipefail

# The cniVersions the plugin speaks, oldest first: cni/tenc-cni.c VERSIONS and
# src/cni/skeleton.ts SUPPORTED_VERSIONS (test/unit/cni-versions.test.ts holds the
# three equal). Not a setting: the plugin refuses any other.
readonly PLUGIN_VERSIONS='0.3.0 0.3.1 0.4.0 1.0.0 1.1.0'

CNI_BIN_DIR=${CNI_BIN_DIR:-/opt/cni/bin}
CNI_CONF_DIR=${CNI_CONF_DIR:-/etc/cni/net.d}
TENC_CNI_SRC=${TENC_CNI_SRC:-/opt/tenc/cni/tenc}
TENC_CNI_ENTRY=${TENC_CNI_ENTRY:-'{"type":"tenc"}'}
CNI_WAIT=${CNI_WAIT:-300}
CNI_RECHECK=${CNI_RECHECK:-1}
TENC_CNI_MODE=${TENC_CNI_MODE:-chained}
TENC_CNI_STATUS=${TENC_CNI_STATUS:-}

say() { echo "tenc cni-install: $*" >&2; }

# status ready|'not ready' TEXT: TENC_CNI_STATUS replaced (renamed over: a probe never
# reads half a line)
status() {
  [ -n "$TENC_CNI_STATUS" ] || return 0
  { printf '%s: %s\n' "$1" "$2" >"$TENC_CNI_STATUS.tmp" && mv -f "$TENC_CNI_STATUS.tmp" "$TENC_CNI_STATUS"; } ||
    say "cannot write the status file $TENC_CNI_STATUS"
}
die() { say "$*"; status 'not ready' "$*"; exit 1; }

case "$TENC_CNI_MODE" in
  chained | unchained) ;;
  *) die "TENC_CNI_MODE: '$TENC_CNI_MODE' is not chained or unchained" ;;
esac

# The config the runtime uses: the first *.conf, *.conflist or *.json by name.
active_conf() {
  local f
  for f in $(ls -1 "$CNI_CONF_DIR" 2>/dev/null | LC_ALL=C sort); do
    case "$f" in *.conf | *.conflist | *.json) echo "$CNI_CONF_DIR/$f"; return 0 ;; esac
  done
  return 1
}

# edit_conf FILE add|remove: rewrites FILE's plugins list; prints "changed" or "unchanged".
# A failure is said on stderr and printed (FILE: why) on stdout; exit 3 for a conflist
# of a cniVersion the plugin does not speak (refused, untouched), 1 for the others.
edit_conf() {
  node - "$1" "$2" "$TENC_CNI_ENTRY" "$PLUGIN_VERSIONS" <<'JS'
const fs = require('node:fs');
const path = require('node:path');
const [file, op, entryJson, pluginVersions] = process.argv.slice(2);
const fail = (m, code = 1) => {
  process.stderr.write(`tenc cni-install: ${file}: ${m}\n`);
  process.stdout.write(`${file}: ${m}\n`);
  process.exit(code);
};
const refuse = (m) => fail(m, 3);
let conf;
try { conf = JSON.parse(fs.readFileSync(file, 'utf8')); } catch (e) { fail(`not JSON: ${e.message}`); }
if (!conf || typeof conf !== 'object' || !Array.isArray(conf.plugins)) {
  if (op === 'remove') { console.log('unchanged'); process.exit(0); }
  fail('not a conflist (no "plugins" list): tenc chains itself into a conflist only; convert the single-plugin .conf to a .conflist first');
}
let entry;
try { entry = JSON.parse(entryJson); } catch (e) { fail(`TENC_CNI_ENTRY is not JSON: ${e.message}`); }
if (!entry || entry.type !== 'tenc') fail('TENC_CNI_ENTRY must be an object with "type": "tenc"');
if (op === 'add') {
  // the runtime gives every plugin of the list the list's cniVersion (libcni 1.2 and
  // later: the highest of cniVersion and cniVersions it knows): each must be one the
  // plugin speaks, or every pod ADD on the node fails
  const supported = pluginVersions.split(' ');
  const why = `: not chaining tenc into it, the plugin would fail every pod ADD on the node (supported: ${supported.join(', ')})` +
    (conf.plugins.some((p) => p && p.type === 'tenc') ? '; it already holds a tenc entry, which fails them now: remove that entry' : '');
  const v = conf.cniVersion;
  if (v === undefined) refuse(`cniVersion: missing${why}`);
  if (typeof v !== 'string' || !supported.includes(v)) refuse(`cniVersion ${JSON.stringify(v)} is not supported by the tenc plugin${why}`);
  if (conf.cniVersions !== undefined) {
    const bad = Array.isArray(conf.cniVersions) ? conf.cniVersions.filter((x) => !supported.includes(x)) : [conf.cniVersions];
    if (bad.length) refuse(`cniVersions: ${bad.map((x) => JSON.stringify(x)).join(', ')} not supported by the tenc plugin${why}`);
  }
}
const before = JSON.stringify(conf.plugins);
const others = conf.plugins.filter((p) => !(p && p.type === 'tenc'));
conf.plugins = op === 'add' ? [...others, entry] : others;
if (JSON.stringify(conf.plugins) === before) { console.log('unchanged'); process.exit(0); }
const tmp = path.join(path.dirname(file), `.${path.basename(file)}.tenc-tmp`);
fs.writeFileSync(tmp, JSON.stringify(conf, null, 2) + '\n', { mode: fs.statSync(file).mode & 0o777 });
fs.renameSync(tmp, file);
console.log('changed');
JS
}

install_binary() {
  if cmp -s "$TENC_CNI_SRC" "$CNI_BIN_DIR/tenc"; then
    say "$CNI_BIN_DIR/tenc is current"
  else
    cp "$TENC_CNI_SRC" "$CNI_BIN_DIR/.tenc.tmp"
    chmod 0755 "$CNI_BIN_DIR/.tenc.tmp"
    mv -f "$CNI_BIN_DIR/.tenc.tmp" "$CNI_BIN_DIR/tenc"
    say "installed $CNI_BIN_DIR/tenc"
  fi
}

install() {
  [ -f "$TENC_CNI_SRC" ] || die "the plugin launcher $TENC_CNI_SRC does not exist"
  [ -d "$CNI_BIN_DIR" ] || die "CNI_BIN_DIR $CNI_BIN_DIR is not a directory"
  if [ "$TENC_CNI_MODE" = unchained ]; then
    install_binary
    say "unchained: no CNI config edited (a NetworkAttachmentDefinition of type tenc, \"unchained\": true, has Multus call it)"
    status ready "unchained: $CNI_BIN_DIR/tenc installed, no CNI config edited"
    return 0
  fi
  local conf waited=0
  until conf=$(active_conf); do
    [ "$waited" -ge "$CNI_WAIT" ] && die "no CNI config in $CNI_CONF_DIR after ${CNI_WAIT}s (is the cluster's network plugin installed?)"
    if [ "$waited" -eq 0 ]; then
      say "waiting for the primary CNI config in $CNI_CONF_DIR"
      status 'not ready' "tenc not chained yet: waiting for the primary CNI config in $CNI_CONF_DIR"
    fi
    sleep 1
    waited=$((waited + 1))
  done
  install_binary
  case "$conf" in *.conflist | *.json) ;; *) die "$conf: the active CNI config is a single-plugin .conf; tenc chains itself into a .conflist only" ;; esac
  chain "$conf" || {
    local rc=$?
    [ "$rc" -eq 3 ] || exit "$rc"
    say "$conf: tenc NOT chained: pods that start on this node run without tenc (the agent reports the protected ones) until the config is of a cniVersion the plugin speaks"
  }
  return 0
}

# chain CONF: the tenc entry into CONF, said and written to the status file; returns
# edit_conf's code (0 chained, 3 refused for its cniVersion, 1 another failure)
chain() {
  local r rc=0
  r=$(edit_conf "$1" add) || rc=$?
  if [ "$rc" -eq 0 ]; then
    say "$1: tenc entry $r"
    status ready "chained into $1"
  else
    status 'not ready' "tenc not chained: ${r:-$1: cannot edit it}"
  fi
  return "$rc"
}

uninstall() {
  local f r
  # unchained: no config was edited, none is touched now
  if [ "$TENC_CNI_MODE" = chained ]; then
    for f in "$CNI_CONF_DIR"/*.conflist "$CNI_CONF_DIR"/*.json; do
      [ -f "$f" ] || continue
      r=$(edit_conf "$f" remove)
      [ "$r" = changed ] && say "$f: tenc entry removed"
    done
  fi
  if [ -e "$CNI_BIN_DIR/tenc" ]; then
    rm -f "$CNI_BIN_DIR/tenc"
    say "removed $CNI_BIN_DIR/tenc"
  fi
  return 0
}

# What the runtime reads, as a cheap signature: the active config's name, inode, size
# and mtime, and the launcher's (a rename by the primary CNI changes the inode).
signature() {
  local conf
  if [ "$TENC_CNI_MODE" = unchained ]; then
    stat -c '%n %i %s %.9Y' "$CNI_BIN_DIR/tenc" 2>/dev/null || echo gone
    return 0
  fi
  conf=$(active_conf) || { echo none; return 0; }
  stat -c '%n %i %s %.9Y' "$conf" "$CNI_BIN_DIR/tenc" 2>/dev/null || echo "gone $conf"
}

keep() {
  [[ "$CNI_RECHECK" =~ ^[0-9]+(\.[0-9]+)?$ ]] && [ "$CNI_RECHECK" != 0 ] || die "CNI_RECHECK: '$CNI_RECHECK' is not a number of seconds above 0"
  # first: as a container's PID 1, bash ignores a SIGTERM it has no trap for
  trap 'say "stopped"; exit 0' TERM INT
  install
  # the signature is taken before each look, so a change made during one (or between
  # the install and the first look) is seen the next time; our own edit costs one more
  # look, which finds the entry in place. A conflist refused for its cniVersion is no
  # exit: looked at again (and refused again) when it changes; the status file says
  # "not ready" until tenc is chained
  local last='' now conf r
  while :; do
    now=$(signature)
    if [ "$now" = "$last" ]; then
      sleep "$CNI_RECHECK" &
      wait $! || true
      continue
    fi
    last=$now
    if [ "$TENC_CNI_MODE" = unchained ]; then
      if ! cmp -s "$TENC_CNI_SRC" "$CNI_BIN_DIR/tenc"; then
        if cp "$TENC_CNI_SRC" "$CNI_BIN_DIR/.tenc.tmp" && chmod 0755 "$CNI_BIN_DIR/.tenc.tmp" && mv -f "$CNI_BIN_DIR/.tenc.tmp" "$CNI_BIN_DIR/tenc"; then
          say "installed $CNI_BIN_DIR/tenc again"
        fi
      fi
    elif conf=$(active_conf); then
      # the launcher first (a node's image cleanup, an upgrade), then the entry
      if ! cmp -s "$TENC_CNI_SRC" "$CNI_BIN_DIR/tenc"; then
        if cp "$TENC_CNI_SRC" "$CNI_BIN_DIR/.tenc.tmp" && chmod 0755 "$CNI_BIN_DIR/.tenc.tmp" && mv -f "$CNI_BIN_DIR/.tenc.tmp" "$CNI_BIN_DIR/tenc"; then
          say "installed $CNI_BIN_DIR/tenc again"
        fi
      fi
      case "$conf" in
        *.conflist | *.json)
          # chain's own "tenc entry unchanged" is not said on every look
          if r=$(chain "$conf" 2>&1); then
            [ "${r% changed}" != "$r" ] && say "$conf: the tenc entry was gone (the network plugin rewrote its config): chained again"
          else
            echo "$r" >&2
            say "$conf: cannot chain the tenc entry now: tried again when it changes"
          fi ;;
        *)
          say "$conf: the active CNI config is a single-plugin .conf; tenc chains itself into a .conflist only"
          status 'not ready' "tenc not chained: $conf is a single-plugin .conf; tenc chains itself into a .conflist only" ;;
      esac
    else
      say "no CNI config in $CNI_CONF_DIR: waiting for one"
      status 'not ready' "tenc not chained: no CNI config in $CNI_CONF_DIR"
    fi
  done
}

case "${1:-}" in
  install) install ;;
  keep) keep ;;
  uninstall) uninstall ;;
  *) echo "usage: $0 install|uninstall|keep" >&2; exit 2 ;;
esac
