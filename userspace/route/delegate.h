// Delegate VirtualServices (one level, as Istio supports them): a root
// route's `delegate` is replaced by the delegate's http routes, each with the
// root's match merged into its own and the root's actions filling in what
// the delegate leaves unset.
#pragma once

#include <string>
#include <vector>

#include "config/model.h"

namespace sluice::route {

// The routes that stand in for `root` (a route with `delegate` set) given
// the delegate VirtualService `delegate`. Delegate routes whose matches
// conflict with the root's (e.g. a uri outside the root's prefix) are
// dropped, each with a line in `warnings`.
std::vector<config::HTTPRoute> mergeDelegate(const config::HTTPRoute& root,
                                             const config::VirtualService& delegate,
                                             std::vector<std::string>& warnings);

}  // namespace sluice::route
