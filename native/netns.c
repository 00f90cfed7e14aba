/* netns.c: a standby `tenc pod` handed its pod (src/cli/standby.ts).
 *
 *   enterNetns(path)        -> undefined   setns(CLONE_NEWNET) of the calling (main) thread
 *   enterNetnsWorkers(n)    -> Promise<{ entered, timedOut }>   the same for n libuv workers
 *   redirectStderr(path)    -> undefined   fd 2 becomes PATH (O_APPEND|O_CREAT, 0600)
 *
 * A network namespace belongs to a thread, not to a process: setns() moves only the
 * thread that calls it. Threads made later by that thread (the engine's TX and RX
 * threads, node's dgram sockets, the TUN device) are in the new namespace; threads
 * that already ran are not: libuv's worker threads (node starts them for its own file
 * reads) ran while the process stood by. So enterNetnsWorkers(n) queues n works on
 * libuv's pool of n threads, each of which enters the namespace and then waits until
 * all n have: no thread can take two, so each thread takes one (a thread busy with
 * other work joins later; 10 s at most, else timedOut). And the namespace's fd is kept
 * (tenc_netns_fd): spawn.c's worker enters it again before each child, so an ip never
 * configures the namespace the standby started in, whatever ran on the pool.
 * A second enterNetns is refused (EALREADY): a pod is handed over once.
 *
 *   inNetns(fd, fn)         -> fn()'s value   fn called with the main thread in the
 *                                             namespace of fd, then back where it was
 *
 * For a pod host (src/control/host.ts): several pods in one process, each in its own
 * namespace. Their sockets and TUN devices belong to the namespace of the thread that
 * makes them, so each pod makes them inside inNetns (synchronously: fn must not wait
 * for anything, and what it schedules runs later, back in the thread's namespace).
 * Nested calls restore the enclosing call's namespace. A thread that cannot go back
 * would make the next pod's sockets in a wrong namespace: the process aborts. */
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include "modules.h"
#include "util.h"

/* -1 until enterNetns; read by spawn.c's worker threads. */
int tenc_netns_fd = -1;

/* The call's one argument, a path, into buf; -1 with a TypeError thrown when it is not one. */
static int get_path(napi_env env, napi_callback_info info, char *buf, size_t cap, const char *what) {
  size_t argc = 1;
  napi_value v;
  if (napi_get_cb_info(env, info, &argc, &v, NULL, NULL) != napi_ok) return -1;
  if (argc < 1) {
    char msg[96];
    snprintf(msg, sizeof msg, "%s(path)", what);
    tenc_throw_type(env, msg);
    return -1;
  }
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, buf, cap, &len) != napi_ok) {
    char msg[96];
    snprintf(msg, sizeof msg, "%s: path must be a string", what);
    tenc_throw_type(env, msg);
    return -1;
  }
  if (len == 0 || len >= cap - 1 || strlen(buf) != len) {
    char msg[96];
    snprintf(msg, sizeof msg, "%s: path must be 1 to %zu bytes, without NUL", what, cap - 2);
    tenc_throw_type(env, msg);
    return -1;
  }
  return 0;
}

