/* spawn.c: runs a short-lived child (ip, nft) without blocking node's thread.
 *
 *   runProcess(file, args, stdin, timeoutMs[, netns]) -> Promise<{ code, signal, stdout,
 *                                                          stderr, timedOut }>
 *
 * node's child_process.spawn() forks the whole node process: on this class of
 * machine (a paravirtualized guest) that blocks the event loop 5-7 ms per child, and a
 * pod's start runs about 18 of them. Here the child is made with posix_spawnp (glibc:
 * clone(CLONE_VM | CLONE_VFORK), no copy of node's page tables) on a libuv worker
 * thread, which also feeds its stdin and drains its stdout and stderr with poll() and
 * reaps it; the main thread only copies the arguments in and the result out.
 *
 * The child gets fds 0-2 (pipes) and nothing else (every higher fd is closed in it,
 * also one somebody opened without O_CLOEXEC, which node's spawn() passes on), every
 * signal at its default disposition and an empty signal mask (node ignores SIGPIPE;
 * ip must not inherit that), and the environment as it was when runProcess was called.
 * The child leads a process group of its own; still running after timeoutMs (0: never),
 * the group is killed with SIGKILL (timedOut), and its pipes are read 1 s more at most.
 * Output beyond RUN_OUTPUT_MAX bytes per stream is dropped and the child killed, so a
 * runaway child cannot exhaust tenc's memory. A failed posix_spawnp (ENOENT, EACCES)
 * rejects with an Error whose code is the errno name.
 *
 * netns (a path of a network namespace file, e.g. /proc/PID/ns/net or /run/netns/NAME)
 * starts the child in that namespace, as `nsenter --net=PATH` would, without the
 * nsenter process: the worker thread enters it, spawns the child (which inherits the
 * thread's namespace), and enters its own namespace again before anything else; the
 * namespace is entered by an fd opened for this one call. A path that cannot be
 * opened or is not a network namespace rejects (code the errno name, ENOENT or
 * EINVAL) and no child is started. Should the thread fail to go back (it holds the fd
 * of its own namespace and the privilege it just used, so this is not expected) the
 * process aborts: a pool thread left in a pod's namespace would start later children
 * there. */
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include "modules.h"
#include "util.h"

extern char **environ;
/* netns.c: the namespace a standby pod was handed (-1: none); see run_execute. */
extern int tenc_netns_fd;

#define RUN_OUTPUT_MAX (64u << 20)

struct run_buf {
  char *data;
  size_t len, cap;
};

struct run_job {
  napi_async_work work;
  napi_deferred deferred;
  char **argv; /* argv[0] = file; NULL-terminated */
  char **envp; /* NULL-terminated copy of environ */
  char *input;
  size_t input_len;
  int64_t timeout_ms;
  char *netns; /* a namespace path for this child, or NULL */
  /* results, written by the worker thread */
  int spawn_errno;
  int failed_errno; /* pipe2/poll failure */
  int netns_errno;  /* the netns path could not be opened or entered */
  int status;
  int reaped;
  int timed_out;
  int overflow;
  struct run_buf out, err;
};

static void free_strv(char **v) {
  if (!v) return;
  for (char **p = v; *p; p++) free(*p);
  free(v);
}

static void job_free(struct run_job *j) {
  free_strv(j->argv);
  free_strv(j->envp);
  free(j->input);
  free(j->netns);
  free(j->out.data);
  free(j->err.data);
  free(j);
}

