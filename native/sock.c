/* sock.c: marked sockets for the DNS proxy's upstream connections.
 *
 *   sockSetMark(fd, mark)          SO_MARK on an open socket (node's dgram socket)
 *   sockTcpMarked(family, mark)    -> fd of a new non-blocking TCP socket (4 or 6) with
 *                                     SO_MARK set before it connects
 *
 * The mark is tenc's fwmark: the proxy's own queries skip tenc's policy rule (they
 * never enter tenc0) and the nftables redirect of port 53 (they reach the real
 * cluster DNS). Node cannot set SO_MARK itself. */
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include "modules.h"
#include "util.h"

static napi_value sock_set_mark(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  TENC_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int64_t fd, mark;
  if (tenc_get_int(env, argv[0], 0, 0x7fffffffLL, "fd", &fd) < 0) return NULL;
  if (tenc_get_int(env, argv[1], 0, 0xffffffffLL, "mark", &mark) < 0) return NULL;
  unsigned m = (unsigned)mark;
  if (setsockopt((int)fd, SOL_SOCKET, SO_MARK, &m, sizeof m) < 0)
    return tenc_throw_errno(env, errno, "SO_MARK 0x%x on fd %d", m, (int)fd);
  return NULL;
}

static napi_value sock_tcp_marked(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  TENC_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int64_t fam, mark;
  if (tenc_get_int(env, argv[0], 4, 6, "family", &fam) < 0) return NULL;
  if (tenc_get_int(env, argv[1], 0, 0xffffffffLL, "mark", &mark) < 0) return NULL;
  if (fam != 4 && fam != 6) return tenc_throw_errno(env, EINVAL, "family %d is not 4 or 6", (int)fam);
  int fd = socket(fam == 4 ? AF_INET : AF_INET6, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return tenc_throw_errno(env, errno, "socket tcp%d", (int)fam);
  unsigned m = (unsigned)mark;
  if (m != 0 && setsockopt(fd, SOL_SOCKET, SO_MARK, &m, sizeof m) < 0) {
    int e = errno;
    close(fd);
    return tenc_throw_errno(env, e, "SO_MARK 0x%x on tcp%d", m, (int)fam);
  }
  napi_value res;
  TENC_CHECK(env, napi_create_int32(env, fd, &res));
  return res;
}

napi_status tenc_init_sock(napi_env env, napi_value exports) {
  napi_status s = tenc_set_fn(env, exports, "sockSetMark", sock_set_mark);
  if (s != napi_ok) return s;
  return tenc_set_fn(env, exports, "sockTcpMarked", sock_tcp_marked);
}
