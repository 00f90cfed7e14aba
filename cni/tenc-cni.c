/*
 * tenc-cni: the CNI plugin as a small static executable, for nodes where
 * tenc lives only in the agent's container (no Node.js on the host). The container
 * runtime execs /opt/cni/bin/tenc on the host; this program does what `tenc cni`
 * (src/cni/skeleton.ts + plugin.ts) does, with the same checks and the same error
 * codes and messages: it reads CNI_* and the network configuration, asks the node
 * agent over its node socket (newline-delimited JSON, node.ts) and prints the
 * result (ADD: prevResult unchanged) or the spec's error object. With "unchained": true
 * (called alone, as Multus calls a NetworkAttachmentDefinition's plugin, no prevResult)
 * the ADD asks without addresses (the agent reads them from the pod's netns) and prints
 * an empty result of the request's cniVersion; CHECK then reads no prevResult.
 *
 *   ADD     {"op":"cni-add",...}    the agent answers once the pod is fail-closed
 *   DEL     {"op":"cni-del",...}    best effort: needs CNI_CONTAINERID and a configuration
 *                                   of type "tenc"; the rest of it is read leniently
 *   CHECK   {"op":"cni-check",...}  (cniVersion 0.4.0 or later: older ones have no CHECK)
 *   STATUS  {"op":"cni-status"}
 *   VERSION answered here
 *   GC      accepted (cniVersion 1.1.0) and done: nothing asked
 *
 * Agent not reachable, or no answer in time (connect() included): code 11 (try again
 * later), so the runtime retries the sandbox; the pod's containers never start
 * unprotected. The agent's own refusals keep their meaning: EINVAL is the
 * configuration's fault (7), ENOENT a container it has not registered (3).
 * Build: cni/build.sh (static, no libraries beyond libc). Exit 0 ok, 1 error.
 *
 * One file above the 700-line mark, on purpose: it is installed and built as one
 * self-contained program (a host's `cc` and this file, no build system), and its
 * parts (a small JSON reader, the configuration checks, the agent round trip) serve
 * only it; test/unit/cni-launcher.test.ts holds it to `tenc cni`.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_STDIN (1 << 20)
#define MAX_ANSWER (64 * 1024)
#define MAX_DEPTH 64
#define DEFAULT_SOCKET "/run/tenc/agent.sock"
#define DEFAULT_TIMEOUT_MS 5000
/* the plugin waits up to timeout + 1 s for the agent, and must be done before the runtime
 * stops waiting: kubelet's CRI calls time out after --runtime-request-timeout, 2 minutes by
 * default (StopPodSandbox, which runs every DEL of the chain, gets exactly that), and
 * libcni then kills the plugin, its error lost. 120 s + 1 s did not fit; 100 s + 1 s leaves
 * the chain's other plugins and the runtime 19 s (as plugin.ts MAX_TIMEOUT_MS) */
#define MAX_TIMEOUT_MS 100000
#define CONNECT_RETRY_MS 10

/* oldest first, as src/cni/skeleton.ts SUPPORTED_VERSIONS (and deploy/cni-install.sh's
 * list). 0.3.x: the results' ips[] carry "version", there is no CHECK, DEL gets no
 * prevResult; 0.1.0 and 0.2.0 (ip4/ip6 results) have no chaining, so no prevResult. */
static const char *const VERSIONS[] = {"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"};
#define NVERSIONS (sizeof VERSIONS / sizeof VERSIONS[0])
/* the details' tail for 0.1.0 and 0.2.0 (as skeleton.ts PRE_CHAINING) */
#define PRE_CHAINING "; 0.1.0 and 0.2.0 have no chained plugins (no prevResult) and results of another form (ip4, ip6)"

/* ---- growable string ----------------------------------------------------- */

typedef struct {
  char *p;
  size_t n, cap;
} buf_t;

static void die_oom(void) {
  fputs("{\"cniVersion\":\"1.0.0\",\"code\":5,\"msg\":\"out of memory\",\"details\":\"\"}\n", stdout);
  exit(1);
}

