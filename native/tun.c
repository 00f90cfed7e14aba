/* tun.c: opens the TUN device the data plane reads outgoing packets from (and, in
 * 'tun' inject mode, writes decrypted packets to).
 *
 *   tunOpen(name, vnetHdr) -> { fd, name, ifindex, vnetHdr, offloads }
 *
 * IFF_TUN | IFF_NO_PI always. With vnetHdr the device is opened with IFF_VNET_HDR
 * (every read/write carries a 10-byte struct virtio_net_hdr) and TUNSETOFFLOAD is
 * tried from the richest feature set down: CSUM|TSO4|TSO6|USO4|USO6, then
 * CSUM|TSO4|TSO6, then none. `offloads` reports the TUN_F_* bits the kernel took.
 * The fd is non-blocking and close-on-exec; the engine owns it once started. */
#include <fcntl.h>
#include <net/if.h>
#include <linux/if_tun.h>
#include <linux/virtio_net.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include "modules.h"
#include "util.h"

#ifndef TUN_F_USO4
#define TUN_F_USO4 0x20
#endif
#ifndef TUN_F_USO6
#define TUN_F_USO6 0x40
#endif

static napi_value tun_open(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  TENC_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char name[IFNAMSIZ];
  int vnet = 0;
  if (tenc_get_str(env, argv[0], name, sizeof name, "name") < 0) return NULL;
  if (argc > 1 && tenc_get_bool(env, argv[1], "vnetHdr", &vnet) < 0) return NULL;
  if (name[0] == 0) return tenc_throw_range(env, "name must not be empty");

  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return tenc_throw_errno(env, errno, "open /dev/net/tun for %s", name);
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI | (vnet ? IFF_VNET_HDR : 0);
  memcpy(ifr.ifr_name, name, strlen(name));
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    int e = errno;
    close(fd);
    return tenc_throw_errno(env, e, "TUNSETIFF %s", name);
  }
  unsigned offloads = 0;
  if (vnet) {
    int hdrsz = sizeof(struct virtio_net_hdr);
    if (ioctl(fd, TUNSETVNETHDRSZ, &hdrsz) < 0) {
      int e = errno;
      close(fd);
      return tenc_throw_errno(env, e, "TUNSETVNETHDRSZ %s", name);
    }
    static const unsigned tries[] = {
        TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_USO4 | TUN_F_USO6,
        TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6,
    };
    for (size_t i = 0; i < sizeof tries / sizeof tries[0]; i++) {
      if (ioctl(fd, TUNSETOFFLOAD, tries[i]) == 0) {
        offloads = tries[i];
        break;
      }
    }
  }
  unsigned ifindex = if_nametoindex(ifr.ifr_name);
  napi_value res, v;
  napi_create_object(env, &res);
  tenc_set_int(env, res, "fd", fd);
  napi_create_string_utf8(env, ifr.ifr_name, NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, res, "name", v);
  tenc_set_int(env, res, "ifindex", ifindex);
  tenc_set_bool(env, res, "vnetHdr", vnet);
  tenc_set_int(env, res, "offloads", offloads);
  return res;
}

/* closeFd(fd): closes a descriptor that was never handed to an engine. */
static napi_value close_fd(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  TENC_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int64_t fd;
  if (tenc_get_int(env, argv[0], 0, 1 << 30, "fd", &fd) < 0) return NULL;
  if (close((int)fd) < 0) return tenc_throw_errno(env, errno, "close fd %d", (int)fd);
  return NULL;
}

napi_status tenc_init_tun(napi_env env, napi_value exports) {
  napi_status s = tenc_set_fn(env, exports, "tunOpen", tun_open);
  if (s != napi_ok) return s;
  return tenc_set_fn(env, exports, "closeFd", close_fd);
}
