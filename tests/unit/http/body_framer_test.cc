#include <gtest/gtest.h>

#include <random>
#include <string>

#include "http/parser.h"

namespace sluice::http {
namespace {

Framing chunked() { return Framing{Framing::Kind::Chunked, 0}; }

struct Outcome {
  BodyFramer::Status status = BodyFramer::Status::NeedMore;
  size_t consumed = 0;  // total bytes that belonged to the body
  std::string payload;  // decoded data
};

// Feeds `input` in pieces whose sizes come from `nextSize`, stopping at Done
// or Error, as a proxy reading from a socket would.
template <class NextSize>
Outcome feed(Framing f, std::string_view input, NextSize nextSize) {
  BodyFramer framer(f);
  Outcome o;
  size_t off = 0;
  std::vector<std::string_view> views;
  for (size_t guard = 0; guard <= 4 * input.size() + 10; ++guard) {
    size_t n = std::min(nextSize(), input.size() - off);
    views.clear();
    BodyFramer::Step s = framer.consume(input.data() + off, n, &views);
    EXPECT_LE(s.consumed, n);
    for (auto v : views) o.payload.append(v);
    off += s.consumed;
    o.consumed = off;
    o.status = s.status;
    if (s.status != BodyFramer::Status::NeedMore || off == input.size()) break;
    EXPECT_EQ(s.consumed, n);  // NeedMore means every byte offered was taken
  }
  EXPECT_EQ(framer.payloadBytes(), o.payload.size());
  return o;
}

Outcome feedAll(Framing f, std::string_view input) {
  return feed(f, input, [&] { return input.size(); });
}

TEST(BodyFramer, NoneIsDoneImmediately) {
  BodyFramer b(Framing{});
  EXPECT_TRUE(b.done());
  auto s = b.consume("abc", 3);
  EXPECT_EQ(s.status, BodyFramer::Status::Done);
  EXPECT_EQ(s.consumed, 0u);
}

TEST(BodyFramer, ContentLengthCountsDown) {
  Framing f{Framing::Kind::ContentLength, 5};
  BodyFramer b(f);
  auto s = b.consume("hel", 3);
  EXPECT_EQ(s.status, BodyFramer::Status::NeedMore);
  EXPECT_EQ(s.consumed, 3u);
  s = b.consume("loGET", 5);
  EXPECT_EQ(s.status, BodyFramer::Status::Done);
  EXPECT_EQ(s.consumed, 2u);  // the next request's bytes are left alone
  EXPECT_EQ(b.payloadBytes(), 5u);
  EXPECT_TRUE(BodyFramer(Framing{Framing::Kind::ContentLength, 0}).done());

  BodyFramer truncated(f);
  truncated.consume("ab", 2);
  EXPECT_EQ(truncated.finish(), BodyFramer::Status::Error);
}

TEST(BodyFramer, UntilCloseNeverFinishesByItself) {
  BodyFramer b(Framing{Framing::Kind::UntilClose, 0});
  std::vector<std::string_view> v;
  auto s = b.consume("0\r\n\r\n", 5, &v);
  EXPECT_EQ(s.status, BodyFramer::Status::NeedMore);
  EXPECT_EQ(s.consumed, 5u);
  ASSERT_EQ(v.size(), 1u);
  EXPECT_FALSE(b.done());
  EXPECT_EQ(b.finish(), BodyFramer::Status::Done);
  EXPECT_TRUE(b.done());
}

TEST(BodyFramer, ChunkedBasic) {
  const std::string body = "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
  Outcome o = feedAll(chunked(), body + "NEXT");
  EXPECT_EQ(o.status, BodyFramer::Status::Done);
  EXPECT_EQ(o.consumed, body.size());
  EXPECT_EQ(o.payload, "hello world");
}

TEST(BodyFramer, ChunkedExtensionsAndTrailers) {
  const std::string body =
      "A;name=value;q=\"quoted ; str\"\r\n0123456789\r\n"
      "1F \t;x\r\n" "abcdefghijklmnopqrstuvwxyzABCDE\r\n"
      "0;last\r\nX-Checksum: abc\r\nX-Other:\t1 2\r\n\r\n";
  // "1F \t;x" has whitespace after the size: refused, see ChunkedRejects.
  Outcome bad = feedAll(chunked(), body);
  EXPECT_EQ(bad.status, BodyFramer::Status::Error);

  const std::string good =
      "A;name=value;q=\"quoted ; str\"\r\n0123456789\r\n"
      "1f;x\r\nabcdefghijklmnopqrstuvwxyzABCDE\r\n"
      "0;last\r\nX-Checksum: abc\r\nX-Other:\t1 2\r\n\r\n";
  Outcome o = feedAll(chunked(), good);
  EXPECT_EQ(o.status, BodyFramer::Status::Done);
  EXPECT_EQ(o.consumed, good.size());
  EXPECT_EQ(o.payload, "0123456789abcdefghijklmnopqrstuvwxyzABCDE");
}

TEST(BodyFramer, ChunkedAnySplit) {
  const std::string body =
      "3;e=1\r\nabc\r\n10\r\n0123456789abcdef\r\n1\r\nZ\r\n0\r\nT: v\r\n\r\n";
  const std::string expect = "abc0123456789abcdefZ";
  Outcome one = feed(chunked(), body + "tail", [] { return size_t{1}; });
  EXPECT_EQ(one.status, BodyFramer::Status::Done);
  EXPECT_EQ(one.consumed, body.size());
  EXPECT_EQ(one.payload, expect);

  // Every two-piece split.
  for (size_t cut = 0; cut <= body.size(); ++cut) {
    bool first = true;
    Outcome o = feed(chunked(), body, [&] {
      size_t n = first ? cut : body.size();
      first = false;
      return n;
    });
    EXPECT_EQ(o.status, BodyFramer::Status::Done) << cut;
    EXPECT_EQ(o.payload, expect) << cut;
  }

  std::mt19937 rng(12345);
  for (int trial = 0; trial < 500; ++trial) {
    Outcome o = feed(chunked(), body, [&] { return size_t(rng() % 7); });
    ASSERT_EQ(o.status, BodyFramer::Status::Done) << trial;
    ASSERT_EQ(o.consumed, body.size());
    ASSERT_EQ(o.payload, expect);
  }
}

TEST(BodyFramer, ChunkedRejects) {
  for (std::string s : {
           std::string("x\r\n"),                      // not hex
           std::string("\r\n"),                       // no digits
           std::string(";ext\r\n"),                   // extension without size
           std::string("-1\r\n"),                     // sign
           std::string("5 \r\nhello\r\n0\r\n\r\n"),   // whitespace after size
           std::string("5\nhello\r\n0\r\n\r\n"),      // bare LF after size
           std::string("5\r\nhelloX\r\n0\r\n\r\n"),   // data longer than the size
           std::string("5\r\nhello\n0\r\n\r\n"),      // bare LF after data
           std::string("5\r\nhello\r\r\n"),           // bare CR
           std::string("11111111111111111\r\n"),      // 17 hex digits
           std::string("00000000000000000\r\n"),      // 17 digits even if zero
           std::string("0\r\n folded: x\r\n\r\n"),    // trailer obs-fold
           std::string("0\r\nBad Name: x\r\n\r\n"),   // trailer name with space
           std::string("0\r\nT: a\nb\r\n\r\n"),       // bare LF in trailer
           std::string("0\r\nT: a\r\n\r\r"),          // bare CR at the end
           std::string("1;a\nb\r\nx\r\n0\r\n\r\n"),   // LF inside an extension
       }) {
    Outcome o = feedAll(chunked(), s);
    EXPECT_EQ(o.status, BodyFramer::Status::Error) << s;
    Outcome slow = feed(chunked(), s, [] { return size_t{1}; });
    EXPECT_EQ(slow.status, BodyFramer::Status::Error) << "byte at a time: " << s;
  }
  // 16 hex digits are the limit, not an error.
  Outcome big = feedAll(chunked(), "ffffffffffffffff\r\nabc");
  EXPECT_EQ(big.status, BodyFramer::Status::NeedMore);
  EXPECT_EQ(big.payload, "abc");
}

TEST(BodyFramer, ChunkedLineAndTrailerBounds) {
  std::string ext = "1;" + std::string(4000, 'e') + "\r\nx\r\n0\r\n\r\n";
  EXPECT_EQ(feedAll(chunked(), ext).status, BodyFramer::Status::Done);
  std::string longExt = "1;" + std::string(5000, 'e') + "\r\nx\r\n0\r\n\r\n";
  EXPECT_EQ(feedAll(chunked(), longExt).status, BodyFramer::Status::Error);

  std::string trailers = "0\r\n";
  for (int i = 0; i < 80; ++i) trailers += "X-T" + std::to_string(i) + ": " + std::string(100, 'v') + "\r\n";
  trailers += "\r\n";
  ASSERT_GT(trailers.size(), 8u * 1024);
  EXPECT_EQ(feedAll(chunked(), trailers).status, BodyFramer::Status::Error);
  std::string fewTrailers = "0\r\nA: 1\r\nB: 2\r\n\r\n";
  EXPECT_EQ(feedAll(chunked(), fewTrailers).status, BodyFramer::Status::Done);
}

TEST(BodyFramer, ErrorIsSticky) {
  BodyFramer b(chunked());
  EXPECT_EQ(b.consume("zz", 2).status, BodyFramer::Status::Error);
  EXPECT_EQ(b.consume("0\r\n\r\n", 5).status, BodyFramer::Status::Error);
  EXPECT_EQ(b.finish(), BodyFramer::Status::Error);
  b.reset(chunked());
  EXPECT_EQ(b.consume("0\r\n\r\n", 5).status, BodyFramer::Status::Done);
}

}  // namespace
}  // namespace sluice::http
