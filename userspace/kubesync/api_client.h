// A small blocking client for the Kubernetes API server: one GET per
// connection, over plain TCP (`kubectl proxy`, tests) or TLS (in-cluster,
// the server verified against the service account's CA, the bearer token
// re-read for every request because bound tokens rotate). The body is handed
// on as it arrives, so a watch streams for as long as the server keeps it
// open.
#pragma once

#include <openssl/ssl.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <expected>
#include <functional>
#include <string>
#include <string_view>

namespace sluice::kubesync {

struct ApiServer {
  bool tls = false;
  std::string host;  // a name or an IP literal (in-cluster: an IP)
  uint16_t port = 0;
  std::string tokenFile;  // empty: no Authorization header
  std::string caFile;     // TLS: the CA bundle the server's certificate must chain to

  // "http://127.0.0.1:8001" or "https://10.96.0.1:443" (no path).
  static std::expected<ApiServer, std::string> parse(std::string_view url);
  // The pod's own view: KUBERNETES_SERVICE_HOST/PORT and the service
  // account's token and CA under /var/run/secrets/kubernetes.io/serviceaccount.
  static std::expected<ApiServer, std::string> inCluster();
  std::string url() const;
};

class ApiClient {
 public:
  explicit ApiClient(ApiServer server);
  ~ApiClient();
  ApiClient(const ApiClient&) = delete;
  ApiClient& operator=(const ApiClient&) = delete;

  // Whether the client could be set up (the CA file loaded).
  const std::string& setupError() const { return setupError_; }
  const ApiServer& server() const { return server_; }

  struct Result {
    int status = 0;     // HTTP status; 0 when the transport failed
    std::string error;  // transport or protocol error (empty with a status)
    bool stopped = false;
  };
  // GETs `pathAndQuery` and hands each decoded body piece, with the
  // response's status, to `onData` (false from it ends the request). Ends
  // with the body, an error, `stop` (looked at every 250 ms), or `idle`
  // without a byte from the server.
  using OnData = std::function<bool(int status, std::string_view data)>;
  Result get(const std::string& pathAndQuery, const OnData& onData, const std::atomic<bool>& stop,
             std::chrono::milliseconds idle);

 private:
  ApiServer server_;
  SSL_CTX* ctx_ = nullptr;
  std::string setupError_;
};

// Splits a byte stream into '\n'-terminated lines (a watch sends one JSON
// event per line); a line longer than `maxLine` is an error.
class LineSplitter {
 public:
  explicit LineSplitter(size_t maxLine) : maxLine_(maxLine) {}
  // Calls onLine for every complete line in `data`; false if a line is too long.
  bool feed(std::string_view data, const std::function<void(std::string_view)>& onLine);
  // What remains after the stream ended (a last line without '\n').
  const std::string& rest() const { return buf_; }

 private:
  size_t maxLine_;
  std::string buf_;
};

}  // namespace sluice::kubesync
