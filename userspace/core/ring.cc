#include "core/ring.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>

namespace sluice::core {

Ring::~Ring() {
  if (ready_) io_uring_queue_exit(&ring_);
}

std::expected<void, std::string> Ring::init(unsigned entries) {
  io_uring_params p{};
  p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_COOP_TASKRUN |
            IORING_SETUP_SUBMIT_ALL;
  p.flags |= IORING_SETUP_CQSIZE;
  p.cq_entries = entries * 4;
  int rc = io_uring_queue_init_params(entries, &ring_, &p);
  if (rc == -EINVAL) {
    // Older kernels: fall back to a plain ring.
    io_uring_params q{};
    q.flags = IORING_SETUP_CQSIZE;
    q.cq_entries = entries * 4;
    rc = io_uring_queue_init_params(entries, &ring_, &q);
  }
  if (rc < 0) return std::unexpected(std::string("io_uring_queue_init: ") + strerror(-rc));
  ready_ = true;
  return {};
}

io_uring_sqe* Ring::sqe() {
  io_uring_sqe* s = io_uring_get_sqe(&ring_);
  while (!s) {
    io_uring_submit(&ring_);
    s = io_uring_get_sqe(&ring_);
  }
  return s;
}

void Ring::submitAndWait(uint64_t timeoutNs) {
  __kernel_timespec ts{};
  ts.tv_sec = int64_t(timeoutNs / 1'000'000'000ull);
  ts.tv_nsec = int64_t(timeoutNs % 1'000'000'000ull);
  io_uring_cqe* cqe = nullptr;
  // -ETIME and -EINTR are normal here: the caller drains whatever is ready.
  io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
}

BufferRing::~BufferRing() {
  if (br_ && ring_) io_uring_unregister_buf_ring(ring_->raw(), group_);
  if (br_) munmap(br_, ringBytes_);
  delete[] base_;
}

std::expected<void, std::string> BufferRing::init(Ring& ring, uint16_t groupId, unsigned count,
                                                  unsigned size) {
  ring_ = &ring;
  group_ = groupId;
  count_ = count;
  size_ = size;
  ringBytes_ = count * sizeof(io_uring_buf);
  void* mem = mmap(nullptr, ringBytes_, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
  if (mem == MAP_FAILED) return std::unexpected(std::string("mmap buffer ring: ") + strerror(errno));
  br_ = static_cast<io_uring_buf_ring*>(mem);
  io_uring_buf_ring_init(br_);
  io_uring_buf_reg reg{};
  reg.ring_addr = reinterpret_cast<uint64_t>(br_);
  reg.ring_entries = count;
  reg.bgid = groupId;
  int rc = io_uring_register_buf_ring(ring.raw(), &reg, 0);
  if (rc < 0) {
    munmap(br_, ringBytes_);
    br_ = nullptr;
    return std::unexpected(std::string("io_uring_register_buf_ring: ") + strerror(-rc));
  }
  base_ = new char[size_t(count) * size];
  int mask = io_uring_buf_ring_mask(count);
  for (unsigned i = 0; i < count; ++i) {
    io_uring_buf_ring_add(br_, buffer(uint16_t(i)), size, uint16_t(i), mask, int(i));
  }
  io_uring_buf_ring_advance(br_, int(count));
  return {};
}

void BufferRing::recycle(uint16_t id) {
  io_uring_buf_ring_add(br_, buffer(id), size_, id, io_uring_buf_ring_mask(count_), 0);
  io_uring_buf_ring_advance(br_, 1);
}

}  // namespace sluice::core
