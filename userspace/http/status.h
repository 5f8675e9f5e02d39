// Standard reason phrases, for status lines the proxy and the test server
// write themselves.
#pragma once

#include <string_view>

namespace sluice::http {

// "Not Found" for 404; "Unknown" for codes without a registered phrase.
std::string_view reasonPhrase(int status);

}  // namespace sluice::http
