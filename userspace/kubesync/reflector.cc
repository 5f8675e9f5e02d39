// Reflector: list + watch of one kind into the Mirror (reflector.h).
#include "kubesync/reflector.h"

#include <algorithm>
#include <cstdio>
#include <thread>

namespace sluice::kubesync {

using nlohmann::json;

namespace {

constexpr size_t kMaxListBytes = size_t(512) << 20;  // one page is far smaller
constexpr size_t kMaxEventBytes = size_t(16) << 20;  // an object is at most ~1.5 MiB in etcd
constexpr std::chrono::milliseconds kListIdle{30000};
// A watch asks for timeoutSeconds=300 (+ bookmarks about every minute).
constexpr int kWatchSeconds = 300;
constexpr std::chrono::milliseconds kWatchIdle{(kWatchSeconds + 60) * 1000};

// DNS-1123 names and labels (the API server enforces them; checked again
// because they become file names).
// 250: "<name>.json" must fit a file name's 255 bytes.
bool safeName(const std::string& s) {
  if (s.empty() || s.size() > 250 || s.front() == '.' || s.front() == '-') return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.';
  });
}

std::string str(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

std::string urlEncode(const std::string& s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

void sleepUnless(const std::atomic<bool>& stop, std::chrono::milliseconds d) {
  for (auto left = d; left.count() > 0 && !stop; left -= std::chrono::milliseconds(50))
    std::this_thread::sleep_for(std::min(left, std::chrono::milliseconds(50)));
}

}  // namespace

std::string Kind::path(const std::string& ns) const {
  std::string base = apiVersion.find('/') == std::string::npos ? "/api/" + apiVersion : "/apis/" + apiVersion;
  if (!ns.empty()) base += "/namespaces/" + ns;
  return base + "/" + plural;
}

std::vector<Kind> mirroredKinds(const std::string& istioVersion) {
  const std::string istio = "networking.istio.io/" + istioVersion;
  return {
      {"services", "v1", "Service", "services", ""},
      {"endpointslices", "discovery.k8s.io/v1", "EndpointSlice", "endpointslices", ""},
      // Finished pods back no endpoint and carry no workload.
      {"pods", "v1", "Pod", "pods", "fieldSelector=" + urlEncode("status.phase!=Succeeded,status.phase!=Failed")},
      {"virtualservices", istio, "VirtualService", "virtualservices", ""},
      {"destinationrules", istio, "DestinationRule", "destinationrules", ""},
      {"gateways", istio, "Gateway", "gateways", ""},
      {"serviceentries", istio, "ServiceEntry", "serviceentries", ""},
      {"workloadentries", istio, "WorkloadEntry", "workloadentries", ""},
      {"envoyfilters", "networking.istio.io/v1alpha3", "EnvoyFilter", "envoyfilters", ""},
  };
}

std::optional<std::pair<std::string, std::string>> render(const Kind& k, const json& object) {
  if (!object.is_object()) return std::nullopt;
  const json meta = object.value("metadata", json::object());
  const std::string name = str(meta, "name"), ns = str(meta, "namespace");
  if (!safeName(name) || !safeName(ns)) return std::nullopt;
  json m = {{"name", name}, {"namespace", ns}};
  if (auto it = meta.find("labels"); it != meta.end() && it->is_object() && !it->empty()) m["labels"] = *it;
  if (k.kind != "Pod") {
    if (auto it = meta.find("annotations"); it != meta.end() && it->is_object()) {
      json a = *it;
      a.erase("kubectl.kubernetes.io/last-applied-configuration");
      if (!a.empty()) m["annotations"] = std::move(a);
    }
  }
  json out = {{"apiVersion", k.apiVersion}, {"kind", k.kind}, {"metadata", std::move(m)}};
  if (k.kind == "EndpointSlice") {
    for (const char* f : {"addressType", "ports", "endpoints"})
      if (auto it = object.find(f); it != object.end() && !it->is_null()) out[f] = *it;
  } else if (k.kind == "Pod") {
    json spec = object.value("spec", json::object()), status = object.value("status", json::object());
    json s = json::object(), st = json::object();
    if (spec.contains("nodeName")) s["nodeName"] = spec["nodeName"];
    for (const char* f : {"phase", "podIP", "podIPs"})
      if (status.contains(f)) st[f] = status[f];
    out["spec"] = std::move(s);
    out["status"] = std::move(st);
  } else if (auto it = object.find("spec"); it != object.end()) {
    out["spec"] = *it;
  }
  return std::make_pair(k.dir + "/" + ns + "/" + name + ".json", out.dump(1) + "\n");
}

Reflector::Reflector(ApiClient& api, Kind kind, std::string ns, Mirror& mirror)
    : api_(api), kind_(std::move(kind)), ns_(std::move(ns)), mirror_(mirror) {}

void Reflector::log(const std::string& msg) { fprintf(stderr, "sluice-kube-sync: %s: %s\n", kind_.dir.c_str(), msg.c_str()); }

Reflector::Counters Reflector::counters() const {
  std::lock_guard lock(mu_);
  return counters_;
}

std::optional<std::string> Reflector::list(const std::atomic<bool>& stop) {
  std::map<std::string, std::string> files;
  std::string cont, resourceVersion;
  size_t skipped = 0;
  do {
    std::string path = kind_.path(ns_) + "?limit=500";
    if (!kind_.selector.empty()) path += "&" + kind_.selector;
    if (!cont.empty()) path += "&continue=" + urlEncode(cont);
    std::string body;
    bool tooBig = false;
    auto r = api_.get(
        path,
        [&](int, std::string_view d) {
          if (body.size() + d.size() > kMaxListBytes) return !(tooBig = true);
          body.append(d);
          return true;
        },
        stop, kListIdle);
    if (r.stopped) return std::nullopt;
    if (!r.error.empty() || tooBig) {
      log("list failed: " + (tooBig ? std::string("answer over 512 MiB") : r.error));
      return std::nullopt;
    }
    if (r.status == 404) {
      // A CRD that is not installed (no Istio yet, or uninstalled): none of
      // its objects exist, so no file of them stays. Looked at again later.
      if (!warnedMissing_) log("not served by this API server (" + path + ": 404); trying again every minute");
      warnedMissing_ = true;
      mirror_.replaceUnder(kind_.dir, {});
      return std::nullopt;
    }
    if (r.status != 200) {
      log("list failed: HTTP " + std::to_string(r.status) + " " + body.substr(0, 300));
      return std::nullopt;
    }
    json j = json::parse(body, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("items") || !j["items"].is_array()) {
      log("list answer is not a list");
      return std::nullopt;
    }
    for (const json& item : j["items"]) {
      if (auto f = render(kind_, item)) files.emplace(std::move(f->first), std::move(f->second));
      else ++skipped;
    }
    const json meta = j.value("metadata", json::object());
    resourceVersion = str(meta, "resourceVersion");
    cont = str(meta, "continue");
  } while (!cont.empty() && !stop);
  if (stop) return std::nullopt;
  if (resourceVersion.empty()) {
    log("list answer has no resourceVersion");
    return std::nullopt;
  }
  if (warnedMissing_) log("now served");
  warnedMissing_ = false;
  if (skipped) log(std::to_string(skipped) + " object(s) with unusable names skipped");
  log("listed " + std::to_string(files.size()) + " at resourceVersion " + resourceVersion);
  mirror_.replaceUnder(kind_.dir, files);
  std::lock_guard lock(mu_);
  ++counters_.lists;
  return resourceVersion;
}

Reflector::WatchEnd Reflector::watch(std::string& resourceVersion, const std::atomic<bool>& stop) {
  std::string path = kind_.path(ns_) + "?watch=1&allowWatchBookmarks=true&timeoutSeconds=" +
                     std::to_string(kWatchSeconds) + "&resourceVersion=" + urlEncode(resourceVersion);
  if (!kind_.selector.empty()) path += "&" + kind_.selector;
  {
    std::lock_guard lock(mu_);
    ++counters_.watches;
  }
  WatchEnd end = WatchEnd::Resume;
  bool done = false;
  uint64_t events = 0;
  std::string errorBody;
  LineSplitter lines(kMaxEventBytes);
  auto onLine = [&](std::string_view line) {
    if (done || line.find_first_not_of(" \t\r") == std::string_view::npos) return;
    json ev = json::parse(line, nullptr, false);
    if (ev.is_discarded() || !ev.is_object()) {
      log("unreadable watch event; listing again");
      end = WatchEnd::Relist;
      done = true;
      return;
    }
    const std::string type = str(ev, "type");
    const json& obj = ev.contains("object") ? ev["object"] : json();
    if (type == "ERROR") {
      const int code = obj.is_object() ? obj.value("code", 0) : 0;
      if (code == 410) {
        log("resourceVersion " + resourceVersion + " is gone (410): listing again");
        std::lock_guard lock(mu_);
        ++counters_.relists410;
        end = WatchEnd::Relist;
      } else {
        log("watch error: " + (obj.is_object() ? str(obj, "message") : std::string(line.substr(0, 300))));
        end = WatchEnd::Failed;
      }
      done = true;
      return;
    }
    const std::string rv = obj.is_object() ? str(obj.value("metadata", json::object()), "resourceVersion") : "";
    if (type == "ADDED" || type == "MODIFIED") {
      if (auto f = render(kind_, obj)) mirror_.put(f->first, std::move(f->second));
    } else if (type == "DELETED") {
      if (auto f = render(kind_, obj)) mirror_.remove(f->first);
    } else if (type != "BOOKMARK") {
      log("unknown watch event type \"" + type + "\" ignored");
    }
    if (!rv.empty()) resourceVersion = rv;
    ++events;
  };
  bool tooLong = false;
  auto r = api_.get(
      path,
      [&](int status, std::string_view d) {
        if (status != 200) {
          if (errorBody.size() < 4096) errorBody.append(d.substr(0, 4096));
          return true;
        }
        if (!lines.feed(d, onLine)) return !(tooLong = true);
        return !done;
      },
      stop, kWatchIdle);
  {
    std::lock_guard lock(mu_);
    counters_.events += events;
  }
  if (r.stopped) return WatchEnd::Resume;
  if (tooLong) {
    log("watch event over 16 MiB; listing again");
    return WatchEnd::Relist;
  }
  if (r.status == 410) {
    log("resourceVersion " + resourceVersion + " is gone (HTTP 410): listing again");
    std::lock_guard lock(mu_);
    ++counters_.relists410;
    return WatchEnd::Relist;
  }
  if (done) return end;
  if (!r.error.empty() || r.status != 200) {
    log("watch failed: " + (r.error.empty() ? "HTTP " + std::to_string(r.status) + " " + errorBody.substr(0, 300) : r.error));
    return events > 0 ? WatchEnd::Resume : WatchEnd::Failed;
  }
  return WatchEnd::Resume;  // the server ended it (timeoutSeconds): resume
}

void Reflector::run(const std::atomic<bool>& stop) {
  std::chrono::milliseconds backoff{500};
  const std::chrono::milliseconds maxBackoff{30000};
  std::optional<std::string> rv;
  int failedWatches = 0;
  // Lists come no closer than this (doubling while they follow each other):
  // a server (or a proxy) answering every watch with 410 is not listed in a loop.
  std::chrono::milliseconds relistGap{0};
  auto lastList = std::chrono::steady_clock::now() - std::chrono::hours(1);
  while (!stop) {
    if (!rv) {
      const auto since = std::chrono::steady_clock::now() - lastList;
      if (since < std::chrono::seconds(1)) {
        relistGap = std::clamp(relistGap * 2, std::chrono::milliseconds(500), maxBackoff);
        sleepUnless(stop, relistGap);
        if (stop) break;
      } else if (since > std::chrono::seconds(60)) {
        relistGap = std::chrono::milliseconds(0);
      }
      rv = list(stop);
      lastList = std::chrono::steady_clock::now();  // from its end: a slow list is throttled too
      if (!rv) {
        if (stop) break;
        std::lock_guard lock(mu_);
        ++counters_.errors;
      }
      if (!rv) {
        sleepUnless(stop, warnedMissing_ ? std::chrono::milliseconds(60000) : backoff);
        backoff = std::min(backoff * 2, maxBackoff);
        continue;
      }
      failedWatches = 0;
    }
    const auto started = std::chrono::steady_clock::now();
    switch (watch(*rv, stop)) {
      case WatchEnd::Resume:
        backoff = std::chrono::milliseconds(500);
        failedWatches = 0;
        // A server that ends watches at once is not asked again in a loop.
        if (std::chrono::steady_clock::now() - started < std::chrono::seconds(1))
          sleepUnless(stop, std::chrono::milliseconds(1000));
        break;
      case WatchEnd::Relist:
        rv.reset();
        break;
      case WatchEnd::Failed:
        {
          std::lock_guard lock(mu_);
          ++counters_.errors;
        }
        // Twice in a row without an event: start over from a list.
        if (++failedWatches >= 2) rv.reset();
        sleepUnless(stop, backoff);
        backoff = std::min(backoff * 2, maxBackoff);
        break;
    }
  }
}

}  // namespace sluice::kubesync
