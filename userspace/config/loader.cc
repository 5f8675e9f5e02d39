// Document-level loading: YAML syntax, apiVersion/kind dispatch, metadata,
// duplicate detection and the directory walk. Spec parsing lives in
// parse_<kind>.cc.
#include "config/loader.h"

#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <unordered_map>

#include <xxhash.h>

#include "config/parse_util.h"

namespace sluice::config {

using detail::Ctx;
using yaml::Node;

std::string ConfigError::str() const {
  std::string out = file;
  if (line > 0) out += ":" + std::to_string(line);
  auto part = [&](const std::string& s) {
    if (s.empty()) return;
    if (!out.empty()) out += ": ";
    out += s;
  };
  part(resource);
  part(path);
  part(message);
  return out;
}

std::string expandHost(std::string_view host, std::string_view ns) {
  std::string h = detail::lower(host);
  if (h.empty() || h.find('.') != std::string::npos || h.find('*') != std::string::npos) return h;
  h += '.';
  h += ns;
  h += ".svc.cluster.local";
  return h;
}

namespace {

bool isIstioNetworking(std::string_view apiVersion) {
  return apiVersion == "networking.istio.io/v1" || apiVersion == "networking.istio.io/v1beta1" ||
         apiVersion == "networking.istio.io/v1alpha3";
}

// Kubernetes DNS-1123 subdomain (resource names) / label (namespaces).
bool validK8sName(std::string_view s, size_t max, bool allowDots) {
  if (s.empty() || s.size() > max) return false;
  auto alnum = [](char ch) { return std::islower(static_cast<unsigned char>(ch)) || std::isdigit(static_cast<unsigned char>(ch)); };
  if (!alnum(s.front()) || !alnum(s.back())) return false;
  return std::all_of(s.begin(), s.end(), [&](char ch) { return alnum(ch) || ch == '-' || (allowDots && ch == '.'); });
}

void parseMetadata(Ctx& c, const Node& n, ObjectMeta& out) {
  forFields(c, n, "metadata", [&](const std::string& key, const Node& v, const std::string& p) {
    if (key == "name") {
      if (readString(c, v, p, out.name) && !validK8sName(out.name, 253, true))
        c.error(v, p, "invalid name \"" + out.name + "\" (want a lower-case DNS-1123 subdomain)");
    } else if (key == "namespace") {
      if (readString(c, v, p, out.namespace_) && !validK8sName(out.namespace_, 63, false))
        c.error(v, p, "invalid namespace \"" + out.namespace_ + "\" (want a lower-case DNS-1123 label)");
    } else if (key == "labels") {
      readStringMap(c, v, p, out.labels);
    } else if (key == "annotations") {
      readStringMap(c, v, p, out.annotations);
    } else if (key == "uid" || key == "resourceVersion" || key == "generation" || key == "creationTimestamp" ||
               key == "managedFields" || key == "finalizers" || key == "ownerReferences" ||
               key == "generateName" || key == "deletionTimestamp" || key == "selfLink" ||
               key == "deletionGracePeriodSeconds") {
      // Server-populated fields, present in `kubectl get -o yaml` output.
    } else {
      return false;
    }
    return true;
  });
}

std::optional<std::string> scalarField(const Node& map, std::string_view key) {
  for (const auto& [k, v] : map.entries())
    if (k.scalar() == key) return v.isScalar() ? std::optional<std::string>(v.scalar()) : std::nullopt;
  return std::nullopt;
}

struct DocHeader {
  std::string apiVersion, kind;
  Node metadata, spec, status, items;
  bool hasMetadata = false, hasSpec = false;
  int line = 0;
};

// A ConfigMap whose data values include rate limit configurations (YAML
// with a `domain` and `descriptors`), as the seed mounts `ratelimit-config`
// into the ratelimit service: each such value is loaded (one that reads as
// neither YAML nor anything else is an error). False when it has none
// (the ConfigMap is skipped as any other unsupported kind).
bool loadRateLimitConfigMap(Ctx& c, const Node& doc, const DocHeader& h, LoadReport& out) {
  const std::string name = scalarField(h.metadata, "name").value_or("");
  const std::string ns = scalarField(h.metadata, "namespace").value_or("default");
  bool any = false;
  for (const auto& [k, v] : doc.entries()) {
    if (k.scalar() != "data" || !v.isMap()) continue;
    for (const auto& [dk, dv] : v.entries()) {
      if (!dv.isScalar()) continue;
      const std::string& text = dv.scalar();
      if (text.find("domain") == std::string::npos || text.find("descriptors") == std::string::npos) continue;
      yaml::ParseResult parsed = yaml::parseAll(text);
      if (parsed.error) {
        // Meant as one (it names both), but unreadable: the service would refuse it.
        any = true;
        c.setResource("ConfigMap " + ns + "/" + name, h.line);
        c.error(dv, "data." + dk.scalar(), "YAML error in a rate limit configuration: " + parsed.error->message);
        continue;
      }
      if (parsed.documents.size() != 1 || !parsed.documents[0]->root.isMap()) continue;
      const Node& root = parsed.documents[0]->root;
      bool hasDescriptors = false;
      for (const auto& [rk, rv] : root.entries()) hasDescriptors = hasDescriptors || rk.scalar() == "descriptors";
      if (!scalarField(root, "domain") || !hasDescriptors) continue;
      any = true;
      RateLimitDomainConfig rl;
      rl.source = SourceRef{c.file(), dv.line()};
      c.setResource("ConfigMap " + ns + "/" + name, h.line);
      // The value is a block under its key: its first line is the next one.
      c.setLineOffset(dv.line());
      detail::parseRateLimitDomain(c, parsed.documents[0]->root, "data." + dk.scalar(), rl);
      c.setLineOffset(0);
      out.resources.rateLimitDomains.push_back(std::move(rl));
    }
  }
  return any;
}

bool isKubernetesKind(const DocHeader& h) {
  return (h.apiVersion == "v1" && (h.kind == "Service" || h.kind == "Pod")) ||
         (h.apiVersion == "discovery.k8s.io/v1" && h.kind == "EndpointSlice");
}

void loadDocument(Ctx& c, const Node& doc, LoadReport& out, std::string_view itemApiVersion = {},
                  std::string_view itemKind = {});

// `kind: List` (what `kubectl get -o yaml` prints for several objects) or a
// typed list such as ServiceList (what the API returns, whose items name no
// kind): each item loads as a document of its own.
void loadList(Ctx& c, const DocHeader& h, LoadReport& out) {
  if (h.items.isNull()) return;
  if (!h.items.isSequence()) {
    c.setResource(h.kind, h.line);
    c.error(h.items, "items", "must be a list");
    return;
  }
  std::string itemKind = h.kind == "List" ? "" : h.kind.substr(0, h.kind.size() - 4);
  for (const Node& item : h.items.items()) loadDocument(c, item, out, h.apiVersion, itemKind);
}

// A Kubernetes Service, EndpointSlice or Pod: the registry's inputs.
void loadKubernetesObject(Ctx& c, const Node& doc, const DocHeader& h, ObjectMeta meta, LoadReport& out) {
  const SourceRef src{c.file(), h.line};
  static const yaml::NodeData kEmptyMap{yaml::Kind::Map};
  Node spec(&kEmptyMap);
  if (h.hasSpec && !h.spec.isNull()) spec.reset(h.spec);
  if (h.kind == "Service") {
    KubeService svc;
    svc.metadata = std::move(meta);
    svc.source = src;
    detail::parseKubeServiceSpec(c, spec, svc);
    out.resources.kubeServices.push_back(std::move(svc));
  } else if (h.kind == "EndpointSlice") {
    EndpointSlice slice;
    slice.metadata = std::move(meta);
    slice.source = src;
    detail::parseEndpointSlice(c, doc, slice);
    out.resources.endpointSlices.push_back(std::move(slice));
  } else {
    Pod pod;
    pod.metadata = std::move(meta);
    pod.source = src;
    detail::parsePod(c, spec, h.status, pod);
    out.resources.pods.push_back(std::move(pod));
  }
}

// Appends the resource of one document to `out`; errors go through `c`.
// A list's items inherit its apiVersion and, from a typed list, their kind.
void loadDocument(Ctx& c, const Node& doc, LoadReport& out, std::string_view itemApiVersion,
                  std::string_view itemKind) {
  const int docLine = c.line(doc);
  c.setResource("", docLine);
  if (doc.isNull()) return;  // empty document ("---" with nothing after it)
  if (!doc.isMap()) {
    c.error(doc, "", "document must be a map with apiVersion and kind");
    return;
  }
  DocHeader h;
  h.line = docLine;
  for (const auto& [k, v] : doc.entries()) {
    const std::string& key = k.scalar();
    if (key == "apiVersion") h.apiVersion = v.scalar();
    else if (key == "kind") h.kind = v.scalar();
    else if (key == "metadata") h.metadata.reset(v), h.hasMetadata = true;
    else if (key == "spec") h.spec.reset(v), h.hasSpec = true;
    else if (key == "status") h.status.reset(v);
    else if (key == "items") h.items.reset(v);
  }
  if (h.apiVersion.empty()) h.apiVersion = itemApiVersion;
  if (h.kind.empty()) h.kind = itemKind;
  if (h.kind.empty() && h.apiVersion.empty() && scalarField(doc, "domain")) {
    // envoyproxy/ratelimit's own file format, as its service reads it.
    RateLimitDomainConfig rl;
    rl.source = SourceRef{c.file(), docLine};
    c.setResource("rate limit config", docLine);
    detail::parseRateLimitDomain(c, doc, "", rl);
    out.resources.rateLimitDomains.push_back(std::move(rl));
    return;
  }
  if (h.kind.empty() || h.apiVersion.empty()) {
    c.error(doc, h.kind.empty() ? "kind" : "apiVersion", "is required");
    return;
  }
  if (h.kind == "ConfigMap" && h.apiVersion == "v1" && loadRateLimitConfigMap(c, doc, h, out)) return;
  if (h.kind.ends_with("List") && itemKind.empty() && itemApiVersion.empty()) {
    loadList(c, h, out);
    return;
  }
  const bool kubernetes = isKubernetesKind(h);
  const bool networking = isIstioNetworking(h.apiVersion);
  const bool known = networking && (h.kind == "VirtualService" || h.kind == "DestinationRule" ||
                                    h.kind == "Gateway" || h.kind == "ServiceEntry" || h.kind == "WorkloadEntry");
  const bool envoyFilter = h.kind == "EnvoyFilter" && h.apiVersion == "networking.istio.io/v1alpha3";
  if (!known && !envoyFilter && !kubernetes) {
    std::string name = scalarField(h.metadata, "name").value_or("");
    out.warnings.push_back(c.file() + ":" + std::to_string(docLine) + ": skipping unsupported resource " +
                           h.apiVersion + " " + h.kind + (name.empty() ? "" : " " + name));
    return;
  }

  // Name the resource before validating metadata so those errors carry it too.
  std::string rawName, rawNs = "default";
  if (auto v = scalarField(h.metadata, "name")) rawName = *v;
  if (auto v = scalarField(h.metadata, "namespace")) rawNs = *v;
  c.setResource(h.kind + " " + rawNs + "/" + rawName, docLine);
  ObjectMeta meta;
  if (!h.hasMetadata) {
    c.error(doc, "metadata", "is required");
  } else {
    parseMetadata(c, h.metadata, meta);
  }
  c.setNamespace(meta.namespace_);
  if (meta.name.empty() && h.hasMetadata) c.error(h.metadata, "metadata.name", "is required");
  if (kubernetes) {
    if (h.hasSpec && !h.spec.isNull() && !h.spec.isMap()) {
      c.error(h.spec, "spec", "must be a map");
      return;
    }
    loadKubernetesObject(c, doc, h, std::move(meta), out);
    return;
  }

  // Top-level keys are checked here, once the resource has a name for the message.
  forFields(c, doc, "", [&](const std::string& key, const Node&, const std::string&) {
    return key == "apiVersion" || key == "kind" || key == "metadata" || key == "spec" || key == "status";
  });

  // A missing spec validates like an empty one, so required fields are reported.
  static const yaml::NodeData kEmptyMap{yaml::Kind::Map};
  Node spec(&kEmptyMap);
  if (h.hasSpec && !h.spec.isNull()) {
    if (!h.spec.isMap()) {
      c.error(h.spec, "spec", "must be a map");
      return;
    }
    spec.reset(h.spec);
  }
  const SourceRef src{c.file(), docLine};

  if (h.kind == "VirtualService") {
    VirtualService vs;
    vs.metadata = std::move(meta);
    vs.source = src;
    detail::parseVirtualServiceSpec(c, spec, vs);
    out.resources.virtualServices.push_back(std::move(vs));
  } else if (h.kind == "DestinationRule") {
    DestinationRule dr;
    dr.metadata = std::move(meta);
    dr.source = src;
    detail::parseDestinationRuleSpec(c, spec, dr);
    out.resources.destinationRules.push_back(std::move(dr));
  } else if (h.kind == "Gateway") {
    Gateway gw;
    gw.metadata = std::move(meta);
    gw.source = src;
    detail::parseGatewaySpec(c, spec, gw);
    out.resources.gateways.push_back(std::move(gw));
  } else if (h.kind == "ServiceEntry") {
    ServiceEntry se;
    se.metadata = std::move(meta);
    se.source = src;
    detail::parseServiceEntrySpec(c, spec, se);
    out.resources.serviceEntries.push_back(std::move(se));
  } else if (h.kind == "WorkloadEntry") {
    WorkloadEntry we;
    we.metadata = std::move(meta);
    we.source = src;
    detail::parseWorkloadEntrySpec(c, spec, "spec", we);
    out.resources.workloadEntries.push_back(std::move(we));
  } else {
    EnvoyFilter ef;
    ef.metadata = std::move(meta);
    ef.source = src;
    detail::parseEnvoyFilterSpec(c, spec, "spec", ef);
    out.resources.envoyFilters.push_back(std::move(ef));
  }
}

// Per-kind counts, so duplicate checks can look only at what a call added.
struct Counts {
  size_t vs = 0, dr = 0, gw = 0, se = 0, we = 0, ef = 0, rl = 0, ksvc = 0, eps = 0, pod = 0;
};
Counts countsOf(const Resources& r) {
  return {r.virtualServices.size(), r.destinationRules.size(), r.gateways.size(), r.serviceEntries.size(),
          r.workloadEntries.size(), r.envoyFilters.size(),     r.rateLimitDomains.size(),
          r.kubeServices.size(),    r.endpointSlices.size(),   r.pods.size()};
}

// Reports resources at index >= from.<kind> whose kind/namespace/name was
// already taken (by an earlier resource, old or new).
void checkDuplicates(const Resources& r, const Counts& from, std::vector<ConfigError>& errors) {
  auto check = [&](const auto& list, size_t start, const char* kind) {
    std::unordered_map<std::string, const SourceRef*> seen;
    seen.reserve(list.size());
    for (size_t i = 0; i < list.size(); ++i) {
      const auto& res = list[i];
      std::string key = res.metadata.namespace_ + "/" + res.metadata.name;
      auto [it, inserted] = seen.emplace(key, &res.source);
      if (!inserted && i >= start) {
        errors.push_back(ConfigError{res.source.file, res.source.line, std::string(kind) + " " + key, "",
                                     "duplicate resource, also defined at " + it->second->file + ":" +
                                         std::to_string(it->second->line)});
      }
    }
  };
  check(r.virtualServices, from.vs, "VirtualService");
  check(r.destinationRules, from.dr, "DestinationRule");
  check(r.gateways, from.gw, "Gateway");
  check(r.serviceEntries, from.se, "ServiceEntry");
  check(r.workloadEntries, from.we, "WorkloadEntry");
  check(r.envoyFilters, from.ef, "EnvoyFilter");
  check(r.kubeServices, from.ksvc, "Service");
  check(r.endpointSlices, from.eps, "EndpointSlice");
  check(r.pods, from.pod, "Pod");
  // One configuration per rate limit domain, as the ratelimit service
  // requires (it would refuse to start).
  std::unordered_map<std::string, const SourceRef*> domains;
  for (size_t i = 0; i < r.rateLimitDomains.size(); ++i) {
    const RateLimitDomainConfig& d = r.rateLimitDomains[i];
    if (d.domain.empty()) continue;
    auto [it, inserted] = domains.emplace(d.domain, &d.source);
    if (!inserted && i >= from.rl) {
      errors.push_back(ConfigError{d.source.file, d.source.line, "rate limit config", "domain",
                                   "duplicate domain '" + d.domain + "', also configured at " + it->second->file +
                                       ":" + std::to_string(it->second->line)});
    }
  }
}

std::vector<ConfigError> loadYamlNoDuplicateCheck(std::string_view text, const std::string& file, LoadReport& out) {
  std::vector<ConfigError> errors;
  yaml::ParseResult parsed = yaml::parseAll(text);
  if (parsed.error) {
    errors.push_back(ConfigError{file, parsed.error->line, "", "", (parsed.error->syntax ? "YAML syntax error: " : "YAML error: ") + parsed.error->message});
    return errors;
  }
  Ctx c(file, errors, out.warnings);
  for (const auto& doc : parsed.documents) loadDocument(c, doc->root, out);
  return errors;
}

// YAML, or JSON (`kubectl get -o json`), which the YAML parser reads too.
bool hasConfigExtension(const std::string& name) {
  return name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json");
}

// Collects config files below `dir`. Every dot-prefixed entry is skipped: that
// covers the ConfigMap `..<timestamp>` dirs and the `..data` link (whose files
// are reached through the visible top-level symlinks) and editor temp files.
void walk(const std::string& dir, int depth, std::set<std::pair<dev_t, ino_t>>& visited,
          std::vector<std::string>& files, std::vector<ConfigError>& errors) {
  struct stat st{};
  if (::stat(dir.c_str(), &st) != 0) {
    errors.push_back(ConfigError{dir, 0, "", "", std::string("cannot read directory: ") + std::strerror(errno)});
    return;
  }
  if (!visited.insert({st.st_dev, st.st_ino}).second) return;  // symlink loop
  if (depth > 32) {
    errors.push_back(ConfigError{dir, 0, "", "", "directory nesting too deep"});
    return;
  }
  std::error_code ec;
  std::filesystem::directory_iterator it(dir, ec), end;
  if (ec) {
    errors.push_back(ConfigError{dir, 0, "", "", "cannot read directory: " + ec.message()});
    return;
  }
  std::vector<std::string> names;
  for (; it != end; it.increment(ec)) {
    if (ec) break;
    names.push_back(it->path().filename().string());
  }
  if (ec) {
    errors.push_back(ConfigError{dir, 0, "", "", "cannot read directory: " + ec.message()});
    return;
  }
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    if (name.starts_with(".")) continue;
    std::string path = dir + "/" + name;
    struct stat est{};
    if (::stat(path.c_str(), &est) != 0) {
      // A dangling symlink mid-swap; the watcher fires again when it settles.
      if (hasConfigExtension(name))
        errors.push_back(ConfigError{path, 0, "", "", std::string("cannot read file: ") + std::strerror(errno)});
      continue;
    }
    if (S_ISDIR(est.st_mode)) {
      walk(path, depth + 1, visited, files, errors);
    } else if (!hasConfigExtension(name)) {
      continue;
    } else if (!S_ISREG(est.st_mode)) {
      errors.push_back(ConfigError{path, 0, "", "", "not a regular file"});
    } else if (size_t(est.st_size) > kMaxConfigFileBytes) {
      errors.push_back(ConfigError{path, 0, "", "", "file is " + std::to_string(est.st_size) +
                                                        " bytes, over the limit of " +
                                                        std::to_string(kMaxConfigFileBytes)});
    } else {
      files.push_back(path);
    }
  }
}

// The whole file, unless it grew past the limit since walk() saw its size.
std::expected<std::string, std::string> readBounded(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::unexpected(std::string("cannot read file: ") + std::strerror(errno));
  std::string text;
  char chunk[65536];
  while (in.read(chunk, sizeof chunk) || in.gcount() > 0) {
    text.append(chunk, size_t(in.gcount()));
    if (text.size() > kMaxConfigFileBytes)
      return std::unexpected("file is over the limit of " + std::to_string(kMaxConfigFileBytes) + " bytes");
  }
  if (in.bad()) return std::unexpected(std::string("cannot read file: ") + std::strerror(errno));
  return text;
}

}  // namespace

