// RAII io_uring and its provided-buffer ring; the one place io_uring's
// negative-errno convention is turned into values the rest of the engine uses.
#pragma once

#include <liburing.h>

#include <cstdint>
#include <expected>
#include <string>

namespace sluice::core {

// Every submission carries a pointer to one of these in user_data; the
// completion is handed back to its owner. Owners outlive their in-flight ops.
class CompletionHandler {
 public:
  virtual void onCompletion(uint8_t op, int32_t res, uint32_t flags) = 0;

 protected:
  ~CompletionHandler() = default;
};

struct IoOp {
  CompletionHandler* owner = nullptr;
  uint8_t kind = 0;
};

class Ring {
 public:
  Ring() = default;
  ~Ring();
  Ring(const Ring&) = delete;
  Ring& operator=(const Ring&) = delete;

  // Sets up a ring for use by the calling thread only (SINGLE_ISSUER,
  // DEFER_TASKRUN where the kernel has them).
  std::expected<void, std::string> init(unsigned entries);
  // Never returns null: submits to make room when the SQ is full.
  io_uring_sqe* sqe();
  io_uring_sqe* sqeFor(IoOp& op) {
    io_uring_sqe* s = sqe();
    io_uring_sqe_set_data(s, &op);
    return s;
  }
  // Submits and waits for at least one completion or the timeout.
  void submitAndWait(uint64_t timeoutNs);
  // Calls fn(IoOp*, res, flags) for every ready completion.
  template <class Fn>
  unsigned drain(Fn&& fn) {
    io_uring_cqe* cqe;
    unsigned head, n = 0;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      ++n;
      fn(static_cast<IoOp*>(io_uring_cqe_get_data(cqe)), cqe->res, cqe->flags);
    }
    io_uring_cq_advance(&ring_, n);
    return n;
  }
  io_uring* raw() { return &ring_; }

 private:
  io_uring ring_{};
  bool ready_ = false;
};

// A ring of equally sized buffers the kernel picks from for multishot recv.
class BufferRing {
 public:
  BufferRing() = default;
  ~BufferRing();
  BufferRing(const BufferRing&) = delete;
  BufferRing& operator=(const BufferRing&) = delete;

  std::expected<void, std::string> init(Ring& ring, uint16_t groupId, unsigned count, unsigned size);
  char* buffer(uint16_t id) { return base_ + size_t(id) * size_; }
  // Hands a buffer back to the kernel once its bytes have been copied out.
  void recycle(uint16_t id);
  uint16_t groupId() const { return group_; }
  unsigned bufferSize() const { return size_; }

 private:
  Ring* ring_ = nullptr;
  io_uring_buf_ring* br_ = nullptr;
  char* base_ = nullptr;
  size_t ringBytes_ = 0;
  unsigned count_ = 0;
  unsigned size_ = 0;
  uint16_t group_ = 0;
};

}  // namespace sluice::core