static void put(buf_t *b, const char *s, size_t n) {
  if (b->n + n + 1 > b->cap) {
    size_t c = b->cap ? b->cap : 256;
    while (c < b->n + n + 1) c *= 2;
    char *q = realloc(b->p, c);
    if (!q) die_oom();
    b->p = q;
    b->cap = c;
  }
  memcpy(b->p + b->n, s, n);
  b->n += n;
  b->p[b->n] = 0;
}
static void puts_(buf_t *b, const char *s) { put(b, s, strlen(s)); }
static void printf_(buf_t *b, const char *fmt, ...) {
  char tmp[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  if (n > 0) put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* a JSON string literal (control characters escaped; bytes >= 0x80 passed through) */
static void put_json_str(buf_t *b, const char *s) {
  put(b, "\"", 1);
  for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
    if (*c == '"' || *c == '\\') {
      char e[2] = {'\\', (char)*c};
      put(b, e, 2);
    } else if (*c < 0x20) {
      char e[8];
      snprintf(e, sizeof e, "\\u%04x", *c);
      put(b, e, 6);
    } else
      put(b, (const char *)c, 1);
  }
  put(b, "\"", 1);
}

/* ---- a small JSON reader --------------------------------------------------- */

enum jtype { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };

typedef struct jv {
  enum jtype t;
  const char *raw; /* the value's text in the input */
  size_t rawlen;
  char *str;       /* J_STR: decoded (NUL-terminated; an embedded NUL makes it invalid for us) */
  size_t strlen_;
  double num;
  int boolean;
  size_t n;        /* J_ARR, J_OBJ: members */
  char **keys;     /* J_OBJ */
  struct jv **vals;
} jv;

typedef struct {
  const char *s, *end;
  const char *err;
} jp;

static void ws(jp *p) {
  while (p->s < p->end && (*p->s == ' ' || *p->s == '\t' || *p->s == '\n' || *p->s == '\r')) p->s++;
}

static jv *jnew(enum jtype t, const char *raw) {
  jv *v = calloc(1, sizeof *v);
  if (!v) die_oom();
  v->t = t;
  v->raw = raw;
  return v;
}

static void utf8(buf_t *b, uint32_t cp) {
  char o[4];
  if (cp < 0x80) {
    o[0] = (char)cp;
    put(b, o, 1);
  } else if (cp < 0x800) {
    o[0] = (char)(0xc0 | cp >> 6), o[1] = (char)(0x80 | (cp & 0x3f));
    put(b, o, 2);
  } else if (cp < 0x10000) {
    o[0] = (char)(0xe0 | cp >> 12), o[1] = (char)(0x80 | ((cp >> 6) & 0x3f)), o[2] = (char)(0x80 | (cp & 0x3f));
    put(b, o, 3);
  } else {
    o[0] = (char)(0xf0 | cp >> 18), o[1] = (char)(0x80 | ((cp >> 12) & 0x3f)), o[2] = (char)(0x80 | ((cp >> 6) & 0x3f)), o[3] = (char)(0x80 | (cp & 0x3f));
    put(b, o, 4);
  }
}

static int hex4(jp *p, uint32_t *out) {
  if (p->end - p->s < 4) return -1;
  uint32_t v = 0;
  for (int i = 0; i < 4; i++) {
    char c = p->s[i];
    v <<= 4;
    if (c >= '0' && c <= '9') v |= (uint32_t)(c - '0');
    else if (c >= 'a' && c <= 'f') v |= (uint32_t)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') v |= (uint32_t)(c - 'A' + 10);
    else return -1;
  }
  p->s += 4;
  *out = v;
  return 0;
}

static char *jstring(jp *p, size_t *len) {
  buf_t b = {0};
  p->s++; /* opening quote */
  put(&b, "", 0);
  while (p->s < p->end) {
    unsigned char c = (unsigned char)*p->s++;
    if (c == '"') {
      *len = b.n;
      return b.p;
    }
    if (c < 0x20) break;
    if (c != '\\') {
      put(&b, (const char *)&c, 1);
      continue;
    }
    if (p->s >= p->end) break;
    char e = *p->s++;
    const char *simple = strchr("\"\\/bfnrt", e);
    if (e && simple) {
      static const char map[] = "\"\\/\b\f\n\r\t";
      put(&b, &map[simple - "\"\\/bfnrt"], 1);
    } else if (e == 'u') {
      uint32_t cp;
      if (hex4(p, &cp)) break;
      if (cp >= 0xd800 && cp < 0xdc00 && p->end - p->s >= 6 && p->s[0] == '\\' && p->s[1] == 'u') {
        uint32_t lo;
        p->s += 2;
        if (hex4(p, &lo) || lo < 0xdc00 || lo >= 0xe000) break;
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
      } else if (cp >= 0xd800 && cp < 0xe000)
        cp = 0xfffd; /* a lone surrogate, as JSON.parse then utf-8 output would do */
      utf8(&b, cp);
    } else
      break;
  }
  free(b.p);
  p->err = "bad string";
  return NULL;
}

static jv *jvalue(jp *p, int depth);

static jv *jparse_obj(jp *p, int depth) {
  jv *v = jnew(J_OBJ, p->s);
  p->s++;
  ws(p);
  if (p->s < p->end && *p->s == '}') {
    p->s++;
    return v;
  }
  for (;;) {
    ws(p);
    if (p->s >= p->end || *p->s != '"') return p->err = "expected a key", NULL;
    size_t kl;
    char *k = jstring(p, &kl);
    if (!k) return NULL;
    if (strlen(k) != kl) return p->err = "a key with a NUL character", NULL;
    ws(p);
    if (p->s >= p->end || *p->s != ':') return p->err = "expected ':'", NULL;
    p->s++;
    jv *m = jvalue(p, depth + 1);
    if (!m) return NULL;
    /* a repeated key: the last one counts (as JSON.parse) */
    size_t i;
    for (i = 0; i < v->n; i++)
      if (strcmp(v->keys[i], k) == 0) break;
    if (i == v->n) {
      v->keys = realloc(v->keys, (v->n + 1) * sizeof *v->keys);
      v->vals = realloc(v->vals, (v->n + 1) * sizeof *v->vals);
      if (!v->keys || !v->vals) die_oom();
      v->n++;
    }
    v->keys[i] = k;
    v->vals[i] = m;
    ws(p);
    if (p->s < p->end && *p->s == ',') {
      p->s++;
      continue;
    }
    if (p->s < p->end && *p->s == '}') {
      p->s++;
      return v;
    }
    return p->err = "expected ',' or '}'", NULL;
  }
}

static jv *jparse_arr(jp *p, int depth) {
  jv *v = jnew(J_ARR, p->s);
  p->s++;
  ws(p);
  if (p->s < p->end && *p->s == ']') {
    p->s++;
    return v;
  }
  for (;;) {
    jv *m = jvalue(p, depth + 1);
    if (!m) return NULL;
    v->vals = realloc(v->vals, (v->n + 1) * sizeof *v->vals);
    if (!v->vals) die_oom();
    v->vals[v->n++] = m;
    ws(p);
    if (p->s < p->end && *p->s == ',') {
      p->s++;
      continue;
    }
    if (p->s < p->end && *p->s == ']') {
      p->s++;
      return v;
    }
    return p->err = "expected ',' or ']'", NULL;
  }
}

static jv *jvalue(jp *p, int depth) {
  if (depth > MAX_DEPTH) return p->err = "nested too deep", NULL;
  ws(p);
  if (p->s >= p->end) return p->err = "unexpected end", NULL;
  const char *start = p->s;
  jv *v;
  switch (*p->s) {
    case '{': v = jparse_obj(p, depth); break;
    case '[': v = jparse_arr(p, depth); break;
    case '"': {
      v = jnew(J_STR, start);
      v->str = jstring(p, &v->strlen_);
      if (!v->str) return NULL;
      break;
    }
    case 't':
    case 'f':
    case 'n': {
      const char *w = *p->s == 't' ? "true" : *p->s == 'f' ? "false" : "null";
      size_t l = strlen(w);
      if ((size_t)(p->end - p->s) < l || memcmp(p->s, w, l)) return p->err = "bad literal", NULL;
      p->s += l;
      v = jnew(*w == 'n' ? J_NULL : J_BOOL, start);
      v->boolean = *w == 't';
      break;
    }
    default: {
      /* number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
      const char *q = p->s;
      if (q < p->end && *q == '-') q++;
      if (q >= p->end || *q < '0' || *q > '9') return p->err = "unexpected character", NULL;
      if (*q == '0') q++;
      else
        while (q < p->end && *q >= '0' && *q <= '9') q++;
      if (q < p->end && *q == '.') {
        q++;
        if (q >= p->end || *q < '0' || *q > '9') return p->err = "bad number", NULL;
        while (q < p->end && *q >= '0' && *q <= '9') q++;
      }
      if (q < p->end && (*q == 'e' || *q == 'E')) {
        q++;
        if (q < p->end && (*q == '+' || *q == '-')) q++;
        if (q >= p->end || *q < '0' || *q > '9') return p->err = "bad number", NULL;
        while (q < p->end && *q >= '0' && *q <= '9') q++;
      }
      char tmp[64];
      size_t l = (size_t)(q - p->s);
      if (l >= sizeof tmp) l = sizeof tmp - 1;
      memcpy(tmp, p->s, l);
      tmp[l] = 0;
      v = jnew(J_NUM, start);
      v->num = strtod(tmp, NULL);
      p->s = q;
    }
  }
  if (!v) return NULL;
  v->rawlen = (size_t)(p->s - start);
  return v;
}

static jv *jparse(const char *s, size_t n, const char **err) {
  jp p = {s, s + n, NULL};
  jv *v = jvalue(&p, 0);
  if (v) {
    ws(&p);
    if (p.s != p.end) v = NULL, p.err = "trailing characters";
  }
  if (!v) *err = p.err ? p.err : "invalid";
  return v;
}

static jv *jget(const jv *o, const char *k) {
  if (!o || o->t != J_OBJ) return NULL;
  for (size_t i = 0; i < o->n; i++)
    if (strcmp(o->keys[i], k) == 0) return o->vals[i];
  return NULL;
}

/* JSON.stringify of a value, for messages (strings quoted; others their raw text, shortened) */
static void put_shown(buf_t *b, const jv *v) {
  if (!v) {
    puts_(b, "undefined");
    return;
  }
  if (v->t == J_STR) {
    buf_t t = {0};
    put_json_str(&t, v->str);
    puts_(b, t.p);
    free(t.p);
    return;
  }
  size_t n = v->rawlen > 200 ? 200 : v->rawlen;
  put(b, v->raw, n);
}

/* ---- the CNI error object ------------------------------------------------------ */

static const char *version = "1.0.0";

static void fail(int code, const char *msg, const char *details) {
  buf_t b = {0};
  puts_(&b, "{\"cniVersion\":");
  put_json_str(&b, version);
  printf_(&b, ",\"code\":%d,\"msg\":", code);
  put_json_str(&b, msg);
  puts_(&b, ",\"details\":");
  put_json_str(&b, details ? details : "");
  puts_(&b, "}\n");
  fwrite(b.p, 1, b.n, stdout);
  fflush(stdout);
  exit(1);
}

static void failf(int code, const char *details, const char *fmt, ...) {
  char m[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(m, sizeof m, fmt, ap);
  va_end(ap);
  fail(code, m, details);
}

enum { E_VERSION = 1, E_UNKNOWN = 3, E_ENV = 4, E_IO = 5, E_DECODE = 6, E_CONFIG = 7, E_AGAIN = 11, E_UNAVAILABLE = 50 };

static const char *need(const char *name) {
  const char *v = getenv(name);
  if (!v || !*v) {
    char d[128];
    snprintf(d, sizeof d, "the runtime must set %s for this command", name);
    failf(E_ENV, d, "%s is not set", name);
  }
  return v;
}

/* ---- the node socket ------------------------------------------------------------- */

static int64_t now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

typedef struct {
  const char *socket;
  long timeout_ms;
  int unchained; /* called alone (Multus' additional attachment): no prevResult needed */
} cfg_t;

/* ask()'s results: the agent answered ok; something failed on our side of the socket
 * (connect, send, no answer in time, a broken answer); the agent answered an error */
enum { ASK_OK = 0, ASK_FAILED = -1, ASK_REFUSED = -2 };

static int timed_out(const cfg_t *c, long timeout_ms, char *code, size_t codesz, char *msg, size_t msgsz) {
  snprintf(code, codesz, "ETIMEDOUT");
  snprintf(msg, msgsz, "no answer from %s within %ld ms", c->socket, timeout_ms);
  return ASK_FAILED;
}

/* poll() one fd for ev until the deadline: 1 ready, 0 the deadline passed */
static int wait_fd(int fd, short ev, int64_t deadline) {
  for (;;) {
    int64_t left = deadline - now_ms();
    if (left <= 0) return 0;
    struct pollfd pf = {.fd = fd, .events = ev};
    int r = poll(&pf, 1, (int)(left > 1000000 ? 1000000 : left));
    if (r > 0) return 1;
    if (r < 0 && errno != EINTR) return 1; /* let the caller's syscall report it */
  }
}

/*
 * Sends one request line, reads one answer line, all of it (connect() included) before
 * the deadline. The socket is non-blocking: a frozen agent whose listen backlog is full
 * would block a plain connect() forever. On Linux a unix socket's connect() then fails
 * with EAGAIN at once (never EINPROGRESS): it is tried again every CONNECT_RETRY_MS until
 * the deadline. On an error answer (ASK_REFUSED: *code is the agent's error code) or a
 * failure (ASK_FAILED: *code is an errno name), fills *code and *msg.
 */
static int ask(const cfg_t *c, const char *req, long timeout_ms, jv **result, char *code, size_t codesz, char *msg, size_t msgsz) {
  int64_t deadline = now_ms() + timeout_ms;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    snprintf(code, codesz, "EIO");
    snprintf(msg, msgsz, "socket: %s", strerror(errno));
    return ASK_FAILED;
  }
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  snprintf(a.sun_path, sizeof a.sun_path, "%s", c->socket);
  for (;;) {
    if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) break;
    int e = errno;
    if (e == EAGAIN) {
      /* the backlog is full: wait a little, within the deadline, and try again */
      int64_t left = deadline - now_ms();
      if (left <= 0) {
        close(fd);
        return timed_out(c, timeout_ms, code, codesz, msg, msgsz);
      }
      poll(NULL, 0, (int)(left < CONNECT_RETRY_MS ? left : CONNECT_RETRY_MS));
      continue;
    }
    if (e == EINPROGRESS) {
      /* not what a unix socket does on Linux, but the portable way: writable = done */
      socklen_t l = sizeof e;
      if (!wait_fd(fd, POLLOUT, deadline)) {
        close(fd);
        return timed_out(c, timeout_ms, code, codesz, msg, msgsz);
      }
      if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &l) < 0) e = errno;
      if (e == 0) break;
    }
    close(fd);
    snprintf(code, codesz, "%s", e == ENOENT ? "ENOENT" : e == ECONNREFUSED ? "ECONNREFUSED" : e == EACCES ? "EACCES" : "EIO");
    snprintf(msg, msgsz, "%s: %s", c->socket, strerror(e));
    return ASK_FAILED;
  }
  size_t len = strlen(req), off = 0;
  while (off < len) {
    ssize_t w = send(fd, req + off, len - off, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && errno == EAGAIN) {
      if (!wait_fd(fd, POLLOUT, deadline)) {
        close(fd);
        return timed_out(c, timeout_ms, code, codesz, msg, msgsz);
      }
      continue;
    }
    if (w <= 0) {
      snprintf(code, codesz, "EIO");
      snprintf(msg, msgsz, "%s: %s", c->socket, strerror(errno));
      close(fd);
      return ASK_FAILED;
    }
    off += (size_t)w;
  }
  buf_t in = {0};
  char *nl = NULL;
  while (!nl) {
    int64_t left = deadline - now_ms();
    if (left <= 0) {
      close(fd);
      free(in.p);
      return timed_out(c, timeout_ms, code, codesz, msg, msgsz);
    }
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    int r = poll(&pf, 1, (int)(left > 1000000 ? 1000000 : left));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) continue;
    char tmp[4096];
    ssize_t n = recv(fd, tmp, sizeof tmp, 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0 || in.n + (size_t)n > MAX_ANSWER) {
      close(fd);
      free(in.p);
      snprintf(code, codesz, "EPROTO");
      snprintf(msg, msgsz, n <= 0 ? "%s closed without an answer" : "answer from %s too long", c->socket);
      return ASK_FAILED;
    }
    put(&in, tmp, (size_t)n);
    nl = memchr(in.p, '\n', in.n);
  }
  close(fd);
  const char *err;
  jv *ans = jparse(in.p, (size_t)(nl - in.p), &err);
  jv *ok = jget(ans, "ok");
  if (!ans || ans->t != J_OBJ || !ok || ok->t != J_BOOL) {
    snprintf(code, codesz, "EPROTO");
    snprintf(msg, msgsz, "bad answer from %s", c->socket);
    return ASK_FAILED;
  }
  if (ok->boolean) {
    if (result) *result = jget(ans, "result");
    return ASK_OK;
  }
  jv *e = jget(ans, "error");
  jv *ec = jget(e, "code"), *em = jget(e, "message");
  snprintf(code, codesz, "%s", ec && ec->t == J_STR ? ec->str : "EIO");
  snprintf(msg, msgsz, "%s", em && em->t == J_STR ? em->str : "error without a message");
  return ASK_REFUSED;
}