std::vector<ConfigError> loadYaml(std::string_view text, const std::string& file, LoadReport& out) {
  const Counts before = countsOf(out.resources);
  std::vector<ConfigError> errors = loadYamlNoDuplicateCheck(text, file, out);
  checkDuplicates(out.resources, before, errors);
  return errors;
}

std::expected<LoadReport, std::vector<ConfigError>> loadDirectory(const std::string& dirIn) {
  std::string dir = dirIn;
  while (dir.size() > 1 && dir.ends_with('/')) dir.pop_back();
  std::vector<ConfigError> errors;
  std::vector<std::string> files;
  std::set<std::pair<dev_t, ino_t>> visited;
  walk(dir, 0, visited, files, errors);
  if (!errors.empty()) return std::unexpected(std::move(errors));
  std::sort(files.begin(), files.end());

  LoadReport report;
  for (const std::string& f : files) {
    auto text = readBounded(f);
    if (!text) {
      errors.push_back(ConfigError{f, 0, "", "", text.error()});
      continue;
    }
    auto errs = loadYamlNoDuplicateCheck(*text, f, report);
    errors.insert(errors.end(), std::make_move_iterator(errs.begin()), std::make_move_iterator(errs.end()));
    report.resources.files.push_back(f);
  }
  checkDuplicates(report.resources, Counts{}, errors);
  if (!errors.empty()) return std::unexpected(std::move(errors));
  return report;
}

