// Compile-time proof that the C++ view of include/sluice/maps.h is the layout
// the BPF programs were built with. If one of these fires, a field was
// reordered or resized in maps.h: fix maps.h, never this file alone.
#pragma once

#include <cstddef>

#include <sluice/maps.h>

namespace sluice::bpf::layout {

static_assert(SLUICE_CNT_MAX == 8, "counter enum changed: update userspace readers");
static_assert(sizeof(sluice_sockops_counter) == 4);

static_assert(sizeof(sluice_peer_key) == 8);
static_assert(offsetof(sluice_peer_key, addr) == 0);
static_assert(offsetof(sluice_peer_key, port) == 4);
static_assert(offsetof(sluice_peer_key, _pad) == 6);

static_assert(sizeof(sluice_peer_stats) == 24);
static_assert(offsetof(sluice_peer_stats, opened) == 0);
static_assert(offsetof(sluice_peer_stats, closed) == 8);
static_assert(offsetof(sluice_peer_stats, active) == 16);
static_assert(alignof(sluice_peer_stats) == 8);

}  // namespace sluice::bpf::layout