/*
 * As plugin.ts ask(): the agent's EINVAL is the config's fault (7), its ENOENT a container
 * it has not registered (3); no agent on the socket (connect: ENOENT, ECONNREFUSED) and
 * everything else: try again (11). The same errno name means one thing from connect()
 * and another in the agent's answer: ask()'s result tells which.
 */
static jv *ask_or_fail(const cfg_t *c, const char *req, long timeout_ms) {
  char code[32], msg[1024];
  jv *res = NULL;
  int r = ask(c, req, timeout_ms, &res, code, sizeof code, msg, sizeof msg);
  if (r == ASK_OK) return res;
  if (r == ASK_REFUSED) {
    if (!strcmp(code, "EINVAL")) failf(E_CONFIG, "", "tenc agent: %s", msg);
    if (!strcmp(code, "ENOENT")) failf(E_UNKNOWN, "the agent has no registration for this container: no ADD of it reached the agent, or a DEL removed it", "tenc agent: %s", msg);
  } else if (!strcmp(code, "ENOENT") || !strcmp(code, "ECONNREFUSED"))
    failf(E_AGAIN, "the node agent is down: retry once it runs", "tenc agent not reachable at %s", c->socket);
  failf(E_AGAIN, "the pod could not be protected in time: retry", "tenc agent: %s", msg);
  return NULL;
}

