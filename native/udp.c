/* udp.c: opens the UDP socket that carries tenc's encrypted traffic.
 *
 *   udpOpen(port, fwmark, gro) -> { fd, port, gso, gro }
 *
 * One IPv6 dual-stack socket (IPV6_V6ONLY off) bound to [::]:port, so IPv4 peers
 * appear as v4-mapped addresses. SO_MARK = fwmark (when non-zero) lets policy
 * routing send tenc's own datagrams by the main table instead of back into the
 * TUN device. `gro` asks for UDP_GRO (coalesced receive); the result reports
 * whether the kernel took it and whether UDP_SEGMENT (send GSO) is usable.
 * Blocking sends (backpressure); the engine receives with MSG_DONTWAIT after poll. */
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <sys/socket.h>
#include <unistd.h>
#include "modules.h"
#include "util.h"

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

static napi_value udp_open(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  TENC_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int64_t port, mark;
  int gro = 0;
  if (tenc_get_int(env, argv[0], 0, 65535, "port", &port) < 0) return NULL;
  if (tenc_get_int(env, argv[1], 0, 0xffffffffLL, "fwmark", &mark) < 0) return NULL;
  if (argc > 2 && tenc_get_bool(env, argv[2], "gro", &gro) < 0) return NULL;

  int fd = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return tenc_throw_errno(env, errno, "socket udp6 for port %d", (int)port);
  int off = 0, one = 1;
  int bufsz = 4 << 20;
  if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off) < 0) goto fail_opt;
  if (mark != 0) {
    unsigned m = (unsigned)mark;
    if (setsockopt(fd, SOL_SOCKET, SO_MARK, &m, sizeof m) < 0) {
      int e = errno;
      close(fd);
      return tenc_throw_errno(env, e, "SO_MARK 0x%x on udp port %d", m, (int)port);
    }
  }
  /* Best effort: large buffers absorb bursts; FORCE needs CAP_NET_ADMIN. */
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &bufsz, sizeof bufsz) < 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bufsz, sizeof bufsz);
  if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &bufsz, sizeof bufsz) < 0)
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bufsz, sizeof bufsz);
  struct sockaddr_in6 sa;
  memset(&sa, 0, sizeof sa);
  sa.sin6_family = AF_INET6;
  sa.sin6_port = htons((uint16_t)port);
  sa.sin6_addr = in6addr_any;
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    int e = errno;
    close(fd);
    return tenc_throw_errno(env, e, "bind udp [::]:%d", (int)port);
  }
  socklen_t sl = sizeof sa;
  getsockname(fd, (struct sockaddr *)&sa, &sl);
  int gro_ok = 0;
  if (gro && setsockopt(fd, IPPROTO_UDP, UDP_GRO, &one, sizeof one) == 0) gro_ok = 1;
  /* UDP_SEGMENT as a socket option with 0 is a harmless probe of GSO support. */
  int zero = 0;
  int gso_ok = setsockopt(fd, IPPROTO_UDP, UDP_SEGMENT, &zero, sizeof zero) == 0;

  napi_value res;
  napi_create_object(env, &res);
  tenc_set_int(env, res, "fd", fd);
  tenc_set_int(env, res, "port", ntohs(sa.sin6_port));
  tenc_set_bool(env, res, "gso", gso_ok);
  tenc_set_bool(env, res, "gro", gro_ok);
  return res;
fail_opt: {
  int e = errno;
  close(fd);
  return tenc_throw_errno(env, e, "setsockopt on udp port %d", (int)port);
}
}

napi_status tenc_init_udp(napi_env env, napi_value exports) {
  return tenc_set_fn(env, exports, "udpOpen", udp_open);
}
