/* raw.c: opens the raw sockets that inject decrypted packets into the local stack
 * (the 'raw' inject mode of the engine; the other mode writes to the TUN device).
 *
 *   rawOpen(family, fwmark) -> fd      family 4 or 6
 *
 * IPv4: socket(AF_INET, SOCK_RAW, IPPROTO_RAW), which implies IP_HDRINCL: the
 * packet is sent as given (the kernel fills only the header checksum).
 * IPv6: socket(AF_INET6, SOCK_RAW, IPPROTO_RAW), which implies IPV6_HDRINCL.
 * Blocking (backpressure on the receive thread); send-only: shutdown(SHUT_RD). */
#include <netinet/in.h>
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

napi_status tenc_init_raw(napi_env env, napi_value exports) {
  return tenc_set_fn(env, exports, "rawOpen", raw_open);
}
