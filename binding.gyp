{
  "variables": {
    # TENC_SANITIZE=address,undefined (netns-scripts/sanitize.sh passes --tenc_sanitize):
    # ASan/UBSan build of the addon, loaded with LD_PRELOAD of gcc's libasan.
    "tenc_sanitize%": ""
  },
  "targets": [
    {
      "target_name": "tenc",
      "sources": [
        "native/addon.c",
        "native/aead.c",
        "native/tun.c",
        "native/udp.c",
        "native/raw.c",
        "native/engine_loop.c",
        "native/engine_tx.c",
        "native/engine_rx.c",
        "native/engine_hsgate.c",
        "native/engine_peers.c",
        "native/engine_events.c",
        "native/engine_js.c",
        "native/engine_js_test.c",
        "native/allowedips.c",
        "native/nat.c",
        "native/offload.c",
        "native/csum.c",
        "native/sock.c",
        "native/dnsio.c",
        "native/spawn.c",
        "native/netns.c",
        "native/idlemem.cc"
      ],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-fvisibility=hidden"],
      "cflags_c": ["-std=gnu11"],
      "cflags_cc": ["-std=gnu++17", "-fno-exceptions", "-fno-rtti"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"],
      "conditions": [
        ["tenc_sanitize!=''", {
          "cflags+": ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=<(tenc_sanitize)", "-fno-sanitize-recover=all"],
          "ldflags+": ["-fsanitize=<(tenc_sanitize)"]
        }]
      ]
    }
  ]
}
