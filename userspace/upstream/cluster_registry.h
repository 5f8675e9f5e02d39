// Per-cluster state that outlives one configuration version and is shared by
// every worker (outlier detection, circuit breakers): one T per cluster name,
// kept across reloads while `keep(existing, cluster)` says it still fits.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "route/table.h"

namespace sluice::upstream {

template <class T>
class ClusterRegistry {
 public:
  using Table = std::vector<std::shared_ptr<T>>;

  // A table indexed by Cluster::index for `snap`: `make(cluster)` gives a
  // fresh T or nullptr (no state for that cluster); an existing T of the
  // same name is reused when `keep(*existing, cluster)`. Clusters gone from
  // the snapshot are dropped (objects still referenced live on).
  template <class Make, class Keep>
  std::shared_ptr<const Table> adopt(const route::Snapshot& snap, Make&& make, Keep&& keep) {
    auto table = std::make_shared<Table>(snap.clusters.size());
    std::unordered_map<std::string, std::shared_ptr<T>> next;
    std::lock_guard lock(mu_);
    for (const auto& c : snap.clusters) {
      std::shared_ptr<T> t;
      if (auto it = byName_.find(c->name); it != byName_.end() && keep(*it->second, *c)) {
        t = it->second;
      } else {
        t = make(*c);
      }
      if (!t) continue;
      (*table)[c->index] = t;
      next[c->name] = t;
    }
    byName_ = std::move(next);
    return table;
  }

  std::vector<std::shared_ptr<T>> live() const {
    std::lock_guard lock(mu_);
    std::vector<std::shared_ptr<T>> out;
    out.reserve(byName_.size());
    for (const auto& [name, t] : byName_) out.push_back(t);
    return out;
  }

 private:
  mutable std::mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<T>> byName_;
};

}  // namespace sluice::upstream
