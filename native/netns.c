/* netns.c: a standby `tenc pod` handed its pod (src/cli/standby.ts).
 *
 *   enterNetns(path)     -> undefined   setns(CLONE_NEWNET) of the calling (main) thread
 *   redirectStderr(path) -> undefined   fd 2 becomes PATH (O_APPEND|O_CREAT, 0600)
 *
 * A network namespace belongs to a thread, not to a process: setns() moves only the
 * thread that calls it. Threads made later by that thread (the engine's TX and RX
 * threads, node's dgram sockets, the TUN device) are in the new namespace; threads
 * that already ran are not: libuv's worker threads, on which spawn.c starts ip and
 * nft, may have started while the process stood by. So the namespace's fd is kept
 * (tenc_netns_fd) and spawn.c's worker enters it before each child: an ip started
 * from an older worker never configures the namespace the standby started in.
 * A second enterNetns is refused (EALREADY): a pod is handed over once. */
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include "modules.h"
#include "util.h"

/* -1 until enterNetns; read by spawn.c's worker threads. */
int tenc_netns_fd = -1;

static int get_path(napi_env env, napi_value v, char *buf, size_t cap, const char *what) {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, buf, cap, &len) != napi_ok) {
    char msg[96];
    snprintf(msg, sizeof msg, "%s: path must be a string", what);
    tenc_throw_type(env, msg);
    return -1;
  }
  if (len == 0 || len >= cap - 1) {
    char msg[96];
    snprintf(msg, sizeof msg, "%s: path must be 1 to %zu bytes", what, cap - 2);
    tenc_throw_type(env, msg);
    return -1;
  }
  return 0;
}

static napi_value enter_netns(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  TENC_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1) return tenc_throw_type(env, "enterNetns(path)");
  char path[4096];
  if (get_path(env, argv[0], path, sizeof path, "enterNetns") < 0) return NULL;
  if (__atomic_load_n(&tenc_netns_fd, __ATOMIC_ACQUIRE) >= 0) return tenc_throw_errno(env, EALREADY, "enterNetns %s: this process already entered a namespace", path);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return tenc_throw_errno(env, errno, "enterNetns: open %s", path);
  if (setns(fd, CLONE_NEWNET) < 0) {
    int e = errno;
    close(fd);
    /* EINVAL: not a network namespace */
    return tenc_throw_errno(env, e, "enterNetns: setns %s", path);
  }
  __atomic_store_n(&tenc_netns_fd, fd, __ATOMIC_RELEASE);
  napi_value undef;
  TENC_CHECK(env, napi_get_undefined(env, &undef));
  return undef;
}

static napi_value redirect_stderr(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  TENC_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1) return tenc_throw_type(env, "redirectStderr(path)");
  char path[4096];
  if (get_path(env, argv[0], path, sizeof path, "redirectStderr") < 0) return NULL;
  int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return tenc_throw_errno(env, errno, "redirectStderr: open %s", path);
  if (dup2(fd, 2) < 0) {
    int e = errno;
    close(fd);
    return tenc_throw_errno(env, e, "redirectStderr: dup2 %s", path);
  }
  close(fd);
  napi_value undef;
  TENC_CHECK(env, napi_get_undefined(env, &undef));
  return undef;
}

napi_status tenc_init_netns(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"enterNetns", NULL, enter_netns, NULL, NULL, NULL, napi_default, NULL},
      {"redirectStderr", NULL, redirect_stderr, NULL, NULL, NULL, napi_default, NULL},
  };
  return napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
