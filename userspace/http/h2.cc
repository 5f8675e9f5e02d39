#include "http/h2.h"

#include <charconv>
#include <iterator>
#include <optional>

namespace sluice::http {

nghttp2_session* newH2ServerSession(const nghttp2_session_callbacks* callbacks, void* user) {
  nghttp2_option* opt = nullptr;
  if (nghttp2_option_new(&opt) != 0) return nullptr;
  // Windows open as the data is passed on, not as it arrives.
  nghttp2_option_set_no_auto_window_update(opt, 1);
  // Floods: SETTINGS/PING replies piling up, SETTINGS frames with many
  // entries, header blocks in many CONTINUATION frames, resets faster than
  // nghttp2's token bucket allows.
  nghttp2_option_set_max_outbound_ack(opt, 1000);
  nghttp2_option_set_max_settings(opt, 32);
  nghttp2_option_set_max_continuations(opt, 8);
  nghttp2_option_set_stream_reset_rate_limit(opt, 1000, 33);
  nghttp2_option_set_max_deflate_dynamic_table_size(opt, 4096);
  nghttp2_session* session = nullptr;
  const int rv = nghttp2_session_server_new2(&session, callbacks, user, opt);
  nghttp2_option_del(opt);
  if (rv != 0) return nullptr;
  const nghttp2_settings_entry settings[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, kH2MaxConcurrentStreams},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, kH2StreamWindow},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, kH2MaxHeaderList},
      {NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, 4096},
  };
  nghttp2_submit_settings(session, NGHTTP2_FLAG_NONE, settings, std::size(settings));
  nghttp2_session_set_local_window_size(session, NGHTTP2_FLAG_NONE, 0, kH2ConnectionWindow);
  return session;
}

bool H2RequestHead::add(std::string_view name, std::string_view value) {
  if (overflow_) return false;
  // Counted as HTTP/1.1 counts a head: names, values and their separators.
  if (bytes_.size() + name.size() + value.size() + 4 > limits_.maxHeadBytes ||
      fields_.size() >= limits_.maxHeaders + 4) {  // + the pseudo-header fields
    overflow_ = true;
    release();
    return false;
  }
  fields_.push_back({uint32_t(bytes_.size()), uint32_t(name.size()), uint32_t(bytes_.size() + name.size()),
                     uint32_t(value.size())});
  bytes_.append(name).append(value);
  return true;
}

void H2RequestHead::release() {
  std::string().swap(bytes_);
  std::vector<FieldPos>().swap(fields_);
}

bool H2RequestHead::build(bool endStream, RequestHead& head) {
  // Joined before any view into the bytes is made (the append may move them).
  std::string cookie;
  size_t cookies = 0;
  for (const FieldPos& f : fields_) {
    if (std::string_view(bytes_).substr(f.name, f.nameLen) != "cookie") continue;
    if (cookies++) cookie += "; ";
    cookie.append(bytes_, f.value, f.valueLen);
  }
  uint32_t cookieAt = 0;
  if (cookies > 1) {
    cookieAt = uint32_t(bytes_.size());
    bytes_ += cookie;
  }
  const std::string_view bytes = bytes_;
  std::string_view method, path, authority, host;
  std::optional<uint64_t> contentLength;
  bool cookieAdded = false;
  head = RequestHead{};
  head.headers.reserve(fields_.size() + 1);
  head.headers.push_back({});  // Host goes first, filled below
  for (const FieldPos& f : fields_) {
    const std::string_view name = bytes.substr(f.name, f.nameLen);
    const std::string_view value = bytes.substr(f.value, f.valueLen);
    if (name.starts_with(':')) {
      if (name == ":method") method = value;
      if (name == ":path") path = value;
      if (name == ":authority") authority = value;
      continue;
    }
    if (name == "host") {
      host = value;
      continue;
    }
    if (name == "content-length") {
      uint64_t n = 0;
      auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
      if (value.empty() || ec != std::errc() || end != value.data() + value.size()) return false;
      contentLength = n;
    }
    if (name == "cookie" && cookies > 1) {
      if (cookieAdded) continue;
      cookieAdded = true;
      head.headers.push_back({name, bytes.substr(cookieAt, cookie.size())});
      continue;
    }
    if (name == "expect" && iequals(value, "100-continue")) head.expectContinue = true;
    head.headers.push_back({name, value});
  }
  // :authority stands for Host; a host field is used only without it.
  if (authority.empty()) authority = host;
  if (method.empty() || (path.empty() && method != "CONNECT") || authority.empty()) return false;
  head.headers.front() = Header{"host", authority};
  head.method = method;
  head.target = path.empty() ? authority : path;
  head.host = authority;
  head.versionMinor = 1;
  head.keepAlive = true;
  head.headBytes = bytes_.size();
  if (endStream) {
    head.framing = {};
  } else if (contentLength) {
    head.framing = {Framing::Kind::ContentLength, *contentLength};
  } else {
    head.framing = {Framing::Kind::Chunked, 0};
  }
  return true;
}

bool H2RequestFields::build(std::string_view head, std::string_view scheme, bool teTrailers) {
  Limits limits;
  limits.maxHeadBytes = head.size() + 1;
  limits.maxHeaders = 100000;
  ParseError err;
  parsed_.headers.clear();
  if (parseRequestHead(head.data(), head.size(), limits, parsed_, err) != ParseStatus::Complete) return false;
  names_.clear();
  size_t total = 0;
  for (const Header& h : parsed_.headers) total += h.name.size();
  names_.reserve(total);  // no reallocation: the fields point into it
  nva_.clear();
  nva_.push_back(h2Field(":method", parsed_.method));
  nva_.push_back(h2Field(":scheme", scheme));
  nva_.push_back(h2Field(":authority", parsed_.host));
  nva_.push_back(h2Field(":path", parsed_.target));
  for (const Header& h : parsed_.headers) {
    const size_t at = names_.size();
    for (char c : h.name) names_.push_back(c >= 'A' && c <= 'Z' ? char(c + 32) : c);
    const std::string_view name = std::string_view(names_).substr(at, h.name.size());
    if (name == "host" || name == "connection" || name == "keep-alive" || name == "proxy-connection" ||
        name == "transfer-encoding" || name == "upgrade" || name == "te")
      continue;
    nva_.push_back(h2Field(name, h.value));
  }
  if (teTrailers) nva_.push_back(h2Field("te", "trailers"));
  return true;
}

}  // namespace sluice::http