static napi_value enter_netns(napi_env env, napi_callback_info info) {
  char path[4096];
  if (get_path(env, info, path, sizeof path, "enterNetns") < 0) return NULL;
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
  char path[4096];
  if (get_path(env, info, path, sizeof path, "redirectStderr") < 0) return NULL;
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

/* inNetns: the namespace the main thread is in outside any inNetns call (opened at
 * the first call), and the fd of the call being run (-1: none). Main thread only. */
static int ns_home_fd = -1;
static int ns_current_fd = -1;

static napi_value in_netns(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  TENC_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int64_t fd;
  napi_valuetype t = napi_undefined;
  if (argc < 2 || napi_typeof(env, argv[1], &t) != napi_ok || t != napi_function) return tenc_throw_type(env, "inNetns(fd, fn): fn must be a function");
  if (tenc_get_int(env, argv[0], 0, 0x7fffffffLL, "fd", &fd) < 0) return NULL;
  /* node's main thread only (its thread id is the process id): the home fd and the
   * current fd are that thread's, and a worker's setns would move only the worker */
  if ((pid_t)syscall(SYS_gettid) != getpid()) return tenc_throw_type(env, "inNetns: only on node's main thread, never in a worker");
  if (ns_home_fd < 0) {
    ns_home_fd = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (ns_home_fd < 0) return tenc_throw_errno(env, errno, "inNetns: open /proc/thread-self/ns/net");
  }
  if (setns((int)fd, CLONE_NEWNET) < 0) return tenc_throw_errno(env, errno, "inNetns: setns fd %d", (int)fd); /* EINVAL: not a network namespace */
  int outer = ns_current_fd;
  ns_current_fd = (int)fd;
  napi_value global, result = NULL;
  napi_status st = napi_get_global(env, &global);
  if (st == napi_ok) st = napi_call_function(env, global, argv[1], 0, NULL, &result);
  ns_current_fd = outer;
  if (setns(outer >= 0 ? outer : ns_home_fd, CLONE_NEWNET) < 0) {
    fprintf(stderr, "tenc: inNetns: cannot return to the thread's namespace (%s): aborting\n", strerror(errno));
    abort();
  }
  return st == napi_ok ? result : NULL; /* a throw of fn's stays pending: it reaches the caller */
}

/* One enterNetnsWorkers call: n works that meet before any returns. */
struct ns_group {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int need, arrived, done, entered, timed_out, err;
  napi_deferred deferred;
};

struct ns_work {
  napi_async_work work;
  struct ns_group *g;
};

static void ns_execute(napi_env env, void *data) {
  (void)env;
  struct ns_group *g = ((struct ns_work *)data)->g;
  int fd = __atomic_load_n(&tenc_netns_fd, __ATOMIC_ACQUIRE);
  int rc = fd >= 0 ? setns(fd, CLONE_NEWNET) : -1;
  int e = fd >= 0 ? errno : EBADF;
  struct timespec until;
  clock_gettime(CLOCK_MONOTONIC, &until);
  until.tv_sec += 10;
  pthread_mutex_lock(&g->mu);
  if (rc == 0) g->entered++;
  else if (g->err == 0) g->err = e;
  g->arrived++;
  pthread_cond_broadcast(&g->cv);
  while (g->arrived < g->need) {
    if (pthread_cond_timedwait(&g->cv, &g->mu, &until) == ETIMEDOUT) {
      g->timed_out = 1;
      break;
    }
  }
  pthread_mutex_unlock(&g->mu);
}

static void ns_group_free(struct ns_group *g) {
  pthread_cond_destroy(&g->cv);
  pthread_mutex_destroy(&g->mu);
  free(g);
}

static void ns_complete(napi_env env, napi_status status, void *data) {
  struct ns_work *w = data;
  struct ns_group *g = w->g;
  napi_delete_async_work(env, w->work);
  free(w);
  if (status != napi_ok && g->err == 0) g->err = ECANCELED;
  if (++g->done < g->need) return;
  napi_value o, v;
  if (g->err != 0) {
    napi_reject_deferred(env, g->deferred, tenc_errno_error(env, g->err, "enterNetnsWorkers: setns of a worker thread"));
  } else {
    napi_create_object(env, &o);
    napi_create_int32(env, g->entered, &v);
    napi_set_named_property(env, o, "entered", v);
    napi_get_boolean(env, g->timed_out != 0, &v);
    napi_set_named_property(env, o, "timedOut", v);
    napi_resolve_deferred(env, g->deferred, o);
  }
  ns_group_free(g);
}

static napi_value enter_netns_workers(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  TENC_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t n = 0;
  if (argc < 1 || napi_get_value_int32(env, argv[0], &n) != napi_ok || n < 1 || n > 1024) return tenc_throw_type(env, "enterNetnsWorkers(n): n must be 1..1024");
  if (__atomic_load_n(&tenc_netns_fd, __ATOMIC_ACQUIRE) < 0) return tenc_throw_errno(env, EBADF, "enterNetnsWorkers: enterNetns first");
  struct ns_group *g = calloc(1, sizeof *g);
  if (g == NULL) return tenc_throw_errno(env, ENOMEM, "enterNetnsWorkers");
  pthread_mutex_init(&g->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&g->cv, &ca);
  pthread_condattr_destroy(&ca);
  g->need = n;
  napi_value promise, name;
  if (napi_create_promise(env, &g->deferred, &promise) != napi_ok) {
    ns_group_free(g);
    return NULL;
  }
  TENC_CHECK(env, napi_create_string_utf8(env, "tenc.enterNetnsWorkers", NAPI_AUTO_LENGTH, &name));
  for (int i = 0; i < n; i++) {
    struct ns_work *w = calloc(1, sizeof *w);
    /* a work that cannot be queued counts as arrived and done (and fails the call) */
    if (w == NULL || (w->g = g, napi_create_async_work(env, NULL, name, ns_execute, ns_complete, w, &w->work)) != napi_ok ||
        napi_queue_async_work(env, w->work) != napi_ok) {
      pthread_mutex_lock(&g->mu);
      if (g->err == 0) g->err = ENOMEM;
      g->arrived++;
      pthread_cond_broadcast(&g->cv);
      pthread_mutex_unlock(&g->mu);
      free(w);
      g->done++;
    }
  }
  if (g->done == n) { /* none queued: nothing will complete */
    napi_value m, err;
    napi_create_string_utf8(env, "enterNetnsWorkers: no work could be queued", NAPI_AUTO_LENGTH, &m);
    napi_create_error(env, NULL, m, &err);
    napi_reject_deferred(env, g->deferred, err);
    ns_group_free(g);
  }
  return promise;
}

napi_status tenc_init_netns(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"enterNetns", NULL, enter_netns, NULL, NULL, NULL, napi_default, NULL},
      {"enterNetnsWorkers", NULL, enter_netns_workers, NULL, NULL, NULL, napi_default, NULL},
      {"redirectStderr", NULL, redirect_stderr, NULL, NULL, NULL, napi_default, NULL},
      {"inNetns", NULL, in_netns, NULL, NULL, NULL, napi_default, NULL},
  };
  return napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