/* ---- the tenc entry's configuration (plugin.ts parseTencConfig) ------------------------ */
/* A bad configuration value (code 7): "FIELD: <the value, shown> WHY". */
static void fail_value(const char *field, const jv *v, const char *why) {
  buf_t b = {0};
  puts_(&b, field);
  puts_(&b, ": ");
  put_shown(&b, v);
  puts_(&b, why);
  fail(E_CONFIG, b.p, "");
}


static const char *const KNOWN[] = {"cniVersion", "name", "type", "agentSocket", "timeoutMs", "unchained", "prevResult", "runtimeConfig", "capabilities", "args", "disableCheck", "disableGC"};

/*
 * strict (ADD, CHECK, STATUS): an unknown field or an invalid value is code 7 naming it.
 * Not strict (DEL, best effort, as plugin.ts parseTencConfigForDel): a configuration ADD
 * refuses (a field an upgrade added, an admin's edit, a timeoutMs out of range) must not
 * fail every DEL on the node, or no pod sandbox there is ever removed; "type" must still
 * be "tenc", other fields are ignored and an invalid value is its field's default.
 */
static cfg_t parse_config(const jv *c, int strict) {
  cfg_t out = {DEFAULT_SOCKET, DEFAULT_TIMEOUT_MS, 0};
  for (size_t i = 0; strict && i < c->n; i++) {
    int known = 0;
    for (size_t k = 0; k < sizeof KNOWN / sizeof KNOWN[0]; k++) known |= !strcmp(c->keys[i], KNOWN[k]);
    if (!known) failf(E_CONFIG, "", "%s: unknown field in the tenc plugin's configuration", c->keys[i]);
  }
  jv *type = jget(c, "type");
  if (!type || type->t != J_STR || strcmp(type->str, "tenc")) {
    fail_value("type", type, ", expected \"tenc\"");
  }
  jv *s = jget(c, "agentSocket");
  if (s) {
    if (s->t == J_STR && s->str[0] == '/' && strlen(s->str) == s->strlen_ && s->strlen_ <= 107) out.socket = s->str;
    else if (strict) fail_value("agentSocket", s, " is not an absolute socket path (at most 107 bytes)");
  }
  jv *t = jget(c, "timeoutMs");
  if (t) {
    if (t->t == J_NUM && isfinite(t->num) && t->num == floor(t->num) && t->num >= 100 && t->num <= MAX_TIMEOUT_MS) out.timeout_ms = (long)t->num;
    else if (strict) {
      char why[64];
      snprintf(why, sizeof why, " is not an integer from 100 to %d", MAX_TIMEOUT_MS);
      fail_value("timeoutMs", t, why);
    }
  }
  jv *u = jget(c, "unchained");
  if (u) {
    if (u->t == J_BOOL) out.unchained = u->boolean;
    else if (strict) fail_value("unchained", u, " is not true or false");
  }
  return out;
}