static int64_t mono_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Reads what fd has; 1 at EOF or error (the fd is then done), 0 otherwise. */
static int drain(int fd, struct run_buf *b, int *overflow) {
  for (;;) {
    if (b->cap - b->len < 4096) {
      size_t cap = b->cap ? b->cap * 2 : 8192;
      if (cap > RUN_OUTPUT_MAX + 8192) cap = RUN_OUTPUT_MAX + 8192;
      if (cap - b->len < 4096) { /* over the cap: read and drop */
        char sink[4096];
        ssize_t n = read(fd, sink, sizeof sink);
        if (n > 0) {
          *overflow = 1;
          continue;
        }
        if (n < 0 && errno == EINTR) continue;
        return n < 0 && errno == EAGAIN ? 0 : 1;
      }
      char *d = realloc(b->data, cap);
      if (!d) {
        *overflow = 1;
        return 1;
      }
      b->data = d;
      b->cap = cap;
    }
    ssize_t n = read(fd, b->data + b->len, b->cap - b->len);
    if (n > 0) {
      b->len += (size_t)n;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    return n < 0 && errno == EAGAIN ? 0 : 1;
  }
}

static void close_fd(int *fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

static void run_execute(napi_env env, void *data) {
  (void)env;
  struct run_job *j = data;
  int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1};
  /* A standby pod handed its namespace (netns.c): this worker thread may have started
   * before, in the old one, and the child inherits the thread's namespace. Entered
   * again before every child (one cheap system call); failing, no child is started. */
  int ns = __atomic_load_n(&tenc_netns_fd, __ATOMIC_ACQUIRE);
  if (ns >= 0 && setns(ns, CLONE_NEWNET) < 0) {
    j->failed_errno = errno;
    return;
  }
  if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0) {
    j->failed_errno = errno;
    close_fd(&in[0]), close_fd(&in[1]), close_fd(&out[0]), close_fd(&out[1]), close_fd(&err[0]), close_fd(&err[1]);
    return;
  }
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err[1], 2);
  posix_spawn_file_actions_addclosefrom_np(&fa, 3); /* nothing of tenc's, even without O_CLOEXEC */
  posix_spawnattr_init(&attr);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  /* its own process group: a kill at the time limit reaches what it forked too */
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);
  /* this call's own namespace: entered for the spawn only (see the top) */
  int back = -1;
  if (j->netns) {
    int target = -1;
    back = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (back >= 0) target = open(j->netns, O_RDONLY | O_CLOEXEC);
    if (back < 0 || target < 0 || setns(target, CLONE_NEWNET) < 0) {
      j->netns_errno = errno;
      if (target >= 0) close(target);
      if (back >= 0) close(back);
      posix_spawn_file_actions_destroy(&fa);
      posix_spawnattr_destroy(&attr);
      close_fd(&in[0]), close_fd(&in[1]), close_fd(&out[0]), close_fd(&out[1]), close_fd(&err[0]), close_fd(&err[1]);
      return;
    }
    close(target);
  }
  pid_t pid;
  int rc = posix_spawnp(&pid, j->argv[0], &fa, &attr, j->argv, j->envp);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (back >= 0) {
    if (setns(back, CLONE_NEWNET) < 0) {
      static const char msg[] = "tenc runProcess: a worker thread cannot return to its network namespace after a child's; aborting\n";
      if (write(2, msg, sizeof msg - 1) < 0) { /* nothing more to do */ }
      abort();
    }
    close(back);
  }
  close_fd(&in[0]), close_fd(&out[1]), close_fd(&err[1]);
  if (rc != 0) {
    j->spawn_errno = rc;
    close_fd(&in[1]), close_fd(&out[0]), close_fd(&err[0]);
    return;
  }
  fcntl(in[1], F_SETFL, O_NONBLOCK);
  fcntl(out[0], F_SETFL, O_NONBLOCK);
  fcntl(err[0], F_SETFL, O_NONBLOCK);
  size_t written = 0;
  if (j->input_len == 0) close_fd(&in[1]);
  int64_t deadline = j->timeout_ms > 0 ? mono_ms() + j->timeout_ms : 0;
  int64_t drain_until = 0;
  int killed = 0;
  while (out[0] >= 0 || err[0] >= 0) {
    struct pollfd p[3];
    int n = 0, iin = -1, iout = -1, ierr = -1;
    if (in[1] >= 0) iin = n, p[n++] = (struct pollfd){.fd = in[1], .events = POLLOUT};
    if (out[0] >= 0) iout = n, p[n++] = (struct pollfd){.fd = out[0], .events = POLLIN};
    if (err[0] >= 0) ierr = n, p[n++] = (struct pollfd){.fd = err[0], .events = POLLIN};
    int wait = -1;
    int64_t until = killed ? drain_until : deadline;
    if (until) {
      int64_t left = until - mono_ms();
      wait = left > 0 ? (int)(left > 1000000 ? 1000000 : left) : 0;
    }
    int r = poll(p, (nfds_t)n, wait);
    if (r < 0) {
      if (errno == EINTR) continue;
      j->failed_errno = errno;
      kill(-pid, SIGKILL);
      break;
    }
    if (r == 0 && killed) break; /* killed 1 s ago and the pipes still open (held by some other process): stop reading */
    if (r == 0) { /* the deadline passed */
      kill(-pid, SIGKILL);
      killed = 1;
      drain_until = mono_ms() + 1000;
      j->timed_out = 1;
      close_fd(&in[1]);
      continue; /* drain to EOF: the pipes close when the group is gone */
    }
    if (iin >= 0 && p[iin].revents) {
      if (p[iin].revents & (POLLERR | POLLHUP)) {
        close_fd(&in[1]); /* the child closed its stdin (EPIPE): it does not want the rest */
      } else {
        ssize_t w = write(in[1], j->input + written, j->input_len - written);
        if (w > 0) written += (size_t)w;
        if ((w < 0 && errno != EAGAIN && errno != EINTR) || written == j->input_len) close_fd(&in[1]);
      }
    }
    if (iout >= 0 && p[iout].revents && drain(out[0], &j->out, &j->overflow)) close_fd(&out[0]);
    if (ierr >= 0 && p[ierr].revents && drain(err[0], &j->err, &j->overflow)) close_fd(&err[0]);
    if (j->overflow && !killed) {
      kill(-pid, SIGKILL);
      killed = 1;
      drain_until = mono_ms() + 1000;
      close_fd(&in[1]);
    }
  }
  close_fd(&in[1]), close_fd(&out[0]), close_fd(&err[0]);
  /* Both outputs closed: the child is normally gone too. One that closed them and runs on
   * is still held to its deadline: wait on a pidfd (poll with the time left), then kill. */
  if (deadline && !killed) {
    int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
    for (;;) {
      pid_t w = waitpid(pid, &j->status, WNOHANG);
      if (w == pid) {
        j->reaped = 1;
        break;
      }
      if (w < 0 && errno != EINTR) break;
      int64_t left = deadline - mono_ms();
      if (left <= 0) {
        kill(-pid, SIGKILL);
        j->timed_out = 1;
        break;
      }
      if (pfd >= 0) {
        struct pollfd q = {.fd = pfd, .events = POLLIN};
        poll(&q, 1, (int)(left > 1000000 ? 1000000 : left));
      } else {
        usleep(1000); /* no pidfd (kernel before 5.3): look again in 1 ms */
      }
    }
    if (pfd >= 0) close(pfd);
  }
  while (!j->reaped) {
    pid_t w = waitpid(pid, &j->status, 0);
    if (w == pid) {
      j->reaped = 1;
      break;
    }
    if (w < 0 && errno == EINTR) continue;
    break; /* ECHILD: somebody else reaped it (never expected); no status */
  }
}