namespace {

void append(Resources& to, const Resources& from) {
  auto add = [](auto& dst, const auto& src) { dst.insert(dst.end(), src.begin(), src.end()); };
  add(to.virtualServices, from.virtualServices);
  add(to.destinationRules, from.destinationRules);
  add(to.gateways, from.gateways);
  add(to.serviceEntries, from.serviceEntries);
  add(to.workloadEntries, from.workloadEntries);
  add(to.envoyFilters, from.envoyFilters);
  add(to.rateLimitDomains, from.rateLimitDomains);
  add(to.kubeServices, from.kubeServices);
  add(to.endpointSlices, from.endpointSlices);
  add(to.pods, from.pods);
}

// walk() names a config file in the errors that concern one file, and a
// directory in those that concern the whole tree.
bool isFileError(const ConfigError& e) { return hasConfigExtension(e.file); }

}  // namespace

std::expected<IsolatedLoad, std::vector<ConfigError>> loadDirectoryIsolated(const std::string& dirIn,
                                                                            const GoodFiles& lastGood) {
  std::string dir = dirIn;
  while (dir.size() > 1 && dir.ends_with('/')) dir.pop_back();
  std::vector<ConfigError> walkErrors;
  std::vector<std::string> files;
  std::set<std::pair<dev_t, ino_t>> visited;
  walk(dir, 0, visited, files, walkErrors);

  IsolatedLoad out;
  // Per file: its own errors (walk, read, YAML, validation, duplicates inside it).
  std::map<std::string, std::vector<ConfigError>> bad;
  for (ConfigError& e : walkErrors) {
    if (!isFileError(e)) return std::unexpected(std::move(walkErrors));
    bad[e.file].push_back(std::move(e));
  }
  std::map<std::string, std::shared_ptr<const FileResources>> good;
  for (const std::string& f : files) {
    auto text = readBounded(f);
    if (!text) {
      bad[f].push_back(ConfigError{f, 0, "", "", text.error()});
      continue;
    }
    const XXH128_hash_t hash = XXH3_128bits(text->data(), text->size());
    if (auto it = lastGood.find(f);
        it != lastGood.end() && it->second->hashLow == hash.low64 && it->second->hashHigh == hash.high64) {
      good[f] = it->second;  // unchanged since it last loaded
      continue;
    }
    LoadReport one;
    std::vector<ConfigError> errs = loadYamlNoDuplicateCheck(*text, f, one);
    checkDuplicates(one.resources, Counts{}, errs);
    if (!errs.empty()) {
      bad[f] = std::move(errs);
      continue;
    }
    auto fr = std::make_shared<FileResources>();
    fr->resources = std::move(one.resources);
    fr->resources.files = {f};
    fr->warnings = std::move(one.warnings);
    fr->hashLow = hash.low64;
    fr->hashHigh = hash.high64;
    good[f] = std::move(fr);
  }
  // What each file contributes: itself when good, else its last good version.
  std::map<std::string, std::shared_ptr<const FileResources>> contrib = good;
  for (const auto& [f, errs] : bad) {
    if (auto it = lastGood.find(f); it != lastGood.end()) contrib[f] = it->second;
  }
  // Across files a kind/namespace/name is defined once: the first file in
  // path order keeps it; a later file that repeats it falls back to its last
  // good version (if that does not repeat it too) or drops out. Each pass
  // removes or replaces at least one file, so this ends.
  for (size_t pass = 0; pass <= contrib.size() + 1; ++pass) {
    Resources merged;
    std::vector<std::string> order;
    for (const auto& [f, fr] : contrib) {
      append(merged, fr->resources);
      order.push_back(f);
    }
    std::vector<ConfigError> dups;
    checkDuplicates(merged, Counts{}, dups);
    if (dups.empty()) break;
    const std::string offender = dups.front().file;
    bad[offender].push_back(dups.front());
    auto last = lastGood.find(offender);
    if (contrib[offender] != (last == lastGood.end() ? nullptr : last->second) && last != lastGood.end()) {
      contrib[offender] = last->second;
    } else {
      contrib.erase(offender);
    }
  }
  for (const auto& [f, fr] : contrib) {
    append(out.report.resources, fr->resources);
    out.report.resources.files.push_back(f);
    out.report.warnings.insert(out.report.warnings.end(), fr->warnings.begin(), fr->warnings.end());
  }
  out.serving = std::move(contrib);
  for (auto& [f, errs] : bad) {
    (out.serving.count(f) ? out.heldBack : out.leftOut).push_back(f);
    out.errors.insert(out.errors.end(), std::make_move_iterator(errs.begin()), std::make_move_iterator(errs.end()));
  }
  return out;
}

}  // namespace sluice::config
