{
  "targets": [
    {
      "target_name": "t2cp",
      "sources": [
        "addon/binding.cc",
        "addon/binding_engine.cc",
        "addon/binding_gateway.cc",
        "addon/binding_util.cc",
        "addon/engine.cc",
        "addon/event_queue.cc",
        "addon/flow_table.cc",
        "addon/incoming_capture.cc",
        "addon/incoming_injection.cc",
        "addon/incoming_processor.cc",
        "addon/incoming_tun.cc",
        "addon/ip_reassembly.cc",
        "addon/outgoing_nfqueue.cc",
        "addon/nft_batch.cc",
        "addon/outgoing_nftables.cc",
        "addon/outgoing_processor.cc",
        "addon/output_compare.cc",
        "addon/packet.cc",
        "addon/recovery_active_mode.cc",
        "addon/recovery_active_mode_kernel.cc",
        "addon/recovery_connection_takeover.cc",
        "addon/recovery_fence.cc",
        "addon/recovery_ip_takeover.cc",
        "addon/recovery_takeover.cc",
        "addon/relay_ports.cc",
        "addon/stream_buffer.cc",
        "addon/traffic_recorder.cc",
        "addon/udp_compare.cc",
        "addon/udp_ledger.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-fexceptions"],
      "libraries": ["-lpcap", "-lnetfilter_queue", "-lmnl", "-lbpf"],
      "actions": [
        {
          "action_name": "active_mode_translator",
          "inputs": ["addon/recovery_active_mode.bpf.c", "addon/recovery_active_mode_maps.h"],
          "outputs": ["<(PRODUCT_DIR)/recovery_active_mode.bpf.o"],
          "action": ["clang", "-O2", "-g", "-Wall", "-target", "bpf",
                     "-I/usr/include/<!(gcc -print-multiarch)", "-Iaddon",
                     "-c", "addon/recovery_active_mode.bpf.c", "-o", "<@(_outputs)"]
        }
      ]
    }
  ]
}