/* an unchained request's prevResult: none (NULL), or an object (printed unchanged, not read) */
static jv *unchained_prev(const jv *c) {
  jv *pr = jget(c, "prevResult");
  if (pr && pr->t != J_OBJ) fail(E_CONFIG, "prevResult: not an object", "");
  return pr;
}

/* prevResult.ips[].address "A/LEN": the pod's addresses, as a JSON array into *out
 * (the 0.3.x and 0.4.0 forms, whose ips[] also carry "version", and the 1.x form) */
static void prev_addresses(const jv *c, buf_t *out) {
  jv *pr = jget(c, "prevResult");
  if (!pr)
    fail(E_CONFIG,
         "prevResult: missing (tenc runs chained: put it after the plugin that gives the pod its address; called alone, as Multus calls the plugin of a "
         "NetworkAttachmentDefinition, it needs \"unchained\": true in its configuration)",
         "");
  if (pr->t != J_OBJ) fail(E_CONFIG, "prevResult: not an object", "");
  jv *ips = jget(pr, "ips");
  if (!ips || ips->t != J_ARR || ips->n == 0) fail(E_CONFIG, "prevResult.ips: missing or empty (the previous plugin gave the pod no address)", "");
  puts_(out, "[");
  for (size_t i = 0; i < ips->n; i++) {
    jv *a = jget(ips->vals[i], "address");
    if (!a || a->t != J_STR) failf(E_CONFIG, "", "prevResult.ips[%zu].address: missing or not a string", i);
    /* ^([0-9.]+|[0-9a-fA-F:]+)\/(\d{1,3})$ */
    const char *slash = strrchr(a->str, '/');
    int ok = slash && slash > a->str && strlen(a->str) == a->strlen_;
    if (ok) {
      size_t hl = (size_t)(slash - a->str), ll = strlen(slash + 1);
      int v4 = strspn(a->str, "0123456789.") == hl, v6 = strspn(a->str, "0123456789abcdefABCDEF:") == hl;
      ok = (v4 || v6) && ll >= 1 && ll <= 3 && strspn(slash + 1, "0123456789") == ll;
    }
    if (!ok) {
      char field[48];
      snprintf(field, sizeof field, "prevResult.ips[%zu].address", i);
      fail_value(field, a, " is not ADDRESS/LEN");
    }
    char host[128];
    size_t hl = (size_t)(slash - a->str);
    if (hl >= sizeof host) hl = sizeof host - 1;
    for (size_t k = 0; k < hl; k++) host[k] = (char)((a->str[k] >= 'A' && a->str[k] <= 'F') ? a->str[k] + 32 : a->str[k]);
    host[hl] = 0;
    if (i) puts_(out, ",");
    put_json_str(out, host);
  }
  puts_(out, "]");
}

