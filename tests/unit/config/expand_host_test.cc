#include <gtest/gtest.h>

#include "config/loader.h"

namespace sluice::config {
namespace {

TEST(ExpandHost, ShortNameGetsNamespaceAndClusterSuffix) {
  EXPECT_EQ(expandHost("reviews", "default"), "reviews.default.svc.cluster.local");
  EXPECT_EQ(expandHost("ratings", "prod"), "ratings.prod.svc.cluster.local");
  EXPECT_EQ(expandHost("Reviews", "default"), "reviews.default.svc.cluster.local");
}

TEST(ExpandHost, DottedAndWildcardNamesKeptLowerCased) {
  EXPECT_EQ(expandHost("reviews.other", "default"), "reviews.other");
  EXPECT_EQ(expandHost("API.Example.com", "default"), "api.example.com");
  EXPECT_EQ(expandHost("*.example.com", "default"), "*.example.com");
  EXPECT_EQ(expandHost("*", "default"), "*");
  EXPECT_EQ(expandHost("reviews.default.svc.cluster.local", "x"), "reviews.default.svc.cluster.local");
}

}  // namespace
}  // namespace sluice::config
