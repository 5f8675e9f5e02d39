// Ring hash and Maglev: stable, balanced, and minimal disruption when the
// endpoint set changes (the issue's "adding or removing one endpoint moves
// only about 1/N of the keys").
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "upstream/consistent_hash.h"

namespace sluice::upstream {
namespace {

std::vector<route::Endpoint> endpoints(size_t n, size_t first = 0) {
  std::vector<route::Endpoint> out(n);
  for (size_t i = 0; i < n; ++i) out[i].key = "127.0.0.1:" + std::to_string(9000 + first + i);
  return out;
}

constexpr int kKeys = 20000;

template <class Table>
std::vector<std::string> assign(const Table& t, const std::vector<route::Endpoint>& eps) {
  std::vector<std::string> out(kKeys);
  for (int k = 0; k < kKeys; ++k) {
    int i = t.pick(hashKey("user-" + std::to_string(k)));
    out[size_t(k)] = i < 0 ? "" : eps[size_t(i)].key;
  }
  return out;
}

template <class Build>
void checkDisruption(Build build, double tolerance) {
  auto five = endpoints(5);
  auto before = assign(build(five), five);
  // Balanced: each of 5 hosts near 20%.
  std::map<std::string, int> share;
  for (const auto& k : before) share[k]++;
  ASSERT_EQ(share.size(), 5u);
  for (const auto& [host, n] : share) {
    EXPECT_GT(n, kKeys * 10 / 100) << host;
    EXPECT_LT(n, kKeys * 30 / 100) << host;
  }
  // Remove the middle one: its keys move, about 1/5 of all; the others stay.
  auto four = five;
  four.erase(four.begin() + 2);
  auto after = assign(build(four), four);
  int moved = 0, movedOthers = 0;
  for (int k = 0; k < kKeys; ++k) {
    if (before[size_t(k)] == after[size_t(k)]) continue;
    ++moved;
    if (before[size_t(k)] != five[2].key) ++movedOthers;
  }
  EXPECT_NEAR(double(moved) / kKeys, 0.2, 0.08);
  EXPECT_LE(double(movedOthers) / kKeys, tolerance) << "keys of the hosts that stayed moved";
  // Add a sixth: about 1/6 move, all of them to the new host.
  auto six = endpoints(6);
  auto grown = assign(build(six), six);
  int toNew = 0, elsewhere = 0;
  for (int k = 0; k < kKeys; ++k) {
    if (before[size_t(k)] == grown[size_t(k)]) continue;
    (grown[size_t(k)] == six[5].key ? toNew : elsewhere)++;
  }
  EXPECT_NEAR(double(toNew) / kKeys, 1.0 / 6, 0.07);
  EXPECT_LE(double(elsewhere) / kKeys, tolerance);
}

TEST(ConsistentHash, RingMovesOnlyTheKeysOfTheChangedHost) {
  checkDisruption([](const auto& eps) { return HashRing::build(eps, 1024); }, 0.0);
}

TEST(ConsistentHash, MaglevMovesAboutOneNth) {
  // Maglev trades a little extra disruption for perfect balance.
  checkDisruption([](const auto& eps) { return MaglevTable::build(eps, 65537); }, 0.05);
}

TEST(ConsistentHash, SameKeySameHostAndExcludedHostsAreWalkedPast) {
  auto eps = endpoints(4);
  auto ring = HashRing::build(eps, 1024);
  auto maglev = MaglevTable::build(eps, 65537);
  for (int k = 0; k < 100; ++k) {
    uint64_t h = hashKey("k" + std::to_string(k));
    EXPECT_EQ(ring.pick(h), ring.pick(h));
    int r = ring.pick(h), m = maglev.pick(h);
    auto notR = [&](size_t i) { return int(i) == r; };
    auto notM = [&](size_t i) { return int(i) == m; };
    EXPECT_NE(ring.pick(h, notR), r);
    EXPECT_GE(ring.pick(h, notR), 0);
    EXPECT_NE(maglev.pick(h, notM), m);
    EXPECT_GE(maglev.pick(h, notM), 0);
  }
  auto all = [](size_t) { return true; };
  EXPECT_EQ(ring.pick(1, all), -1);
  EXPECT_EQ(maglev.pick(1, all), -1);
}

TEST(ConsistentHash, RingPointsFollowWeights) {
  auto eps = endpoints(2);
  eps[0].weight = 1;
  eps[1].weight = 3;
  auto ring = HashRing::build(eps, 4096);
  int heavy = 0;
  for (int k = 0; k < kKeys; ++k) heavy += ring.pick(hashKey("w" + std::to_string(k))) == 1;
  EXPECT_NEAR(double(heavy) / kKeys, 0.75, 0.07);
}

}  // namespace
}  // namespace sluice::upstream