/* ---- CNI_ARGS ------------------------------------------------------------------------ */

typedef struct {
  char *ns, *name, *uid;
} podargs_t;

static podargs_t parse_args(const char *s) {
  podargs_t a = {NULL, NULL, NULL};
  if (!s) return a;
  char *copy = strdup(s);
  if (!copy) die_oom();
  for (char *part = copy, *next; part; part = next) {
    next = strchr(part, ';');
    if (next) *next++ = 0;
    if (!*part) continue;
    char *eq = strchr(part, '=');
    if (!eq || eq == part) {
      buf_t b = {0};
      puts_(&b, "CNI_ARGS: ");
      put_json_str(&b, part);
      puts_(&b, " is not KEY=VALUE");
      fail(E_ENV, b.p, "");
    }
    *eq = 0;
    if (!strcmp(part, "K8S_POD_NAMESPACE")) a.ns = eq + 1;
    else if (!strcmp(part, "K8S_POD_NAME")) a.name = eq + 1;
    else if (!strcmp(part, "K8S_POD_UID")) a.uid = eq + 1;
  }
  return a;
}

static void need_pod(const podargs_t *a) {
  if (!a->ns || !*a->ns || !a->name || !*a->name) fail(E_ENV, "CNI_ARGS: K8S_POD_NAMESPACE and K8S_POD_NAME are required (tenc protects Kubernetes pods)", "");
}

