// Body framing. The chunked decoder is a byte-at-a-time state machine for the
// size lines and trailers (short) and takes chunk data in one step (the bulk),
// so input split at any byte boundary gives the same result as one buffer.
#include <algorithm>

#include "http/chars.h"
#include "http/parser.h"

namespace sluice::http {

namespace {
// A size line is a few hex digits; extensions are ignored but bounded so a
// peer cannot keep us reading one line forever.
constexpr size_t kMaxChunkLineBytes = 4 * 1024;
constexpr size_t kMaxTrailerBytes = 8 * 1024;
constexpr int kMaxSizeDigits = 16;  // 16 hex digits fill a uint64_t exactly
}  // namespace

BodyFramer::BodyFramer(Framing f) { reset(f); }

void BodyFramer::reset(Framing f) {
  framing_ = f;
  remaining_ = 0;
  payloadBytes_ = 0;
  lineBytes_ = 0;
  sizeDigits_ = 0;
  switch (f.kind) {
    case Framing::Kind::None:
      state_ = State::Done;
      break;
    case Framing::Kind::ContentLength:
      remaining_ = f.length;
      state_ = f.length == 0 ? State::Done : State::Length;
      break;
    case Framing::Kind::Chunked:
      state_ = State::ChunkSize;
      break;
    case Framing::Kind::UntilClose:
      state_ = State::Close;
      break;
  }
}

BodyFramer::Status BodyFramer::finish() {
  if (state_ == State::Close) state_ = State::Done;
  if (state_ == State::Done) return Status::Done;
  state_ = State::Failed;
  return Status::Error;
}

BodyFramer::Step BodyFramer::consume(const char* data, size_t len,
                                     std::vector<std::string_view>* payload) {
  Step step;
  switch (state_) {
    case State::Done:
      step.status = Status::Done;
      return step;
    case State::Failed:
      step.status = Status::Error;
      return step;
    case State::Length: {
      size_t n = static_cast<size_t>(std::min<uint64_t>(remaining_, len));
      if (n > 0 && payload != nullptr) payload->emplace_back(data, n);
      remaining_ -= n;
      payloadBytes_ += n;
      step.consumed = n;
      if (remaining_ == 0) {
        state_ = State::Done;
        step.status = Status::Done;
      }
      return step;
    }
    case State::Close:
      if (len > 0 && payload != nullptr) payload->emplace_back(data, len);
      payloadBytes_ += len;
      step.consumed = len;
      return step;
    default:
      return consumeChunked(data, len, payload);
  }
}

BodyFramer::Step BodyFramer::consumeChunked(const char* data, size_t len,
                                            std::vector<std::string_view>* payload) {
  const char* p = data;
  const char* const end = data + len;
  auto fail = [&] {
    state_ = State::Failed;
    return Step{static_cast<size_t>(p - data), Status::Error};
  };
  // Trailer bytes share one budget across all trailer lines.
  auto countTrailer = [&] { return ++lineBytes_ <= kMaxTrailerBytes; };

  while (p < end) {
    char c = *p;
    switch (state_) {
      case State::ChunkSize: {
        if (++lineBytes_ > kMaxChunkLineBytes) return fail();
        int h = detail::hexValue(c);
        if (h >= 0) {
          if (sizeDigits_ == kMaxSizeDigits) return fail();
          remaining_ = (remaining_ << 4) | static_cast<uint64_t>(h);
          ++sizeDigits_;
        } else if (sizeDigits_ == 0) {
          return fail();
        } else if (c == ';') {
          state_ = State::ChunkExt;
        } else if (c == '\r') {
          state_ = State::ChunkSizeLf;
        } else {
          // Whitespace after the size is refused too: parsers disagree on it.
          return fail();
        }
        ++p;
        break;
      }
      case State::ChunkExt:
        if (++lineBytes_ > kMaxChunkLineBytes) return fail();
        if (c == '\r') {
          state_ = State::ChunkSizeLf;
        } else if (detail::isFieldValueStop(static_cast<unsigned char>(c))) {
          return fail();
        }
        ++p;
        break;
      case State::ChunkSizeLf:
        if (c != '\n') return fail();
        ++p;
        lineBytes_ = 0;
        sizeDigits_ = 0;
        state_ = remaining_ == 0 ? State::TrailerStart : State::ChunkData;
        break;
      case State::ChunkData: {
        size_t n = static_cast<size_t>(std::min<uint64_t>(remaining_, static_cast<uint64_t>(end - p)));
        if (payload != nullptr) payload->emplace_back(p, n);
        p += n;
        remaining_ -= n;
        payloadBytes_ += n;
        if (remaining_ == 0) state_ = State::ChunkDataCr;
        break;
      }
      case State::ChunkDataCr:
        if (c != '\r') return fail();
        ++p;
        state_ = State::ChunkDataLf;
        break;
      case State::ChunkDataLf:
        if (c != '\n') return fail();
        ++p;
        state_ = State::ChunkSize;
        break;
      case State::TrailerStart:
        if (!countTrailer()) return fail();
        if (c == '\r') {
          state_ = State::FinalLf;
        } else if (detail::isTchar(c)) {
          state_ = State::TrailerName;  // no obs-fold, no leading whitespace
        } else {
          return fail();
        }
        ++p;
        break;
      case State::TrailerName:
        if (!countTrailer()) return fail();
        if (c == ':') {
          state_ = State::TrailerLine;
        } else if (!detail::isTchar(c)) {
          return fail();
        }
        ++p;
        break;
      case State::TrailerLine:
        if (!countTrailer()) return fail();
        if (c == '\r') {
          state_ = State::TrailerLf;
        } else if (detail::isFieldValueStop(static_cast<unsigned char>(c))) {
          return fail();
        }
        ++p;
        break;
      case State::TrailerLf:
        if (!countTrailer() || c != '\n') return fail();
        ++p;
        state_ = State::TrailerStart;
        break;
      case State::FinalLf:
        if (c != '\n') return fail();
        ++p;
        state_ = State::Done;
        return Step{static_cast<size_t>(p - data), Status::Done};
      default:
        return fail();
    }
  }
  return Step{len, Status::NeedMore};
}

}  // namespace sluice::http