static napi_value utf8(napi_env env, const struct run_buf *b) {
  napi_value v = NULL;
  napi_create_string_utf8(env, b->len ? b->data : "", b->len, &v);
  return v;
}

static void run_complete(napi_env env, napi_status status, void *data) {
  struct run_job *j = data;
  napi_value result = NULL;
  int reject = 0;
  if (status != napi_ok) {
    napi_value msg;
    napi_create_string_utf8(env, "runProcess: the work was cancelled", NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, NULL, msg, &result);
    reject = 1;
  } else if (j->netns_errno) {
    result = tenc_errno_error(env, j->netns_errno, "cannot run %s in network namespace %s", j->argv[0], j->netns);
    reject = 1;
  } else if (j->spawn_errno || j->failed_errno) {
    int e = j->spawn_errno ? j->spawn_errno : j->failed_errno;
    result = tenc_errno_error(env, e, "%s %s", j->spawn_errno ? "cannot run" : "running", j->argv[0]);
    reject = 1;
  } else {
    napi_value code, sig, flag;
    napi_create_object(env, &result);
    if (j->reaped && WIFEXITED(j->status)) napi_create_int32(env, WEXITSTATUS(j->status), &code);
    else napi_get_null(env, &code);
    if (j->reaped && WIFSIGNALED(j->status)) napi_create_int32(env, WTERMSIG(j->status), &sig);
    else napi_get_null(env, &sig);
    napi_set_named_property(env, result, "code", code);
    napi_set_named_property(env, result, "signal", sig);
    napi_set_named_property(env, result, "stdout", utf8(env, &j->out));
    napi_set_named_property(env, result, "stderr", utf8(env, &j->err));
    napi_get_boolean(env, j->timed_out, &flag);
    napi_set_named_property(env, result, "timedOut", flag);
    napi_get_boolean(env, j->overflow, &flag);
    napi_set_named_property(env, result, "overflow", flag);
  }
  if (reject) napi_reject_deferred(env, j->deferred, result);
  else napi_resolve_deferred(env, j->deferred, result);
  napi_delete_async_work(env, j->work);
  job_free(j);
}

/* A JS string as a malloc'd C string; NULL (with a TypeError thrown) if it is not a
 * string or holds a NUL byte. */
