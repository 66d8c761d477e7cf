#include "flow_table.h"

namespace t2cp {

Flow* FlowTable::insert(const FlowKey& k) {
  if (map_.size() >= max_) return nullptr;
  auto f = std::make_unique<Flow>();
  f->key = k;
  f->id = next_id_++;
  Flow* raw = f.get();
  map_[k] = std::move(f);
  return raw;
}

std::unique_ptr<Flow> FlowTable::make_detached(const FlowKey& k) {
  auto f = std::make_unique<Flow>();
  f->key = k;
  f->id = next_id_++;
  return f;
}

}  // namespace t2cp
