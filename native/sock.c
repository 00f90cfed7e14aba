/* sock.c: marked sockets for the DNS proxy's upstream connections.
 *
 *   sockSetMark(fd, mark)          SO_MARK on an open socket (node's dgram socket)
 *   sockTcpMarked(family, mark)    -> fd of a new non-blocking TCP socket (4 or 6) with
 *                                     SO_MARK set before it connects
 *   sockTcpListen(address, port)   -> fd of a non-blocking TCP socket bound to an IPv4
 *                                     or IPv6 address and listening (node adopts it:
 *                                     server.listen({ fd })). Made at once, in the
 *                                     calling thread's namespace: a pod host's DNS
 *                                     proxy makes it inside inNetns (netns.c); node's
 *                                     own listen binds a tick later, outside it.
 *
 * The mark is tenc's fwmark: the proxy's own queries skip tenc's policy rule (they
 * never enter tenc0) and the nftables redirect of port 53 (they reach the real
 * cluster DNS). Node cannot set SO_MARK itself. */
#include <fcntl.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
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

static napi_value sock_tcp_listen(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  TENC_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char addr[64];
  size_t len = 0;
  if (argc < 2 || napi_get_value_string_utf8(env, argv[0], addr, sizeof addr, &len) != napi_ok || len == 0 || len >= sizeof addr - 1)
    return tenc_throw_type(env, "sockTcpListen(address, port): address must be an IPv4 or IPv6 address");
  int64_t port;
  if (tenc_get_int(env, argv[1], 0, 65535, "port", &port) < 0) return NULL;
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  socklen_t sl;
  struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
  struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
  if (inet_pton(AF_INET, addr, &a4->sin_addr) == 1) {
    a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)port);
    sl = sizeof *a4;
  } else if (inet_pton(AF_INET6, addr, &a6->sin6_addr) == 1) {
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons((uint16_t)port);
    sl = sizeof *a6;
  } else {
    return tenc_throw_errno(env, EINVAL, "sockTcpListen: %s is not an IPv4 or IPv6 address", addr);
  }
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return tenc_throw_errno(env, errno, "sockTcpListen: socket");
  int one = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 || bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, 511) < 0) {
    int e = errno;
    close(fd);
    return tenc_throw_errno(env, e, "sockTcpListen: %s port %d", addr, (int)port);
  }
  napi_value res;
  TENC_CHECK(env, napi_create_int32(env, fd, &res));
  return res;
}

napi_status tenc_init_sock(napi_env env, napi_value exports) {
  napi_status s = tenc_set_fn(env, exports, "sockSetMark", sock_set_mark);
  if (s != napi_ok) return s;
  s = tenc_set_fn(env, exports, "sockTcpMarked", sock_tcp_marked);
  if (s != napi_ok) return s;
  return tenc_set_fn(env, exports, "sockTcpListen", sock_tcp_listen);
}
