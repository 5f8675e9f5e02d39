// One kind of object mirrored from the API server: list once, then watch
// from the list's resourceVersion for as long as the server allows, the way
// client-go's reflector does. Bookmarks move the resourceVersion on; a
// watch the server ends is resumed from where it stopped (no new list); only
// 410 Gone (the version is too old) or a failure to resume lists again.
#pragma once

#include <nlohmann/json.hpp>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "kubesync/api_client.h"
#include "kubesync/mirror.h"

namespace sluice::kubesync {

struct Kind {
  std::string dir;         // files go under <out>/<dir>/<namespace>/<name>.json
  std::string apiVersion;  // "v1", "discovery.k8s.io/v1", "networking.istio.io/v1"
  std::string kind;        // "Service"
  std::string plural;      // "services"
  std::string selector;    // extra query for list and watch, e.g. a fieldSelector
  // The path for all namespaces ("/api/v1/services") or one.
  std::string path(const std::string& ns) const;
};

// Services, EndpointSlices, Pods (not finished ones) and the Istio
// networking kinds sluiced reads, at `istioVersion` (EnvoyFilter: v1alpha3).
std::vector<Kind> mirroredKinds(const std::string& istioVersion);

// The file an object becomes: its relative path and the trimmed document
// (metadata name/namespace/labels/annotations without kubectl's
// last-applied copy; the spec; a Pod's node, phase and IPs; an
// EndpointSlice's addressType, ports and endpoints). nullopt for an object
// whose name or namespace would not make a safe file name.
std::optional<std::pair<std::string, std::string>> render(const Kind& k, const nlohmann::json& object);

class Reflector {
 public:
  Reflector(ApiClient& api, Kind kind, std::string ns, Mirror& mirror);
  // Lists and watches until `stop`.
  void run(const std::atomic<bool>& stop);

  struct Counters {
    uint64_t lists = 0, watches = 0, events = 0, relists410 = 0, errors = 0;
  };
  Counters counters() const;
  const Kind& kind() const { return kind_; }

 private:
  // A full list, page by page; the resourceVersion to watch from, or nullopt.
  std::optional<std::string> list(const std::atomic<bool>& stop);
  enum class WatchEnd { Resume, Relist, Failed };
  WatchEnd watch(std::string& resourceVersion, const std::atomic<bool>& stop);
  void log(const std::string& msg);

  ApiClient& api_;
  Kind kind_;
  std::string ns_;
  Mirror& mirror_;
  mutable std::mutex mu_;
  Counters counters_;
  bool warnedMissing_ = false;
};

}  // namespace sluice::kubesync
