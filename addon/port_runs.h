// Runs of consecutive ports: a UDP media range (10000-10100) is one rule in
// nftables and one "portrange" in the capture filter, not a hundred.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

namespace t2cp {

struct PortRun {
  uint16_t first, last;  // inclusive
};

// The runs of ports (any order, duplicates allowed), ascending.
inline std::vector<PortRun> port_runs(std::vector<uint16_t> ports) {
  std::sort(ports.begin(), ports.end());
  ports.erase(std::unique(ports.begin(), ports.end()), ports.end());
  std::vector<PortRun> runs;
  for (uint16_t p : ports) {
    if (!runs.empty() && uint32_t(runs.back().last) + 1 == p) runs.back().last = p;
    else runs.push_back({p, p});
  }
  return runs;
}

}  // namespace t2cp