static char *get_cstr(napi_env env, napi_value v, const char *what) {
  size_t len;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) {
    char m[120];
    snprintf(m, sizeof m, "%s must be a string", what);
    tenc_throw_type(env, m);
    return NULL;
  }
  char *s = malloc(len + 1);
  if (!s) {
    napi_throw_error(env, "ENOMEM", "runProcess: out of memory");
    return NULL;
  }
  napi_get_value_string_utf8(env, v, s, len + 1, &len);
  if (strlen(s) != len) {
    free(s);
    char m[120];
    snprintf(m, sizeof m, "%s must not contain a NUL byte", what);
    tenc_throw_type(env, m);
    return NULL;
  }
  return s;
}

static napi_value run_process(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  TENC_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  bool is_array;
  if (argc < 4 || napi_is_array(env, argv[1], &is_array) != napi_ok || !is_array)
    return tenc_throw_type(env, "runProcess(file, args[], stdin, timeoutMs): args must be an array");
  int64_t timeout;
  if (tenc_get_int(env, argv[3], 0, 86400000, "timeoutMs", &timeout) < 0) return NULL;
  uint32_t nargs;
  TENC_CHECK(env, napi_get_array_length(env, argv[1], &nargs));
  if (nargs > 4096) return tenc_throw_range(env, "runProcess: more than 4096 arguments");
  struct run_job *j = calloc(1, sizeof *j);
  if (!j) {
    napi_throw_error(env, "ENOMEM", "runProcess: out of memory");
    return NULL;
  }
  j->timeout_ms = timeout;
  j->argv = calloc(nargs + 2, sizeof(char *));
  if (!j->argv) goto oom;
  if (!(j->argv[0] = get_cstr(env, argv[0], "file"))) goto fail;
  for (uint32_t i = 0; i < nargs; i++) {
    napi_value a;
    if (napi_get_element(env, argv[1], i, &a) != napi_ok) goto fail;
    if (!(j->argv[i + 1] = get_cstr(env, a, "every argument"))) goto fail;
  }
  napi_valuetype t;
  TENC_CHECK(env, napi_typeof(env, argv[2], &t));
  if (t == napi_string) {
    if (!(j->input = get_cstr(env, argv[2], "stdin"))) goto fail;
    j->input_len = strlen(j->input);
  } else if (t != napi_null && t != napi_undefined) {
    tenc_throw_type(env, "stdin must be a string or null");
    goto fail;
  }
  if (argc >= 5) {
    TENC_CHECK(env, napi_typeof(env, argv[4], &t));
    if (t == napi_string) {
      if (!(j->netns = get_cstr(env, argv[4], "netns"))) goto fail;
      if (j->netns[0] != '/') {
        tenc_throw_type(env, "netns must be an absolute path");
        goto fail;
      }
    } else if (t != napi_null && t != napi_undefined) {
      tenc_throw_type(env, "netns must be a string or null");
      goto fail;
    }
  }
  size_t nenv = 0;
  while (environ && environ[nenv]) nenv++;
  j->envp = calloc(nenv + 1, sizeof(char *));
  if (!j->envp) goto oom;
  for (size_t i = 0; i < nenv; i++)
    if (!(j->envp[i] = strdup(environ[i]))) goto oom;
  napi_value promise, name;
  if (napi_create_promise(env, &j->deferred, &promise) != napi_ok) goto fail;
  napi_create_string_utf8(env, "tenc.runProcess", NAPI_AUTO_LENGTH, &name);
  if (napi_create_async_work(env, NULL, name, run_execute, run_complete, j, &j->work) != napi_ok) {
    napi_value e;
    napi_create_string_utf8(env, "runProcess: cannot queue the work", NAPI_AUTO_LENGTH, &e);
    napi_create_error(env, NULL, e, &e);
    napi_reject_deferred(env, j->deferred, e);
    job_free(j);
    return promise;
  }
  if (napi_queue_async_work(env, j->work) != napi_ok) {
    napi_value e;
    napi_create_string_utf8(env, "runProcess: cannot queue the work", NAPI_AUTO_LENGTH, &e);
    napi_create_error(env, NULL, e, &e);
    napi_reject_deferred(env, j->deferred, e);
    napi_delete_async_work(env, j->work);
    job_free(j);
  }
  return promise;
oom:
  napi_throw_error(env, "ENOMEM", "runProcess: out of memory");
fail:
  job_free(j);
  return NULL;
}

napi_status tenc_init_spawn(napi_env env, napi_value exports) {
  return tenc_set_fn(env, exports, "runProcess", run_process);
}
