/* raw.c: opens the raw sockets that inject decrypted packets into the local stack
 * (the 'raw' inject mode of the engine; the other mode writes to the TUN device).
 *
 *   rawOpen(family, fwmark) -> fd      family 4 or 6
 *   rawSend(fd, packet) -> bytes       sends one whole IP packet to its own
 *                                      destination (a route_miss packet released
 *                                      after a bypass route was installed)
 *
 * IPv4: socket(AF_INET, SOCK_RAW, IPPROTO_RAW), which implies IP_HDRINCL: the
 * packet is sent as given (the kernel fills only the header checksum).
 * IPv6: socket(AF_INET6, SOCK_RAW, IPPROTO_RAW), which implies IPV6_HDRINCL.
 * Blocking (backpressure on the receive thread); send-only: shutdown(SHUT_RD). */
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "modules.h"
#include "util.h"

static napi_value raw_open(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  TENC_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int64_t fam, mark = 0;
  if (tenc_get_int(env, argv[0], 4, 6, "family", &fam) < 0) return NULL;
  if (fam != 4 && fam != 6) return tenc_throw_range(env, "family must be 4 or 6");
  if (argc > 1 && tenc_get_int(env, argv[1], 0, 0xffffffffLL, "fwmark", &mark) < 0) return NULL;
  int fd = socket(fam == 4 ? AF_INET : AF_INET6, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW);
  if (fd < 0) return tenc_throw_errno(env, errno, "socket raw ipv%d", (int)fam);
  if (mark != 0) {
    unsigned m = (unsigned)mark;
    if (setsockopt(fd, SOL_SOCKET, SO_MARK, &m, sizeof m) < 0) {
      int e = errno;
      close(fd);
      return tenc_throw_errno(env, e, "SO_MARK 0x%x on raw ipv%d", m, (int)fam);
    }
  }
  int bufsz = 4 << 20;
  if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &bufsz, sizeof bufsz) < 0)
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bufsz, sizeof bufsz);
  shutdown(fd, SHUT_RD);
  napi_value res;
  napi_create_int32(env, fd, &res);
  return res;
}

static napi_value raw_send(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  TENC_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2) return tenc_throw_type(env, "rawSend(fd, packet)");
  int64_t fd;
  uint8_t *p;
  size_t len;
  if (tenc_get_int(env, argv[0], 0, 0x7fffffff, "fd", &fd) < 0) return NULL;
  if (tenc_get_bytes(env, argv[1], "packet", &p, &len) < 0) return NULL;
  tenc_ipsa sa;
  socklen_t sl;
  if (len >= 20 && p[0] >> 4 == 4) {
    sl = tenc_ipsa_set(&sa, 4, p + 16);
  } else if (len >= 40 && p[0] >> 4 == 6) {
    sl = tenc_ipsa_set(&sa, 6, p + 24);
  } else {
    return tenc_throw_range(env, "rawSend: packet is not an IPv4 or IPv6 packet");
  }
  ssize_t r;
  do
    r = sendto((int)fd, p, len, 0, (struct sockaddr *)&sa, sl);
  while (r < 0 && errno == EINTR);
  if (r < 0) return tenc_throw_errno(env, errno, "rawSend");
  napi_value res;
  napi_create_int64(env, r, &res);
  return res;
}

napi_status tenc_init_raw(napi_env env, napi_value exports) {
  napi_status s = tenc_set_fn(env, exports, "rawOpen", raw_open);
  return s == napi_ok ? tenc_set_fn(env, exports, "rawSend", raw_send) : s;
}