/* ---- main ------------------------------------------------------------------------------ */

/* v's place in VERSIONS (in order, oldest first), or -1 */
static int version_index(const char *v) {
  for (size_t i = 0; i < NVERSIONS; i++)
    if (!strcmp(v, VERSIONS[i])) return (int)i;
  return -1;
}
static int supported(const char *v) { return version_index(v) >= 0; }

static void field(buf_t *b, const char *k, const char *v) {
  puts_(b, ",");
  put_json_str(b, k);
  puts_(b, ":");
  put_json_str(b, v);
}

int main(void) {
  const char *cmd = need("CNI_COMMAND");
  if (strcmp(cmd, "ADD") && strcmp(cmd, "DEL") && strcmp(cmd, "CHECK") && strcmp(cmd, "VERSION") && strcmp(cmd, "STATUS") && strcmp(cmd, "GC")) {
    buf_t b = {0};
    puts_(&b, "CNI_COMMAND: ");
    put_json_str(&b, cmd);
    puts_(&b, " is not one of ADD, DEL, CHECK, VERSION, STATUS, GC");
    fail(E_ENV, b.p, "");
  }
  buf_t in = {0};
  put(&in, "", 0);
  for (;;) {
    char tmp[65536];
    ssize_t n = read(0, tmp, sizeof tmp);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) failf(E_IO, "", "stdin: %s", strerror(errno));
    if (n == 0) break;
    put(&in, tmp, (size_t)n);
    if (in.n > MAX_STDIN) fail(E_DECODE, "stdin: more than 1 MiB", "");
  }
  const char *perr = NULL;
  jv *c = jparse(in.p, in.n, &perr);
  int is_version = !strcmp(cmd, "VERSION");
  if (!c && !is_version) fail(E_DECODE, "stdin: the network configuration is not JSON", perr);
  if (c && c->t != J_OBJ) fail(E_DECODE, "stdin: the network configuration is not a JSON object", "");
  jv *cv = c ? jget(c, "cniVersion") : NULL;
  if (c && (!cv || cv->t != J_STR)) fail(E_CONFIG, "cniVersion: missing or not a string", "");
  if (cv && supported(cv->str)) version = cv->str;
  if (is_version) {
    buf_t b = {0};
    puts_(&b, "{\"cniVersion\":");
    put_json_str(&b, version);
    puts_(&b, ",\"supportedVersions\":[");
    for (size_t i = 0; i < NVERSIONS; i++) {
      if (i) puts_(&b, ",");
      put_json_str(&b, VERSIONS[i]);
    }
    puts_(&b, "]}\n");
    fwrite(b.p, 1, b.n, stdout);
    return 0;
  }
  if (!supported(cv->str)) {
    buf_t d = {0};
    puts_(&d, "supported: ");
    for (size_t i = 0; i < NVERSIONS; i++) {
      if (i) puts_(&d, ", ");
      puts_(&d, VERSIONS[i]);
    }
    if (!strcmp(cv->str, "0.1.0") || !strcmp(cv->str, "0.2.0")) puts_(&d, PRE_CHAINING);
    failf(E_VERSION, d.p, "cniVersion: %s is not supported", cv->str);
  }

  if (!strcmp(cmd, "CHECK") && version_index(cv->str) < version_index("0.4.0"))
    /* CHECK came with 0.4.0: refused as libcni's skel does (the runtime does not send it) */
    failf(E_VERSION, "CHECK needs cniVersion 0.4.0 or later", "cniVersion: %s does not allow CHECK", cv->str);

  if (!strcmp(cmd, "GC")) {
    /* A 1.1.0 command (libcni sends it only for such a network). Nothing to collect:
     * tenc keeps no state on the host, and the agent drops a container's registration
     * (stops its proxy, cleans its netns) at its DEL. Accepted so the runtime's GC of the
     * network list does not fail on tenc; cni.dev/valid-attachments is not read. */
    if (version_index(cv->str) < version_index("1.1.0")) failf(E_VERSION, "GC needs cniVersion 1.1.0 or later", "cniVersion: %s does not allow GC", cv->str);
    return 0;
  }

  if (!strcmp(cmd, "STATUS")) {
    cfg_t cfg = parse_config(c, 1);
    char code[32], msg[1024];
    if (ask(&cfg, "{\"id\":1,\"op\":\"cni-status\"}\n", cfg.timeout_ms, NULL, code, sizeof code, msg, sizeof msg) != 0) failf(E_UNAVAILABLE, "", "tenc agent not reachable at %s: %s", cfg.socket, msg);
    return 0;
  }

  const char *cid = need("CNI_CONTAINERID");
  if (strlen(cid) > 256 || !((cid[0] >= 'A' && cid[0] <= 'Z') || (cid[0] >= 'a' && cid[0] <= 'z') || (cid[0] >= '0' && cid[0] <= '9')) ||
      strspn(cid, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") != strlen(cid)) {
    buf_t b = {0};
    puts_(&b, "CNI_CONTAINERID: ");
    put_json_str(&b, cid);
    puts_(&b, " is not a container id");
    fail(E_ENV, b.p, "");
  }
  buf_t req = {0};
  puts_(&req, "{\"id\":1");
  if (!strcmp(cmd, "DEL")) {
    /* DEL, best effort (CNI spec, DEL): the container id is all it needs of the
     * environment. An ADD refused for a bad CNI_IFNAME, CNI_NETNS or CNI_ARGS is followed by
     * the runtime's DEL with the same environment: were it refused too, the sandbox would
     * never be removed. So none of them is read here (skeleton.ts passes them on leniently,
     * and plugin.ts's DEL reads none of them). */
    cfg_t cfg = parse_config(c, 0);
    field(&req, "op", "cni-del");
    field(&req, "containerId", cid);
    puts_(&req, "}\n");
    ask_or_fail(&cfg, req.p, cfg.timeout_ms + 1000);
    return 0;
  }
  const char *ifname = need("CNI_IFNAME");
  if (strlen(ifname) > 15 || strpbrk(ifname, "/: \t\n\r\v\f")) {
    buf_t b = {0};
    puts_(&b, "CNI_IFNAME: ");
    put_json_str(&b, ifname);
    puts_(&b, " is not an interface name");
    fail(E_ENV, b.p, "");
  }
  const char *netns = need("CNI_NETNS");
  if (*netns != '/') {
    buf_t b = {0};
    puts_(&b, "CNI_NETNS: ");
    put_json_str(&b, netns);
    puts_(&b, " is not an absolute path");
    fail(E_ENV, b.p, "");
  }
  podargs_t pa = parse_args(getenv("CNI_ARGS"));
  cfg_t cfg = parse_config(c, 1);

  if (!strcmp(cmd, "ADD")) {
    buf_t addrs = {0};
    jv *prev = NULL;
    /* unchained: no addresses asked, the agent reads them from the pod's netns */
    if (cfg.unchained) prev = unchained_prev(c);
    else prev_addresses(c, &addrs);
    need_pod(&pa);
    field(&req, "op", "cni-add");
    field(&req, "containerId", cid);
    field(&req, "netns", netns);
    field(&req, "ifname", ifname);
    field(&req, "podNamespace", pa.ns);
    field(&req, "podName", pa.name);
    field(&req, "podUid", pa.uid ? pa.uid : "");
    if (!cfg.unchained) {
      puts_(&req, ",\"addresses\":");
      puts_(&req, addrs.p);
    }
    printf_(&req, ",\"timeoutMs\":%ld}\n", cfg.timeout_ms);
    ask_or_fail(&cfg, req.p, cfg.timeout_ms + 1000);
    jv *pr = cfg.unchained ? prev : jget(c, "prevResult");
    if (pr) {
      /* prevResult unchanged: its text as the runtime gave it */
      fwrite(pr->raw, 1, pr->rawlen, stdout);
      fputs("\n", stdout);
    } else {
      /* unchained, nothing before tenc: an empty result (plugin.ts emptyResult), every
       * key a version requires (0.3.x, 0.4.0: interfaces and ips; 1.x: all five) */
      buf_t r = {0};
      puts_(&r, "{\"cniVersion\":");
      put_json_str(&r, version);
      puts_(&r, ",\"interfaces\":[],\"ips\":[],\"routes\":[],\"dns\":{}}\n");
      fwrite(r.p, 1, r.n, stdout);
    }
    return fflush(stdout) == 0 ? 0 : 1;
  }
  /* CHECK (unchained: prevResult is the empty result of ADD, or none: not read) */
  buf_t addrs = {0};
  if (cfg.unchained) unchained_prev(c);
  else prev_addresses(c, &addrs);
  need_pod(&pa);
  field(&req, "op", "cni-check");
  field(&req, "containerId", cid);
  field(&req, "netns", netns);
  field(&req, "podNamespace", pa.ns);
  field(&req, "podName", pa.name);
  field(&req, "podUid", pa.uid ? pa.uid : "");
  /* the agent waits up to timeoutMs for a proxy still starting (as `tenc cni` asks) */
  printf_(&req, ",\"timeoutMs\":%ld}\n", cfg.timeout_ms);
  ask_or_fail(&cfg, req.p, cfg.timeout_ms + 1000);
  return 0;
}
